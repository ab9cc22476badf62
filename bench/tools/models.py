"""Several models in one server: what a second model (a reranker) costs in memory, what one model's
load does to the other's latency, what the rerank workload reaches beside its in-process limit, and
how two models share the cores under a mixed load.

    python -m bench.tools.models [--duration S] [--rounds N] [--memory-workers 1,2,4] [--workers W]
                                 [--sections memory,limit,latency,rerank,mixed] [--quick]
                                 [--out-dir DIR] [--name LABEL]

The reranker is bench/harness/reranker.py's random-weight CrossEncoder of
cross-encoder/ms-marco-MiniLM-L6-v2's shape (no real reranker weights can be had here): its scores
are meaningless, its time and memory a real MiniLM-L6 cross-encoder's. The embedding model is the
bundled all-MiniLM-L6-v2. Both are served by the onnx backend (the default), EMBEDDER_THREADS=1;
every server listens on 127.0.0.1 only.

1. **memory** (``--memory-workers``): for each worker count, a server of the embedding model alone
   (``EMBEDDER_MODELS="minilm="``) and one of it and the reranker (``"minilm=,reranker=DIR"``),
   each warmed up by short wrk bursts of its models' workloads; then the total PSS of the master
   and its workers (bench/harness/procstats.py), beside the reranker's weight files.
2. **limit**: the reranker's in-process limit, as bench/tools/ceiling.py measures embeddings: the
   rerank workload's pairs sorted by length into batches of 32, run through embedder's own backend
   (``create_backend``, ``pair_ids``) in forked processes, one per core, 1 thread each, pairs/s.
3. One server of both models with ``--workers`` workers, run ``--rounds`` times (each round in the
   reverse order of the last):
   - **latency**: single requests, one at a time, of one model (a rerank of ``--probe-docs`` STS-B
     documents, or an /embed of one sentence) with no load, then while wrk saturates the server
     with the other model's workload; p50/p95/max, and p95 in units of the loaded model's mean
     forward pass over the run (embedder_forward_duration_seconds{model}, from /metrics).
   - **rerank** and **embed** alone: wrk of each workload alone (the rerank workload: each
     request one STS-B sentence as query and 20 to 100 others as documents, seeded).
   - **mixed**: both workloads at once (two wrk, ``--mixed-connections`` each); each model's
     requests/s, inputs/s and forward-pass seconds per second, beside its alone numbers.

Writes ``<out-dir>/<YYYY-MM-DD>-<name>/results.json`` (every number, after every section) and
``README.md`` (the report: the machine, the exact command, the tables). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import requests

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ..harness import procstats, stsb  # noqa: E402
from ..harness.reranker import NOTE as RERANKER_NOTE  # noqa: E402
from ..harness.reranker import SHAPE as RERANKER_SHAPE  # noqa: E402
from ..harness.reranker import bench_reranker, weights_bytes  # noqa: E402
from ..harness.servers import ROOT, Gunicorn  # noqa: E402
from ..sweep.schema import NOTABLE_CPU_FLAGS, Workload  # noqa: E402
from ..sweep.workloads import WORKLOADS, WrkOptions, joined_sentences, run_wrk, write_bodies  # noqa: E402
from .ceiling import gather, sorted_batches, token_stats  # noqa: E402

#: Results of this tool: bench/results/models/<YYYY-MM-DD>-<name>/{results.json,README.md}.
RESULTS_DIR = ROOT / "bench" / "results" / "models"
SCHEMA = "bench.tools.models/1"
#: The served names (they also name the ONNX files in the cache, so keep them).
EMBED_NAME, RERANK_NAME = "minilm", "reranker"
SECTIONS = ("memory", "limit", "latency", "rerank", "mixed")
#: Seeds of the rerank bodies (the load's and the probes') and of the embed probes.
RERANK_SEED, PROBE_SEED = 21, 22
#: Rerank bodies of the load (cycled by wrk) and of the probes.
RERANK_BODIES, PROBE_BODIES = 200, 100

RERANK = Workload("rerank", "POST /rerank, one STS-B sentence as query and 20 to 100 others as documents (seeded)",
                  "POST", "/rerank", 1)
EMBED = WORKLOADS["embed1long"]


def log(message: str) -> None:
    print(f"[models {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- workloads (pure: tested in tests/fast/test_bench_models.py) ------------------------------------
def rerank_bodies(sentences: list[str], count: int, docs: tuple[int, int], seed: int) -> list[dict]:
    """``count`` /rerank bodies: each one sentence as ``query`` and ``docs[0]`` to ``docs[1]``
    (inclusive) other sentences as ``texts`` (distinct positions, never the query's), seeded."""
    low, high = docs
    if not 1 <= low <= high < len(sentences):
        raise ValueError(f"documents per query {low}-{high}: need 1 <= min <= max < {len(sentences)} sentences")
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        query = rng.randrange(len(sentences))
        picks = rng.sample(range(len(sentences) - 1), rng.randint(low, high))
        bodies.append({"query": sentences[query],
                       "texts": [sentences[i if i < query else i + 1] for i in picks]})
    return bodies


def embed_probe_bodies(sentences: list[str], count: int, seed: int) -> list[dict]:
    """``count`` /embed bodies of one sentence each, drawn with a seed."""
    rng = random.Random(seed)
    return [{"inputs": sentences[rng.randrange(len(sentences))]} for _ in range(count)]


def write_jsonl(bodies: list[dict], path: Path) -> Path:
    """One JSON body a line (bench/sweep/wrk/post.lua's input)."""
    path.write_text("".join(json.dumps(b, ensure_ascii=True) + "\n" for b in bodies))
    return path


def parse_docs(text: str) -> tuple[int, int]:
    """'20-100' -> (20, 100); '20' -> (20, 20)."""
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def latency_stats(seconds: list[float]) -> dict:
    """n, mean, p50, p95 (nearest rank) and max, in ms."""
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)

    def rank(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]

    ms = 1000.0
    return {"n": len(ordered), "mean_ms": round(statistics.fmean(ordered) * ms, 2),
            "p50_ms": round(rank(0.5) * ms, 2), "p95_ms": round(rank(0.95) * ms, 2),
            "max_ms": round(ordered[-1] * ms, 2)}


# -- /metrics ---------------------------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted (label, value) pairs): value} of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            labels = tuple(sorted(_LABEL.findall(match.group(2) or "")))
            out[(match.group(1), labels)] = float(match.group(3))
    return out


def model_counters(samples: dict, model: str) -> dict[str, float]:
    """One model's counters: forward passes, their seconds, the inputs and padded tokens they ran
    (``batched``, ``padded_tokens``: counted as each pass runs), inputs and tokens of answered
    requests (``inputs``, ``tokens``: counted as each request completes), requests answered by
    status code (``code_<code>``), not 2xx other than 499 (``non_2xx``; 499 is a client gone: wrk
    stops with requests in flight), and failures other than a client gone."""
    def mine(name: str):
        for (sample, labels), value in samples.items():
            labels = dict(labels)
            if sample == name and labels.get("model") == model:
                yield labels, value

    out = {"passes": sum(v for _, v in mine("embedder_forward_duration_seconds_count")),
           "forward_s": sum(v for _, v in mine("embedder_forward_duration_seconds_sum")),
           "batched": sum(v for _, v in mine("embedder_batch_size_sum")),
           "padded_tokens": sum(v for _, v in mine("embedder_batch_tokens_sum")),
           "inputs": sum(v for _, v in mine("embedder_inputs_total")),
           "tokens": sum(v for _, v in mine("embedder_input_tokens_total")),
           "failures": sum(v for labels, v in mine("embedder_failures_total") if labels.get("reason") != "client_gone"),
           "client_gone": sum(v for labels, v in mine("embedder_failures_total")
                              if labels.get("reason") == "client_gone")}
    for labels, value in mine("embedder_forward_duration_seconds_bucket"):
        out["le_" + labels.get("le", "")] = value
    codes: dict[str, float] = {}
    for labels, value in mine("embedder_requests_total"):
        key = "code_" + labels.get("code", "")
        codes[key] = codes.get(key, 0.0) + value
    out.update(codes)
    out["requests"] = sum(codes.values())
    out["non_2xx"] = sum(v for k, v in codes.items() if not k.startswith("code_2") and k != "code_499")
    return out


