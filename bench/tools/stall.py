"""Stalled and slow clients against a server, and what everyone else gets meanwhile.

One client holds many connections that cost the server nothing to serve but everything to wait on:
ones that send nothing, ones that trickle header lines (slowloris), and ones that send headers and
then trickle the body, each reopened as soon as the server closes it. Another client meanwhile
POSTs one sentence to ``/embed`` every ``interval`` seconds (``timeout`` each); the answer is what
that probe got. ``tests/integration/test_edge.py`` runs it against a real server
(docs/how-it-works.md has its numbers)::

    python -m bench.tools.stall --url http://127.0.0.1:8000 --idle 1000 --slow-headers 200 \\
        --slow-bodies 200 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import requests

from embedder.edge.worker import raise_open_files_limit

KINDS = ("idle", "slow_headers", "slow_bodies")


class Attack:
    """``counts[kind]`` connections of each kind, held (reopened when closed) until stopped."""

    def __init__(self, host: str, port: int, counts: dict[str, int], trickle: float = 1.0):
        self.host, self.port, self.counts, self.trickle = host, port, counts, trickle
        self.opened = Counter()
        self.closed_by_server = Counter()
        self.failed_to_open = Counter()
        self.open_now = Counter()
        self.open_samples: list[int] = []
        self._stop: asyncio.Event | None = None

    async def _hold(self, kind: str) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.failed_to_open[kind] += 1
                await asyncio.sleep(0.1)
                continue
            self.opened[kind] += 1
            self.open_now[kind] += 1
            try:
                if kind == "slow_headers":
                    writer.write(b"POST /embed HTTP/1.1\r\nHost: attacker\r\n")
                elif kind == "slow_bodies":
                    writer.write(b"POST /embed HTTP/1.1\r\nHost: attacker\r\nContent-Type: application/json"
                                 b"\r\nContent-Length: 1000000\r\n\r\n{")
                line = 0
                while not self._stop.is_set():
                    try:  # the server closing the connection shows up as end-of-file here
                        if await asyncio.wait_for(reader.read(65536), self.trickle) == b"":
                            self.closed_by_server[kind] += 1
                            break
                    except TimeoutError:
                        pass
                    line += 1
                    if kind == "slow_headers":
                        writer.write(b"X-Trickle-%d: x\r\n" % line)
                    elif kind == "slow_bodies":
                        writer.write(b" ")
                    await writer.drain()
            except OSError:
                self.closed_by_server[kind] += 1
            finally:
                self.open_now[kind] -= 1
                writer.close()

    async def _sample(self) -> None:
        while not self._stop.is_set():
            self.open_samples.append(sum(self.open_now.values()))
            try:
                await asyncio.wait_for(self._stop.wait(), 1.0)
            except TimeoutError:
                pass

    async def run(self, seconds: float) -> None:
        self._stop = asyncio.Event()
        tasks = [asyncio.create_task(self._hold(kind)) for kind in KINDS for _ in range(self.counts[kind])]
        tasks.append(asyncio.create_task(self._sample()))
        await asyncio.sleep(seconds)
        self._stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    def report(self) -> dict:
        held = self.open_samples[1:] or self.open_samples  # the first sample is taken while opening
        return {"connections": dict(self.counts), "opened": dict(self.opened),
                "closed_by_server": dict(self.closed_by_server),
                "failed_to_open": dict(self.failed_to_open),
                "open_min": min(held, default=0), "open_max": max(held, default=0)}


def probe(url: str, stop: threading.Event, interval: float, timeout: float) -> list[tuple[int, float]]:
    """POST one sentence every ``interval`` s until stopped: (status or 0 on error, seconds) each."""
    results = []
    session = requests.Session()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            status = session.post(url + "/embed", json={"inputs": "a probe from another client"},
                                  timeout=timeout).status_code
        except requests.RequestException:
            status = 0
            session = requests.Session()
        results.append((status, time.perf_counter() - started))
        stop.wait(max(0.0, interval - (time.perf_counter() - started)))
    return results


def run(url: str, idle: int, slow_headers: int, slow_bodies: int, seconds: float,
        interval: float = 0.25, timeout: float = 5.0, settle: float = 2.0) -> dict:
    """Hold the attack for ``seconds``, probing from ``settle`` s in (once the connections are open)."""
    raise_open_files_limit(idle + slow_headers + slow_bodies + 256)
    parts = urlsplit(url)
    attack = Attack(parts.hostname, parts.port or 80,
                    {"idle": idle, "slow_headers": slow_headers, "slow_bodies": slow_bodies})
    thread = threading.Thread(target=asyncio.run, args=(attack.run(seconds),), daemon=True)
    thread.start()
    time.sleep(settle)
    stop = threading.Event()
    timer = threading.Timer(seconds - settle, stop.set)
    timer.start()
    results = probe(url, stop, interval, timeout)
    thread.join(seconds + 30)
    latencies = sorted(t for _, t in results)
    return {"url": url, "seconds": seconds, "attack": attack.report(),
            "probes": len(results), "statuses": dict(Counter(s for s, _ in results)),
            "ok": sum(s == 200 for s, _ in results),
            "p50_s": _quantile(latencies, 0.5), "p95_s": _quantile(latencies, 0.95),
            "max_s": latencies[-1] if latencies else None}


def _quantile(ordered: list[float], q: float) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4) if ordered else None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.stall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--slow-headers", type=int, default=200)
    parser.add_argument("--slow-bodies", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    print(json.dumps(run(args.url, args.idle, args.slow_headers, args.slow_bodies, args.seconds), indent=2))


if __name__ == "__main__":
    main()