def _bucket_bound(buckets: list[tuple[float, float]], wanted: float) -> float | None:
    """The smallest bucket bound (ms) whose cumulative count reaches ``wanted`` (inf: beyond the last)."""
    for bound, count in buckets:
        if count >= wanted - 1e-9:
            return round(bound * 1000, 1) if math.isfinite(bound) else None
    return None


def counter_delta(before: dict[str, float], after: dict[str, float], seconds: float) -> dict:
    """The counters' increase, the mean forward pass in ms, inputs a pass, and per-second rates of
    what the passes ran."""
    delta = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 6) for k in sorted(set(before) | set(after))}
    delta = {k: v for k, v in delta.items() if v or not k.startswith("code_")}
    buckets = sorted((float(k[3:]), delta.pop(k)) for k in list(delta) if k.startswith("le_"))
    passes = delta["passes"]
    # The forward pass histogram's bucket bounds that hold 95 % and all of the run's passes.
    delta["pass_p95_le_ms"] = _bucket_bound(buckets, 0.95 * passes) if passes else None
    delta["pass_max_le_ms"] = _bucket_bound(buckets, passes) if passes else None
    delta["mean_pass_ms"] = round(1000 * delta["forward_s"] / passes, 3) if passes else None
    delta["inputs_per_pass"] = round(delta["batched"] / passes, 2) if passes else None
    delta["seconds"] = round(seconds, 3)
    delta["inputs_per_s"] = round(delta["batched"] / seconds, 2) if seconds else None
    delta["forward_s_per_s"] = round(delta["forward_s"] / seconds, 3) if seconds else None
    delta["passes_per_s"] = round(passes / seconds, 2) if seconds else None
    return delta


# -- the machine ------------------------------------------------------------------------------------
CPU_FLAGS = NOTABLE_CPU_FLAGS


def cpu_info(text: str | None = None) -> dict:
    """The CPU model and which of CPU_FLAGS it has, from /proc/cpuinfo."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"cpu_model": model, "flags": {flag: flag in flags for flag in CPU_FLAGS}}


def machine(cores: int) -> dict:
    from ..sweep.run import machine_info

    info = machine_info(cores).to_dict()
    info.update(cpu_info())
    return info


# -- servers ----------------------------------------------------------------------------------------
def models_env(reranker: Path | None) -> str:
    return f"{EMBED_NAME}=" + (f",{RERANK_NAME}={reranker}" if reranker else "")


def start_server(workers: int, reranker: Path | None, timeout: float = 300) -> Gunicorn:
    env = {"EMBEDDER_MODELS": models_env(reranker), "EMBEDDER_MODEL": "", "EMBEDDER_BACKEND": "onnx",
           "EMBEDDER_QUANTIZE": "", "EMBEDDER_THREADS": "1", "EMBEDDER_API_KEY": ""}
    began = time.monotonic()
    server = Gunicorn(workers=workers, env=env).start(timeout=timeout)
    log(f"  server up: {workers} worker(s), models {models_env(reranker and Path('DIR'))}, "
        f"{time.monotonic() - began:.1f} s")
    return server


def stop_server(server: Gunicorn, problems: list[str], label: str) -> dict:
    """Stop it; record what its log says went wrong (errors, tracebacks, worker timeouts)."""
    server.stop()
    text = server.log()
    Path(server._log.name).unlink(missing_ok=True)
    bad = [line for line in text.splitlines()
           if any(mark in line for mark in ("[ERROR]", "[CRITICAL]", "Traceback", "WORKER TIMEOUT", "[WARNING]"))]
    if bad:
        problems.append(f"{label}: {len(bad)} warning/error line(s) in the server log, first: {bad[0][:300]}")
    return {"log_problem_lines": bad[:30]}


def metrics(server: Gunicorn) -> dict:
    return parse_metrics(requests.get(server.url + "/metrics", timeout=30).text)


def settle(server: Gunicorn, quiet_wait: float = 0.0, quiet_cores: float = 0.3) -> float | None:
    """Until the server has finished what the last wrk left in flight (bench.sweep.run.settle), then
    up to ``quiet_wait`` s more until the rest of the machine (other tenants) uses under
    ``quiet_cores`` cores; returns what the rest of the machine used in the last half second."""
    from ..sweep.run import settle as sweep_settle

    sweep_settle(server)
    deadline, others = time.monotonic() + quiet_wait, None
    while True:
        pids = server_pids(server)
        cpu, host, began = procstats.cpu_ticks(pids), procstats.host_cpu(), time.monotonic()
        time.sleep(0.5)
        busy, total = (now - then for now, then in zip(procstats.host_cpu(), host))
        server_cores = procstats.cpu_seconds_between(cpu, procstats.cpu_ticks(pids)) / (time.monotonic() - began)
        others = round(max(0.0, busy / total * (os.cpu_count() or 1) - server_cores), 2) if total else None
        if others is None or others < quiet_cores or time.monotonic() >= deadline:
            return others


def server_pids(server: Gunicorn) -> list[int]:
    return procstats.tree(server.pid)


def wrk(server: Gunicorn, workload: Workload, bodies: Path, seconds: float, connections: int) -> dict:
    return run_wrk(server.url, workload, bodies, seconds,
                   WrkOptions(threads=min(4, connections), connections=connections))


def check_wrk(result: dict, label: str, problems: list[str]) -> None:
    if result.get("non_2xx") or result.get("socket_errors"):
        problems.append(f"{label}: wrk saw {result['non_2xx']} non-2xx and {result['socket_errors']} socket "
                        f"errors {result['socket_errors_detail']}")


def check_counters(delta: dict, label: str, problems: list[str]) -> None:
    if delta.get("non_2xx") or delta.get("failures"):
        codes = {k[5:]: v for k, v in delta.items() if k.startswith("code_") and not k.startswith("code_2")}
        problems.append(f"{label}: /metrics counted {delta['non_2xx']:g} non-2xx answers (499 aside; by code: "
                        f"{codes}) and {delta['failures']:g} failures (client_gone aside)")


# -- single requests, one at a time -----------------------------------------------------------------
#: The server's account of a request's time, in ms (text-embeddings-inference's headers).
TIMING_HEADERS = ("x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time")


def probe(url: str, bodies: list[dict], until: float | None = None, count: int | None = None) -> dict:
    """POST the bodies to ``url`` one at a time (cycling) until ``until`` (monotonic) or ``count``;
    each request's time, the server's timing headers (where its time went in the server), the time
    outside the server's account (client - x-total-time: HTTP, accept, the GIL, the machine), and
    what failed."""
    times, errors, index = [], [], 0
    parts: dict[str, list[float]] = {name: [] for name in (*TIMING_HEADERS, "outside")}
    with requests.Session() as session:
        while (until is None or time.monotonic() < until) and (count is None or index < count):
            body = bodies[index % len(bodies)]
            index += 1
            began = time.perf_counter()
            try:
                answer = session.post(url, json=body, timeout=60)
                elapsed = time.perf_counter() - began
                if answer.status_code == 200:
                    times.append(elapsed)
                    try:
                        found = {name: float(answer.headers[name]) / 1000 for name in TIMING_HEADERS}
                    except (KeyError, ValueError):
                        continue
                    for name, value in found.items():
                        parts[name].append(value)
                    parts["outside"].append(max(0.0, elapsed - found["x-total-time"]))
                else:
                    errors.append(f"HTTP {answer.status_code} after {elapsed:.2f} s: {answer.text[:200]}")
            except requests.RequestException as exc:
                errors.append(f"{type(exc).__name__} after {time.perf_counter() - began:.2f} s: {exc}"[:300])
    server_parts = {name.removeprefix("x-").removesuffix("-time"): {k: v for k, v in latency_stats(values).items()
                                                                    if k in ("p50_ms", "p95_ms", "mean_ms")}
                    for name, values in parts.items() if values}
    return {**latency_stats(times), "errors": len(errors), "error_detail": errors[:10], "parts": server_parts}


_SS_LINE = re.compile(r"^\S+\s+\S+\s+(\S+):(\d+)\s+(\S+):(\d+)\s+.*?pid=(\d+)")


def _client(pid: int) -> str:
    """Who holds a client connection: this process ("probe"), a wrk of the rerank or the embedding
    workload (by its bodies file), or "other"."""
    if pid == os.getpid():
        return "probe"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    if not argv or Path(argv[0].decode(errors="replace")).name != "wrk":
        return "other"
    bodies = next((a.decode(errors="replace") for a in argv if a.endswith(b".jsonl")), "")
    return "rerank" if Path(bodies).name.startswith("rerank") else "embed" if bodies else "other"


def connections(port: int, text: str | None = None, client=_client) -> dict:
    """Established TCP connections to the server on ``port``, from ``ss -tnp`` ({} without ss): how
    many each worker holds, in all and by client (``client(pid)``: probe, embed, rerank, other), and
    which worker holds the probe's."""
    if text is None:
        try:
            text = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
    server_side, client_side = {}, {}
    for line in text.splitlines():
        match = _SS_LINE.match(line.strip())
        if not match:
            continue
        local_port, peer_port, pid = int(match.group(2)), int(match.group(4)), int(match.group(5))
        if local_port == port:
            server_side[peer_port] = str(pid)
        elif peer_port == port:
            client_side[local_port] = pid
    labels = {pid: client(pid) for pid in set(client_side.values())}
    by_worker: dict[str, int] = {}
    by_client: dict[str, dict[str, int]] = {}
    probe_worker = None
    for peer_port, worker in server_side.items():
        by_worker[worker] = by_worker.get(worker, 0) + 1
        who = labels.get(client_side.get(peer_port), "other")
        by_client.setdefault(worker, {})
        by_client[worker][who] = by_client[worker].get(who, 0) + 1
        if who == "probe":
            probe_worker = worker
    return {"by_worker": by_worker, "by_worker_and_client": by_client, "probe_worker": probe_worker}


# -- the sections -----------------------------------------------------------------------------------
def section_memory(args, reranker: Path, files: dict, results: dict, save) -> None:
    rows = results.setdefault("memory", [])
    for workers in args.memory_workers:
        for with_reranker in (False, True):
            label = f"memory, {workers} worker(s), {'embedding + reranker' if with_reranker else 'embedding alone'}"
            log(label)
            row = {"workers": workers, "models": "embedding+reranker" if with_reranker else "embedding"}
            try:
                server = start_server(workers, reranker if with_reranker else None)
            except Exception as exc:  # noqa: BLE001 - recorded, the rest goes on
                row["error"] = f"{type(exc).__name__}: {exc}"[:3000]
                results["problems"].append(f"{label}: server did not start: {row['error'][:300]}")
                rows.append(row)
                save()
                continue
            try:
                burst = max(1.0, args.warmup)
                warm = [wrk(server, WORKLOADS["embed1"], files["embed1"], burst, 8),
                        wrk(server, EMBED, files["embed"], burst, 8)]
                if with_reranker:
                    warm.append(wrk(server, RERANK, files["rerank"], burst, 8))
                for result in warm:
                    check_wrk(result, label + " (warm-up)", results["problems"])
                settle(server)
                time.sleep(0.5)
                memory = procstats.memory(server_pids(server))
                row.update(asdict(memory))
                row["warmup_requests"] = sum(r["requests"] for r in warm)
                log(f"  total PSS {memory.pss_mib:.1f} MiB over {memory.processes} processes")
            finally:
                row.update(stop_server(server, results["problems"], label))
            rows.append(row)
            save()
    results["memory_summary"] = memory_summary(rows, files["reranker_weights_bytes"])
    results["memory_fit"] = memory_fit(results["memory_summary"])
    save()


def memory_summary(rows: list[dict], weights: int) -> list[dict]:
    """Per worker count: PSS alone, with the reranker, the difference, and the weights beside it."""
    out = []
    for workers in sorted({r["workers"] for r in rows}):
        found = {r["models"]: r for r in rows if r["workers"] == workers and "pss_mib" in r}
        if len(found) < 2:
            continue
        alone, both = found["embedding"]["pss_mib"], found["embedding+reranker"]["pss_mib"]
        out.append({"workers": workers, "alone_pss_mib": alone, "both_pss_mib": both,
                    "difference_mib": round(both - alone, 1),
                    "reranker_weights_mib": round(weights / 2**20, 1),
                    "weights_times_workers_mib": round(workers * weights / 2**20, 1)})
    return out


def memory_fit(summary: list[dict]) -> dict | None:
    """The difference (second model's cost) as once + per worker × workers, least squares; None
    with fewer than two worker counts."""
    if len(summary) < 2:
        return None
    xs, ys = [s["workers"] for s in summary], [s["difference_mib"] for s in summary]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return {"once_mib": round(my - slope * mx, 1), "per_worker_mib": round(slope, 1)}


def section_limit(args, reranker: Path, files: dict, results: dict, save) -> None:
    log(f"limit: the reranker in process, {args.limit_seconds:g} s x {args.limit_repeat}")
    argv = [sys.executable, "-m", "bench.tools.models", "--limit-child",
            json.dumps({"reranker": str(reranker), "bodies": str(files["rerank"]), "processes": args.cores,
                        "threads": 1, "batch_size": args.limit_batch, "seconds": args.limit_seconds,
                        "repeat": args.limit_repeat})]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          timeout=600 + args.limit_seconds * args.limit_repeat * 3)
    line = next((raw for raw in reversed(done.stdout.splitlines()) if raw.startswith("{")), "")
    if done.returncode != 0 or not line:
        error = f"limit failed ({done.returncode}): {done.stderr[-2000:]}"
        results["problems"].append(error[:500])
        results["limit"] = {"error": error}
    else:
        results["limit"] = json.loads(line)
        log(f"  {results['limit']['pairs_per_s']} pairs/s")
    save()


def _pair_ids(model, batch: list[tuple[str, str]]) -> list:
    """A batch's pairs as the server tokenizes them: each query's documents in one call."""
    by_query: dict[str, list[str]] = {}
    for query, document in batch:
        by_query.setdefault(query, []).append(document)
    return [ids for query, documents in by_query.items() for ids in model.pair_ids(query, documents, truncate=True)]


def _limit_process(runner, model, batches, threads, offset, seconds, repeat, barrier, results) -> None:
    try:
        runner.start(threads)
        longest = max(batches, key=lambda b: max(len(ids) for ids in _pair_ids(model, b)))
        for batch in [longest, *batches[:3]]:  # warm-up: the arena for the longest pairs, too
            runner.forward(_pair_ids(model, batch))
        for run in range(repeat):
            barrier.wait(timeout=600)
            done, index, began, cpu = 0, offset, time.perf_counter(), time.process_time()
            while True:
                batch = batches[index % len(batches)]
                runner.forward(_pair_ids(model, batch))
                done, index = done + len(batch), index + 1
                elapsed = time.perf_counter() - began
                if elapsed >= seconds:
                    break
            results.put((run, (done / elapsed, (time.process_time() - cpu) / elapsed)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        barrier.abort()


def limit_child(spec: dict) -> dict:
    """The reranker's in-process sorted limit on the rerank bodies' pairs (a child process)."""
    from embedder.backends import create_backend
    from embedder.config import Settings
    from embedder.model.load import load_model

    settings = Settings(backend="onnx", quantize="", cache_dir=os.environ.get("EMBEDDER_CACHE_DIR", ""))
    model = load_model(Path(spec["reranker"]), RERANK_NAME, "onnx")
    runner = create_backend(settings, model)
    bodies = [json.loads(line) for line in Path(spec["bodies"]).read_text().splitlines() if line]
    pairs, lengths = [], []
    for body in bodies:
        for document, ids in zip(body["texts"], model.pair_ids(body["query"], body["texts"], truncate=True)):
            pairs.append((body["query"], document))
            lengths.append(len(ids))
    batches = sorted_batches(pairs, lengths, spec["batch_size"])
    processes, repeat = spec["processes"], spec["repeat"]
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    children = [context.Process(target=_limit_process, daemon=True,
                                args=(runner, model, batches, spec["threads"], i * len(batches) // processes,
                                      spec["seconds"], repeat, barrier, results))
                for i in range(processes)]
    for child in children:
        child.start()
    rates = gather(children, results, processes * repeat, time.monotonic() + 600 + repeat * spec["seconds"] * 3)
    runs = [round(sum(rate for rate, _ in rates[run]), 1) for run in sorted(rates)]
    cores = [round(sum(used for _, used in rates[run]), 2) for run in sorted(rates)]
    serving = Path(runner.serving)
    return {"pairs_per_s": round(statistics.median(runs), 1), "runs": runs, "cores": cores,
            "pairs_per_cpu_s": round(statistics.median(r / c for r, c in zip(runs, cores) if c), 1),
            "processes": processes,
            "threads": spec["threads"], "batch_size": spec["batch_size"], "seconds": spec["seconds"],
            "pairs": len(pairs), "pair_tokens": token_stats(lengths), "backend": runner.name,
            "serving_form": str(serving), "serving_bytes": sum(p.stat().st_size for p in serving.parent.iterdir()
                                                               if p.is_file())}


class Window:
    """What the server did between open and :meth:`close`: each model's /metrics counters, the CPU
    of each of the server's processes and of the whole machine (wrk, the probes and anything else
    running), and, sampled once at :meth:`sample_connections`, how the connections sit on workers."""

    def __init__(self, server: Gunicorn):
        self.server = server
        self.workers = [str(pid) for pid in server.worker_pids()]
        self.before = metrics(server)
        self.cpu = procstats.cpu_ticks(server_pids(server))
        self.host = procstats.host_cpu()
        self.began = time.monotonic()
        self.connections: dict = {}

    def sample_connections(self) -> None:
        self.connections = connections(self.server.port)

    def close(self) -> dict:
        wall = time.monotonic() - self.began
        after = metrics(self.server)
        now = procstats.cpu_ticks(server_pids(self.server))
        cpu = procstats.cpu_seconds_between(self.cpu, now)
        busy, total = (now_ - then for now_, then in zip(procstats.host_cpu(), self.host))
        worker_cores = {pid: round((now.get(int(pid), 0) - self.cpu.get(int(pid), 0)) / procstats.CLOCK_TICKS / wall, 2)
                        for pid in self.workers}
        return {"wall_s": round(wall, 2), "server_cores": round(cpu / wall, 2), "worker_cores": worker_cores,
                "host_busy_cores": round(busy / total * (os.cpu_count() or 1), 2) if total else None,
                "connections": self.connections,
                "models": {name: counter_delta(model_counters(self.before, name), model_counters(after, name), wall)
                           for name in (EMBED_NAME, RERANK_NAME)}}


def run_with_probe(server: Gunicorn, load: tuple[Workload, Path, int] | None, probe_path: str,
                   probe_bodies: list[dict], seconds: float) -> dict:
    """wrk of ``load`` (workload, bodies, connections) for ``seconds`` while single requests go to
    ``probe_path`` one at a time (from 2 s after wrk starts until 1 s before it ends); no load: the
    probes alone for ``seconds``."""
    window = Window(server)
    sampler = threading.Timer(seconds / 2, window.sample_connections)
    sampler.start()
    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(wrk, server, load[0], load[1], seconds, load[2]) if load else None
            if future:
                time.sleep(min(2.0, seconds / 5))
            probed = probe(server.url + probe_path, probe_bodies,
                           until=window.began + (seconds - 1 if future else seconds))
            load_result = future.result() if future else None
    finally:
        sampler.cancel()
        sampler.join()
    return {"probe": probed, "wrk": load_result, **window.close()}


def run_loads(server: Gunicorn, loads: list[tuple[Workload, Path, int]], seconds: float) -> dict:
    """wrk runs at once (one per load), with each model's /metrics counters over them."""
    window = Window(server)
    with ThreadPoolExecutor(len(loads)) as pool:
        futures = [pool.submit(wrk, server, w, bodies, seconds, conns) for w, bodies, conns in loads]
        time.sleep(seconds / 2)
        window.sample_connections()
        results = [f.result() for f in futures]
    return {"wrk": {w.name: r for (w, _, _), r in zip(loads, results)}, **window.close()}


def section_served(args, reranker: Path, files: dict, results: dict, save) -> None:
    """Latency, rerank and embed alone, and mixed, on one server of both models, in rounds."""
    wanted = [s for s in ("latency", "rerank", "mixed") if s in args.sections]
    log(f"served: {args.workers} workers, both models; {', '.join(wanted)}; {args.rounds} round(s) of "
        f"{args.duration:g} s runs")
    embed_load = (EMBED, files["embed"], args.embed_connections)
    rerank_load = (RERANK, files["rerank"], args.rerank_connections)
    steps = []
    if "latency" in wanted:
        steps += [("latency", "rerank", None), ("latency", "rerank", "embed"),
                  ("latency", "embed", None), ("latency", "embed", "rerank")]
    if "rerank" in wanted or "mixed" in wanted:
        steps += [("alone", "rerank", None), ("alone", "embed", None)]
    if "mixed" in wanted:
        steps += [("mixed", None, None)]
    runs = results.setdefault("served", [])
    try:
        server = start_server(args.workers, reranker)
    except Exception as exc:  # noqa: BLE001
        results["problems"].append(f"served: server did not start: {exc}"[:500])
        save()
        return
    label = f"served ({args.workers} workers)"
    try:
        results["served_info"] = requests.get(server.url + "/info", timeout=10).json()
        log("  warm-up")
        for load in (embed_load, rerank_load):
            check_wrk(wrk(server, load[0], load[1], args.warmup, load[2]), label + " warm-up", results["problems"])
        for round_index in range(args.rounds):
            order = steps if round_index % 2 == 0 else steps[::-1]
            for kind, model, load in order:
                others = settle(server, args.quiet_wait)
                what = (f"{model} probes, {'no load' if load is None else load + ' load'}" if kind == "latency"
                        else f"{model} alone" if kind == "alone" else "mixed")
                log(f"  round {round_index + 1}: {what} (other tenants: {others} cores)")
                if kind == "latency":
                    probe_path, bodies = (("/rerank", files["rerank_probes"]) if model == "rerank"
                                          else ("/embed", files["embed_probes"]))
                    chosen = {"embed": embed_load, "rerank": rerank_load}.get(load)
                    seconds = args.duration if load else args.baseline_seconds
                    run = run_with_probe(server, chosen, probe_path, bodies, seconds)
                    run.update(kind=kind, probe_model=model, load=load, round=round_index + 1,
                               others_cores_before=others)
                    p = run["probe"]
                    if p["errors"]:
                        results["problems"].append(f"round {run['round']} {what}: {p['errors']} probe(s) failed: "
                                                   f"{p['error_detail'][:3]}")
                    log(f"    p50 {p.get('p50_ms')} ms, p95 {p.get('p95_ms')} ms, max {p.get('max_ms')} ms "
                        f"(n {p['n']}, errors {p['errors']})")
                else:
                    loads = ([rerank_load] if model == "rerank" else [embed_load] if model == "embed"
                             else [(EMBED, files["embed"], args.mixed_connections),
                                   (RERANK, files["rerank"], args.mixed_connections)])
                    run = run_loads(server, loads, args.duration)
                    run.update(kind=kind, probe_model=None, load=model or "embed+rerank", round=round_index + 1,
                               others_cores_before=others)
                    log("    " + ", ".join(f"{n}: {d['inputs_per_s']} inputs/s" for n, d in run["models"].items()
                                           if d["batched"]))
                wrk_results = ({"load": run["wrk"]} if run["wrk"] else {}) if kind == "latency" else run["wrk"]
                for name, result in wrk_results.items():
                    check_wrk(result, f"round {run['round']} {what} ({name})", results["problems"])
                for name, delta in run["models"].items():
                    check_counters(delta, f"round {run['round']} {what} ({name})", results["problems"])
                runs.append(run)
                save()
    finally:
        results["served_server"] = stop_server(server, results["problems"], label)
        save()


# -- summaries --------------------------------------------------------------------------------------
def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def latency_rows(runs: list[dict]) -> list[dict]:
    """One row per latency run: the probe's numbers; the probed model's passes per probe request
    and mean pass; the load's mean pass; p95 in load passes; and the turn-taking bound: with the
    models taking turns pass by pass, each of the probe's passes waits at most for one pass of the
    load, so a probe should take at most (its passes) x (its pass + the load's pass), plus HTTP."""
    names = {"embed": EMBED_NAME, "rerank": RERANK_NAME}
    rows = []
    for run in runs:
        if run["kind"] != "latency":
            continue
        own = run["models"][names[run["probe_model"]]]
        loaded = run["models"][names[run["load"]]] if run["load"] else None
        requests_made = run["probe"]["n"] + run["probe"]["errors"]
        passes_per_request = round(own["passes"] / requests_made, 2) if requests_made else None
        own_pass, load_pass = own["mean_pass_ms"], loaded["mean_pass_ms"] if loaded else None
        p95 = run["probe"].get("p95_ms")
        bound = (round(passes_per_request * (own_pass + (load_pass or 0)), 1)
                 if passes_per_request and own_pass else None)
        rows.append({"round": run["round"], "probe": run["probe_model"], "load": run["load"] or "none",
                     "n": run["probe"]["n"], "p50_ms": run["probe"].get("p50_ms"), "p95_ms": p95,
                     "max_ms": run["probe"].get("max_ms"), "errors": run["probe"]["errors"],
                     "probe_passes_per_request": passes_per_request, "probe_pass_ms": own_pass,
                     "load_pass_ms": load_pass, "load_inputs_per_pass": loaded["inputs_per_pass"] if loaded else None,
                     "p95_in_load_passes": round(p95 / load_pass, 1) if p95 and load_pass else None,
                     "turn_bound_ms": bound, "p95_over_bound": round(p95 / bound, 2) if p95 and bound else None,
                     "load_inputs_per_s": loaded["inputs_per_s"] if loaded else None,
                     "load_pass_p95_le_ms": loaded.get("pass_p95_le_ms") if loaded else None,
                     "load_pass_max_le_ms": loaded.get("pass_max_le_ms") if loaded else None,
                     "server_cores": run["server_cores"], "host_busy_cores": run.get("host_busy_cores"),
                     **{f"{part}_p95_ms": (run["probe"].get("parts", {}).get(part) or {}).get("p95_ms")
                        for part in ("queue", "inference", "outside")},
                     **_spread(run)})
    return rows


def _spread(run: dict) -> dict:
    """How the run sat on the workers: connections each held (mid-run), cores each used; for a
    probe, how many other connections its worker held."""
    conns = (run.get("connections") or {}).get("by_worker") or {}
    cores = run.get("worker_cores") or {}
    workers = sorted(set(cores) | set(conns), key=int)
    probe_worker = (run.get("connections") or {}).get("probe_worker")
    by_client = (run.get("connections") or {}).get("by_worker_and_client") or {}
    return {"connections_by_worker": [conns.get(w, 0) for w in workers] if conns else None,
            "connections_by_worker_and_client": [by_client.get(w, {}) for w in workers] if by_client else None,
            "cores_by_worker": [cores.get(w) for w in workers] if cores else None,
            "probe_worker_other_connections": conns.get(probe_worker, 1) - 1 if probe_worker else None}


def throughput_rows(runs: list[dict]) -> list[dict]:
    """One row per model per alone or mixed run."""
    rows = []
    for run in runs:
        if run["kind"] not in ("alone", "mixed"):
            continue
        for workload, result in run["wrk"].items():
            name = EMBED_NAME if workload == EMBED.name else RERANK_NAME
            delta = run["models"][name]
            rows.append({"round": run["round"], "run": run["kind"], "workload": workload, "model": name,
                         "requests_per_s": result["requests_per_s"], "inputs_per_s": delta["inputs_per_s"],
                         "forward_s_per_s": delta["forward_s_per_s"], "mean_pass_ms": delta["mean_pass_ms"],
                         "inputs_per_pass": delta["inputs_per_pass"], "latency_p50_ms": result["latency_p50_ms"],
                         "latency_p99_ms": result["latency_p99_ms"], "non_2xx": result["non_2xx"],
                         "socket_errors": result["socket_errors"], "server_cores": run["server_cores"],
                         "host_busy_cores": run.get("host_busy_cores"), "passes_per_s": delta["passes_per_s"],
                         "inputs_per_server_cpu_s": (round(delta["inputs_per_s"] / run["server_cores"], 1)
                                                     if run["server_cores"] and len(run["wrk"]) == 1 else None),
                         **_spread(run),
                         "forward_share": (round(delta["forward_s"] / total, 3) if (
                             total := sum(d["forward_s"] for d in run["models"].values())) else None)})
    return rows


def spread_observations(runs: list[dict], uneven: float = 3.0) -> list[str]:
    """Loaded runs whose wrk connections sat unevenly on the workers: a worker with none of a
    workload's connections, or one with ``uneven`` times another's."""
    out = []
    for run in runs:
        spread = _spread(run)
        per_worker = spread.get("connections_by_worker_and_client")
        if not run.get("wrk") or not per_worker or len(per_worker) < 2:
            continue
        what = (f"{run['probe_model']} probes under {run['load']} load" if run["kind"] == "latency"
                else f"{run['load']} alone" if run["kind"] == "alone" else "mixed")
        for workload in sorted({k for c in per_worker for k in c if k in ("embed", "rerank")}):
            counts = [c.get(workload, 0) for c in per_worker]
            if min(counts) == 0 or max(counts) >= uneven * min(counts):
                out.append(f"round {run['round']}, {what}: {workload} connections by worker "
                           f"{' + '.join(map(str, counts))}" + (" (a worker held none)" if min(counts) == 0 else "")
                           + f"; cores by worker {' / '.join(_fmt(c, 2) for c in spread['cores_by_worker'] or [])}")
    return out


def summarize(results: dict) -> dict:
    runs = results.get("served", [])
    latency, throughput = latency_rows(runs), throughput_rows(runs)
    summary = {"latency": latency, "throughput": throughput, "observations": spread_observations(runs)}
    limit = (results.get("limit") or {}).get("pairs_per_s")
    served = [r["inputs_per_s"] for r in throughput if r["run"] == "alone" and r["workload"] == "rerank"]
    if served:
        summary["rerank"] = {"served_pairs_per_s": served, "served_median": _median(served), "limit_pairs_per_s": limit,
                             "served_over_limit": round(_median(served) / limit, 2) if limit else None}
        per_cpu = [r["inputs_per_server_cpu_s"] for r in throughput
                   if r["run"] == "alone" and r["workload"] == "rerank"]
        limit_per_cpu = (results.get("limit") or {}).get("pairs_per_cpu_s")
        summary["rerank"].update(served_pairs_per_cpu_s=_median(per_cpu), limit_pairs_per_cpu_s=limit_per_cpu,
                                 served_over_limit_per_cpu=(round(_median(per_cpu) / limit_per_cpu, 2)
                                                            if limit_per_cpu and _median(per_cpu) else None))
    shares = []
    for workload in (EMBED.name, RERANK.name):
        alone = [r for r in throughput if r["run"] == "alone" and r["workload"] == workload]
        mixed = [r for r in throughput if r["run"] == "mixed" and r["workload"] == workload]
        if alone and mixed:
            a_in, m_in = _median([r["inputs_per_s"] for r in alone]), _median([r["inputs_per_s"] for r in mixed])
            alone_by_round = {r["round"]: r["inputs_per_s"] for r in alone}
            shares.append({"workload": workload, "model": alone[0]["model"],
                           "alone_requests_per_s": _median([r["requests_per_s"] for r in alone]),
                           "mixed_requests_per_s": _median([r["requests_per_s"] for r in mixed]),
                           "alone_inputs_per_s": a_in, "mixed_inputs_per_s": m_in,
                           "mixed_over_alone": round(m_in / a_in, 2) if a_in else None,
                           "alone_forward_s_per_s": _median([r["forward_s_per_s"] for r in alone]),
                           "mixed_forward_s_per_s": _median([r["forward_s_per_s"] for r in mixed]),
                           "mixed_forward_share": _median([r["forward_share"] for r in mixed]),
                           "mixed_passes_per_s": _median([r["passes_per_s"] for r in mixed]),
                           "mixed_mean_pass_ms": _median([r["mean_pass_ms"] for r in mixed]),
                           "mixed_inputs_per_pass": _median([r["inputs_per_pass"] for r in mixed]),
                           "mixed_over_alone_by_round": [
                               round(r["inputs_per_s"] / alone_by_round[r["round"]], 2) for r in mixed
                               if alone_by_round.get(r["round"])]})
    if shares:
        summary["mixed"] = shares
        summary["mixed_sum_of_shares"] = round(sum(s["mixed_over_alone"] or 0 for s in shares), 2)
    return summary


# -- the report -------------------------------------------------------------------------------------
def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _conns(row: dict) -> str:
    """Connections each worker held, with whose they were: "22 (embed 6, rerank 16) + 10 (embed 10)"."""
    if row.get("connections_by_worker_and_client"):
        return " + ".join(f"{sum(c.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) + ")"
                          if c else "0" for c in row["connections_by_worker_and_client"])
    return " + ".join(str(c) for c in row["connections_by_worker"]) if row.get("connections_by_worker") else "–"


def _cores(row: dict) -> str:
    return " / ".join(_fmt(c, 2) for c in row["cores_by_worker"]) if row.get("cores_by_worker") else "–"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""])


def _range(values: list, digits: int = 1, unit: str = "") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    low, high = min(values), max(values)
    return (_fmt(low, digits) if low == high else f"{_fmt(low, digits)}–{_fmt(high, digits)}") + unit


def headlines(results: dict) -> list[str]:
    """The run in a few lines, each read from the tables below (ranges over rounds)."""
    out = []
    memory, fit = results.get("memory_summary") or [], results.get("memory_fit")
    if memory:
        weights = results["reranker"]["weights_bytes"] / 2**20
        out.append("- **Memory**: the reranker adds " + ", ".join(
            f"{_fmt(m['difference_mib'])} MiB at {m['workers']} worker{'s' if m['workers'] > 1 else ''}"
            for m in memory) + f" of total PSS (its weights: {_fmt(weights)} MiB)"
            + (f"; about {_fmt(fit['once_mib'])} MiB once + {_fmt(fit['per_worker_mib'])} MiB per worker" if fit
               else "") + ".")
    summary = results.get("summary", {})
    latency = summary.get("latency") or []
    for probe, load in (("embed", "rerank"), ("rerank", "embed")):
        rows = [r for r in latency if r["probe"] == probe and r["load"] == load]
        base = [r for r in latency if r["probe"] == probe and r["load"] == "none"]
        if rows:
            out.append(f"- **{'An embedding' if probe == 'embed' else 'A rerank'} request under a saturating "
                       f"{'rerank' if load == 'rerank' else 'embedding'} load**: p95 "
                       f"{_range([r['p95_ms'] for r in rows], 0, ' ms')} (no load: "
                       f"{_range([r['p95_ms'] for r in base], 0, ' ms')}) = "
                       f"{_range([r['p95_in_load_passes'] for r in rows])} mean passes of the load "
                       f"({_range([r['load_pass_ms'] for r in rows], 0, ' ms')}), "
                       f"{_range([r['p95_over_bound'] for r in rows], 2)} × the turn bound; the request ran in "
                       f"{_range([r['probe_passes_per_request'] for r in rows])} passes of its own.")
    rerank = summary.get("rerank")
    if rerank and rerank.get("served_over_limit"):
        out.append(f"- **Rerank workload**: {_range(rerank['served_pairs_per_s'], 0)} pairs/s served, "
                   f"{_fmt(rerank['limit_pairs_per_s'], 0)} in process: served / limit "
                   f"{rerank['served_over_limit']:.2f}"
                   + (f" ({rerank['served_over_limit_per_cpu']:.2f} per CPU-second)"
                      if rerank.get("served_over_limit_per_cpu") else "") + ".")
    shares = summary.get("mixed") or []
    if shares:
        out.append("- **Mixed**: " + "; ".join(
            f"{s['model']} keeps {_fmt(s['mixed_over_alone'], 2)} of its alone inputs/s with "
            f"{_fmt(s['mixed_forward_share'] * 100 if s['mixed_forward_share'] is not None else None, 0)} % of the "
            f"forward-pass time ({_fmt(s['mixed_passes_per_s'])} passes/s of {_fmt(s['mixed_mean_pass_ms'], 0)} ms)"
            for s in shares) + f"; together {summary['mixed_sum_of_shares']:.2f} of alone.")
    loaded = ([r["server_cores"] for r in latency if r["load"] != "none"]
              + [r["server_cores"] for r in summary.get("throughput") or []])
    hosts = ([r["host_busy_cores"] for r in latency if r["load"] != "none"]
             + [r["host_busy_cores"] for r in summary.get("throughput") or []])
    if loaded:
        out.append(f"- **CPU**: under load the server used {_range(loaded, 2)} cores of "
                   f"{results['machine'].get('available_cpus')}, the whole machine {_range(hosts, 2)} (wrk, the "
                   "probing client and the machine's other tenants): read throughput as ratios within this run.")
    return (["## Headlines", ""] + out + [""]) if out else []


def markdown(results: dict) -> str:
    m, args = results["machine"], results["settings"]
    flags = ", ".join(f for f, present in m.get("flags", {}).items() if present) or "none of " + ", ".join(CPU_FLAGS)
    rr = results["reranker"]
    lines = [f"# Several models in one server: {results['name']}", "",
             f"Written by `bench/tools/models.py` ({results['started']} to {results.get('finished', '?')} UTC).", "",
             "```", results["command"], "```", "",
             f"- **Machine**: {m.get('cpu_model')} ({flags}); {m.get('nproc')} cores, {m.get('available_cpus')} "
             f"available; {m.get('memory_gib')} GiB; kernel {m.get('kernel')}; host `{m.get('host')}`; load average "
             f"at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')}. Shared and noisy: compare within "
             "this run, as ratios.",
             f"- **Software**: git {m.get('git')}; " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()
                                                                  if v and k not in ("caddy", "matplotlib", "flask")),
             f"- **Models**: `{EMBED_NAME}` = the bundled all-MiniLM-L6-v2 (embedding); `{RERANK_NAME}` = a "
             f"{rr['note']}. Weights {_fmt(rr['weights_bytes'] / 2**20)} MiB (model.safetensors)"
             + (f"; its ONNX serving form (graph + data with pre-packed copies, what workers map) "
                f"{_fmt(rr['serving_bytes'] / 2**20)} MiB" if rr.get("serving_bytes") else "") + ".",
             f"- **Server**: `gunicorn -c gunicorn.conf.py wsgi:app` on 127.0.0.1, onnx backend, EMBEDDER_THREADS=1, "
             f"`EMBEDDER_MODELS=\"{EMBED_NAME}=,{RERANK_NAME}=DIR\"` (or `\"{EMBED_NAME}=\"` alone).",
             f"- **Workloads** (STS-B test split, bench/data/): embedding load = `embed1long` bodies (1 input: 1-3 "
             f"joined sentences); rerank load = {results['workloads']['rerank']['bodies']} bodies, each one sentence "
             f"as query and {args['docs'][0]}-{args['docs'][1]} others as documents (seed {RERANK_SEED}, "
             f"{results['workloads']['rerank']['pairs']} pairs, mean "
             f"{results['workloads']['rerank']['mean_docs']} a request); rerank probes = {args['probe_docs']} "
             f"documents each; embed probes = one STS-B sentence each. wrk `-d {args['duration']:g}s`, "
             f"embedding load {args['embed_connections']} connections, rerank load {args['rerank_connections']}, "
             f"mixed {args['mixed_connections']} + {args['mixed_connections']}; {args['rounds']} round(s), each in "
             "the reverse order of the last.", ""]
    lines += headlines(results)
    problems = results.get("problems", [])
    lines += ["## Misbehaviour", ""]
    lines += ([f"- {p}" for p in problems] if problems else
              ["None seen: no non-2xx answer or socket error in any wrk run or probe, no failure other than "
               "a client gone (wrk stopping mid-request) in /metrics, no warning or error in the server logs."])
    lines += [""]
    observations = results.get("summary", {}).get("observations") or []
    if observations:
        lines += ["Observed, not errors: a worker keeps the connections it accepts, and wrk opens all of its "
                  "connections at once, so they can sit unevenly on the workers (mid-run, from `ss`):", ""]
        lines += [f"- {o}" for o in observations] + [""]

    summary = results.get("memory_summary") or []
    if summary:
        lines += ["## 1. Memory: total PSS (master + workers)", "",
                  "After warm-up (start-up warm-up, then wrk bursts of each served model's workloads), settled. "
                  "The difference is what the second model costs the whole server.", ""]
        lines += _table(["workers", "embedding alone, MiB", "+ reranker, MiB", "difference, MiB",
                         "reranker weights, MiB", "weights × workers, MiB"],
                        [[s["workers"], _fmt(s["alone_pss_mib"]), _fmt(s["both_pss_mib"]),
                          f"**{_fmt(s['difference_mib'])}**", _fmt(s["reranker_weights_mib"]),
                          _fmt(s["weights_times_workers_mib"])] for s in summary])
        fit = results.get("memory_fit")
        serving = rr.get("serving_bytes")
        if fit:
            lines += [f"The difference as once + per worker (least squares over the worker counts): "
                      f"**{_fmt(fit['once_mib'])} MiB once + {_fmt(fit['per_worker_mib'])} MiB per worker**; the "
                      f"reranker's weights are {_fmt(rr['weights_bytes'] / 2**20)} MiB"
                      + (f" ({_fmt(serving / 2**20)} MiB as the ONNX serving form the workers map)" if serving else "")
                      + ".", ""]
        per = [r for r in results.get("memory", []) if "pss_mib" in r]
        lines += ["Per process (PSS, MiB; the master first):", ""]
        lines += _table(["workers", "models", "total PSS", "private", "per process"],
                        [[r["workers"], r["models"], _fmt(r["pss_mib"]), _fmt(r["private_mib"]),
                          " / ".join(_fmt(v) for _, v in sorted(r["pss_mib_by_pid"].items(),
                                                                key=lambda kv: int(kv[0])))]
                         for r in per])

    latency = results.get("summary", {}).get("latency") or []
    if latency:
        lines += ["## 2. Cross-model latency", "",
                  "Single requests, one at a time, from one client, while wrk saturates the server with the other "
                  "model's workload (or with no load). Pass times are the mean forward pass of each model over the "
                  "run (embedder_forward_duration_seconds{model}, sum/count deltas from /metrics); "
                  "“p95 / load pass” is the claim “within a few passes” measured.", ""]
        ordered = sorted(latency, key=lambda r: (r["probe"], r["load"] != "none", r["round"]))
        lines += _table(["probe", "load", "round", "n", "p50 ms", "p95 ms", "max ms", "load's mean pass ms",
                         "p95 / load pass", "p95 / turn bound", "errors"],
                        [[r["probe"], r["load"], r["round"], r["n"], _fmt(r["p50_ms"]), f"**{_fmt(r['p95_ms'])}**",
                          _fmt(r["max_ms"]), _fmt(r["load_pass_ms"]),
                          f"**{_fmt(r['p95_in_load_passes'])}**" if r["p95_in_load_passes"] else "–",
                          _fmt(r["p95_over_bound"], 2), r["errors"]] for r in ordered])
        lines += ["Turn bound = probe passes/request × (probe's pass + load's pass): what a probe takes at most "
                  "if each of its forward passes waits for one pass of the other model and for nothing else (no "
                  "HTTP, tokenizing, or CPU taken by wrk or the machine's other tenants). A p95 near or under "
                  "the bound means the models take turns pass by pass as designed. Where the time went:", ""]
        lines += _table(["probe", "load", "round", "probe passes/request", "probe's pass ms",
                         "load's pass ms (inputs/pass)", "load's pass p95 / max ≤ ms", "turn bound ms",
                         "p95 queue / inference / outside ms",
                         "load inputs/s", "connections by worker", "cores by worker",
                         "server / host cores"],
                        [[r["probe"], r["load"], r["round"], _fmt(r["probe_passes_per_request"]),
                          _fmt(r["probe_pass_ms"]),
                          (f"{_fmt(r['load_pass_ms'])} ({_fmt(r['load_inputs_per_pass'])})" if r["load_pass_ms"]
                           else "–"),
                          (f"{_fmt(r['load_pass_p95_le_ms'], 0)} / {_fmt(r['load_pass_max_le_ms'], 0)}"
                           if r["load_pass_ms"] else "–"),
                          _fmt(r["turn_bound_ms"]),
                          " / ".join(_fmt(r[f"{part}_p95_ms"]) for part in ("queue", "inference", "outside")),
                          _fmt(r["load_inputs_per_s"], 0),
                          _conns(r),
                          _cores(r), f"{_fmt(r['server_cores'], 2)} / {_fmt(r['host_busy_cores'], 2)}"]
                         for r in ordered])
        lines += ["Queue / inference: the server's own x-queue-time and x-inference-time headers (p95 of each, "
                  "separately). The load's pass p95 / max ≤: the forward-pass histogram's bucket bounds that hold "
                  "95 % and all of the load's passes over the run. Outside: the client's time minus the server's "
                  "x-total-time (HTTP, accepting, waiting for a request thread or the CPU). Connections: the "
                  "established TCP connections each worker held mid-run (`ss`), by client (wrk's and the "
                  "probe's); a worker keeps the connections it accepted for as long as they stay open. Cores: CPU "
                  "each worker used over the run; host: the whole machine (wrk, this client and other tenants "
                  "included).", ""]

    rerank = results.get("summary", {}).get("rerank")
    limit = results.get("limit") or {}
    if rerank or limit.get("pairs_per_s"):
        lines += ["## 3. Rerank workload: served and in-process limit", ""]
        throughput = results.get("summary", {}).get("throughput") or []
        rows = [r for r in throughput if r["run"] == "alone" and r["workload"] == "rerank"]
        if rows:
            lines += _table(["round", "requests/s", "pairs/s", "pairs / server CPU-s", "pairs/pass", "mean pass ms",
                             "p50 ms", "p99 ms", "connections by worker", "cores by worker", "server / host cores",
                             "non-2xx / socket errors"],
                            [[r["round"], _fmt(r["requests_per_s"]), _fmt(r["inputs_per_s"]),
                              _fmt(r["inputs_per_server_cpu_s"]),
                              _fmt(r["inputs_per_pass"]), _fmt(r["mean_pass_ms"]), _fmt(r["latency_p50_ms"]),
                              _fmt(r["latency_p99_ms"]), _conns(r), _cores(r),
                              f"{_fmt(r['server_cores'], 2)} / {_fmt(r['host_busy_cores'], 2)}",
                              f"{r['non_2xx']} / {r['socket_errors']}"] for r in rows])
        if limit.get("pairs_per_s"):
            t = limit["pair_tokens"]
            lines += [f"In-process limit: {limit['processes']} forked processes × {limit['threads']} thread, sorted "
                      f"batches of {limit['batch_size']} pairs of the same {limit['pairs']} pairs (tokens a pair: "
                      f"median {t['median']}, p90 {t['p90']}, max {t['max']}), {limit['seconds']:g} s a run: "
                      f"**{_fmt(limit['pairs_per_s'])} pairs/s** (runs: {', '.join(_fmt(r) for r in limit['runs'])}; "
                      f"CPU used: {', '.join(_fmt(c, 2) for c in limit.get('cores', []))} cores; "
                      f"{_fmt(limit.get('pairs_per_cpu_s'))} pairs per CPU-second).", ""]
        if rerank and rerank.get("served_over_limit"):
            lines += [f"Served / limit: median {_fmt(rerank['served_median'])} / {_fmt(rerank['limit_pairs_per_s'])} "
                      f"= **{rerank['served_over_limit']:.2f}**"
                      + (f"; per CPU-second (what the machine's other tenants left each side): "
                         f"{_fmt(rerank['served_pairs_per_cpu_s'])} / {_fmt(rerank['limit_pairs_per_cpu_s'])} = "
                         f"**{rerank['served_over_limit_per_cpu']:.2f}**" if rerank.get("served_over_limit_per_cpu")
                         else "") + ".", ""]

    shares = results.get("summary", {}).get("mixed")
    if shares:
        lines += ["## 4. Mixed workload: each model's share", "",
                  "Both workloads at once (two wrk), beside each alone (same server, same rounds; medians over "
                  "rounds). Forward s/s = seconds of forward passes per second of wall time, summed over the "
                  "workers (at most the worker count).", ""]
        lines += _table(["workload (model)", "alone req/s", "mixed req/s", "alone inputs/s", "mixed inputs/s",
                         "mixed / alone (by round)", "alone forward s/s", "mixed forward s/s",
                         "mixed: share of forward time", "mixed: passes/s", "mixed: mean pass ms (inputs/pass)"],
                        [[f"{s['workload']} ({s['model']})", _fmt(s["alone_requests_per_s"]),
                          _fmt(s["mixed_requests_per_s"]), _fmt(s["alone_inputs_per_s"]), _fmt(s["mixed_inputs_per_s"]),
                          f"**{_fmt(s['mixed_over_alone'], 2)}** ("
                          + ", ".join(_fmt(v, 2) for v in s["mixed_over_alone_by_round"]) + ")",
                          _fmt(s["alone_forward_s_per_s"], 2), _fmt(s["mixed_forward_s_per_s"], 2),
                          _fmt(s["mixed_forward_share"], 2), _fmt(s["mixed_passes_per_s"]),
                          f"{_fmt(s['mixed_mean_pass_ms'])} ({_fmt(s['mixed_inputs_per_pass'])})"] for s in shares])
        total = results["summary"]["mixed_sum_of_shares"]
        lines += [f"Sum of the shares (mixed / alone, both models): **{total:.2f}** "
                  "(1.0: the cores are split without loss).", ""]
        throughput = results.get("summary", {}).get("throughput") or []
        lines += ["Every run:", ""]
        lines += _table(["round", "run", "workload", "req/s", "inputs/s", "inputs / server CPU-s", "forward s/s",
                         "mean pass ms", "inputs/pass", "p50 ms", "p99 ms", "connections by worker (all wrk)",
                         "cores by worker", "server / host cores", "non-2xx / socket errors"],
                        [[r["round"], r["run"], r["workload"], _fmt(r["requests_per_s"]), _fmt(r["inputs_per_s"]),
                          _fmt(r["inputs_per_server_cpu_s"]),
                          _fmt(r["forward_s_per_s"], 2), _fmt(r["mean_pass_ms"]), _fmt(r["inputs_per_pass"]),
                          _fmt(r["latency_p50_ms"]), _fmt(r["latency_p99_ms"]), _conns(r), _cores(r),
                          f"{_fmt(r['server_cores'], 2)} / {_fmt(r['host_busy_cores'], 2)}",
                          f"{r['non_2xx']} / {r['socket_errors']}"]
                         for r in sorted(throughput, key=lambda r: (r["run"], r["workload"], r["round"]))])
    lines += ["Every number, per run: `results.json` beside this file. Rerun: the command above, from the "
              "repository root.", ""]
    return "\n".join(lines)


# -- the command ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20, help="seconds of each wrk run (20)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the served runs (2)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of each warm-up wrk burst (3)")
    parser.add_argument("--baseline-seconds", type=float, default=None,
                        help="seconds of each no-load probe run (default: duration / 4)")
    parser.add_argument("--memory-workers", default="1,2,4", help="worker counts of the memory section (1,2,4)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the served runs (2)")
    parser.add_argument("--embed-connections", type=int, default=32)
    parser.add_argument("--rerank-connections", type=int, default=16)
    parser.add_argument("--mixed-connections", type=int, default=16, help="per wrk in the mixed run")
    parser.add_argument("--quiet-wait", type=float, default=10,
                        help="before each served run, wait up to this many s for the machine's other tenants to "
                             "use under 0.3 cores (10)")
    parser.add_argument("--docs", default="20-100", help="documents per rerank request of the load (20-100)")
    parser.add_argument("--probe-docs", type=int, default=20, help="documents per rerank probe (20)")
    parser.add_argument("--limit-seconds", type=float, default=10)
    parser.add_argument("--limit-repeat", type=int, default=2)
    parser.add_argument("--limit-batch", type=int, default=32)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"which to run ({','.join(SECTIONS)})")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: --duration 5 --rounds 1 --warmup 1 --memory-workers 1,2 --limit-seconds 3 "
                             "--limit-repeat 1 (flags given after it win)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="bench/results/models")
    parser.add_argument("--name", default="", help="the folder's label after the date (default: the host name)")
    parser.add_argument("--render", type=Path, metavar="DIR",
                        help="only write DIR/README.md again from DIR/results.json (no measuring)")
    parser.add_argument("--limit-child", help=argparse.SUPPRESS)
    raw = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in raw:
        quick = ["--duration", "5", "--rounds", "1", "--warmup", "1", "--memory-workers", "1,2",
                 "--limit-seconds", "3", "--limit-repeat", "1"]
        raw = quick + raw
    args = parser.parse_args(raw)
    args.memory_workers = [int(w) for w in args.memory_workers.split(",") if w.strip()]
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    args.docs = parse_docs(args.docs)
    if args.baseline_seconds is None:
        args.baseline_seconds = max(2.0, args.duration / 4)
    if args.duration < 3 or args.rounds < 1 or args.workers < 1 or min(args.memory_workers or [1]) < 1:
        parser.error("--duration >= 3, --rounds, --workers and --memory-workers >= 1")
    return args


def label(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "host"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.limit_child:
        print(json.dumps(limit_child(json.loads(args.limit_child))))
        return 0
    if args.render:
        results = json.loads((args.render / "results.json").read_text())
        results["summary"] = summarize(results)
        (args.render / "README.md").write_text(markdown(results))
        return 0
    from embedder.config import available_cpus

    args.cores = available_cpus()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    name = f"{time.strftime('%Y-%m-%d', time.gmtime())}-{label(args.name or socket.gethostname())}"
    out = Path(args.out_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.tools.models" + "".join(" " + shlex.quote(a) for a in
                                                       (sys.argv[1:] if argv is None else argv))
    log(f"writing {out}/results.json and README.md; {command}")

    reranker = bench_reranker()
    log(f"reranker: {reranker}")
    sentences = stsb.unique_sentences()
    work = Path(tempfile.mkdtemp(prefix="bench-models-"))
    load_bodies = rerank_bodies(sentences, RERANK_BODIES, args.docs, RERANK_SEED)
    files = {
        "rerank": write_jsonl(load_bodies, work / "rerank.jsonl"),
        "rerank_probes": rerank_bodies(sentences, PROBE_BODIES, (args.probe_docs, args.probe_docs), PROBE_SEED),
        "embed_probes": embed_probe_bodies(stsb.sentences(), PROBE_BODIES, PROBE_SEED),
        "embed": write_bodies(EMBED, joined_sentences(), work),
        "embed1": write_bodies(WORKLOADS["embed1"], stsb.sentences(), work),
        "reranker_weights_bytes": weights_bytes(reranker),
    }
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                if k not in ("out_dir", "limit_child", "render")}
    results = {"schema": SCHEMA, "name": name, "command": command, "started": started,
               "machine": machine(args.cores), "settings": settings,
               "reranker": {"path": str(reranker), "note": RERANKER_NOTE, "shape": RERANKER_SHAPE,
                            "weights_bytes": files["reranker_weights_bytes"]},
               "workloads": {"rerank": {"bodies": len(load_bodies), "pairs": sum(len(b["texts"]) for b in load_bodies),
                                        "mean_docs": round(statistics.fmean(len(b["texts"]) for b in load_bodies), 1),
                                        "seed": RERANK_SEED, "docs": list(args.docs)},
                             "embed": {"workload": EMBED.to_dict()}},
               "problems": []}
    lock = threading.Lock()

    def save() -> None:
        with lock:
            results["summary"] = summarize(results)
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    save()
    try:
        if "memory" in args.sections:
            section_memory(args, reranker, files, results, save)
        if "limit" in args.sections or "rerank" in args.sections:
            section_limit(args, reranker, files, results, save)
            if results.get("limit", {}).get("serving_bytes"):
                results["reranker"]["serving_bytes"] = results["limit"]["serving_bytes"]
        if {"latency", "rerank", "mixed"} & set(args.sections):
            section_served(args, reranker, files, results, save)
    finally:
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        save()
        (out / "README.md").write_text(markdown(results))
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    log(f"done: {out}/README.md" + (f"; {len(results['problems'])} problem(s) recorded" if results["problems"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
