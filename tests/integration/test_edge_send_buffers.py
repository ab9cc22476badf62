"""Clients that never read their answers, through a real server (issue 24's row: 300 clients that
pipeline 4 GETs of the 1.7 MB Swagger bundle and never read grew the worker by 964 MiB, kept after
they left; none was closed in 40 s; with 50 of them SIGTERM waited 31 s). What a connection holds
for its client is bounded (the edge worker's ``SEND_BUFFER_BYTES``), the server keeps answering
others, a connection whose client takes nothing for ``EMBEDDER_SEND_TIMEOUT`` seconds is closed
(reset), such connections count for the connection limit and are closed to make room, and SIGTERM
does not wait for them."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from bench.harness.servers import Gunicorn
from embedder.http.docs_page import ASSET_DIR

pytestmark = pytest.mark.integration
SEND_TIMEOUT = 6  # seconds: short, so that the test sees the deadline pass
#: Most the worker may grow with 300 such clients (issue 24: at most ~150 MiB per worker).
GROWTH_MIB = 150


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _sockets(pid: int) -> int:
    """Sockets the process holds open (its listener, its connections)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return count


def _bundle(srv) -> tuple[bytes, int]:
    """The Swagger bundle's path, as the /docs page loads it, and its whole response's size."""
    page = requests.get(srv.url + "/docs", timeout=30).text
    path = re.search(r'src="([^"]*swagger-ui-bundle\.js)"', page).group(1)
    r = requests.get(srv.url + path, timeout=60)
    # Streamed a piece at a time, it arrives whole: the file Swagger UI's package ships.
    assert r.status_code == 200 and r.content == (Path(ASSET_DIR) / "swagger-ui-bundle.js").read_bytes()
    assert len(r.content) > 1_000_000
    return path.encode(), len(r.content)


def _never_reading(srv, path: bytes, count: int) -> list[socket.socket]:
    """``count`` clients, each with a small receive buffer, that pipeline 4 GETs of ``path`` and
    never read."""
    request = b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    clients = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        sock.sendall(request * 4)
        clients.append(sock)
    return clients


def _read_until_closed(sock: socket.socket, timeout: float = 30) -> tuple[int, str]:
    """Read what the client was sent until the server closes: (bytes, "reset" or "eof"); "open"
    if the server still holds the connection open after ``timeout`` s without a byte."""
    sock.settimeout(timeout)
    got = 0
    try:
        while chunk := sock.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        return got, "reset"
    except TimeoutError:
        return got, "open"
    return got, "eof"


@pytest.fixture(scope="module")
def srv():
    with Gunicorn(workers=1, env={"EMBEDDER_SEND_TIMEOUT": str(SEND_TIMEOUT)}) as server:
        yield server


def test_300_clients_that_never_read_are_bounded_and_closed_after_the_send_deadline(srv):
    path, size = _bundle(srv)
    worker = srv.worker_pids()[0]
    before, sockets = _rss_mib(worker), _sockets(worker)
    peak, stop = [before], threading.Event()

    def sample():
        while not stop.is_set():
            peak.append(_rss_mib(worker))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        began = time.monotonic()
        clients = _never_reading(srv, path, 300)
        # Others are answered meanwhile, a sentence and the bundle itself.
        r = requests.post(srv.url + "/embed", json={"inputs": "still served"}, timeout=30)
        assert r.status_code == 200 and len(r.json()[0]) == 384
        assert len(requests.get(srv.url + path.decode(), timeout=60).content) == size
        assert _sockets(worker) >= sockets + 300  # they are all connected
        # Past the deadline (checked each second), the worker lets every one of them go.
        deadline = began + SEND_TIMEOUT + 60
        while _sockets(worker) > sockets and time.monotonic() < deadline:
            time.sleep(0.2)
        closed_after = time.monotonic() - began
    finally:
        stop.set()
        sampler.join()
    growth = max(peak) - before
    print(f"300 clients that never read: worker RSS {before:.0f} MiB, peak +{growth:.0f} MiB; "
          f"all closed {closed_after:.1f} s after they connected (send timeout {SEND_TIMEOUT} s)")
    assert _sockets(worker) <= sockets, "connections still open long past the send deadline"
    assert growth < GROWTH_MIB, f"the worker grew by {growth:.0f} MiB with 300 clients"
    outcomes = [_read_until_closed(sock) for sock in clients]
    for sock in clients:
        sock.close()
    # Reset, each having got less than its 4 answers (their rest was dropped); none still open.
    assert all(state == "reset" for _, state in outcomes), {s for _, s in outcomes}
    assert all(got < 4 * size for got, _ in outcomes)
    time.sleep(1)
    print(f"after they left: +{_rss_mib(worker) - before:.0f} MiB")
    assert _rss_mib(worker) - before < GROWTH_MIB
    assert requests.get(srv.url + "/health", timeout=30).status_code == 200


def test_such_clients_count_for_the_limit_and_sigterm_does_not_wait_for_them():
    """50 of them fill a 50-connection limit: a new client is served, and the oldest of them is
    closed to make room. Then SIGTERM: the server exits at once, though their send deadline (60 s)
    is twice the graceful timeout (30 s)."""
    env = {"EMBEDDER_MAX_CONNECTIONS": "50", "EMBEDDER_SEND_TIMEOUT": "60"}
    with Gunicorn(workers=1, env=env) as server:
        path, size = _bundle(server)
        clients = _never_reading(server, path, 50)
        time.sleep(3)  # each one's answer has started, and waits for it
        with requests.Session() as http:  # one connection for both: 51 connections in all
            assert http.get(server.url + "/health", timeout=30).status_code == 200
            assert http.post(server.url + "/embed", json={"inputs": "x"}, timeout=30).status_code == 200
        got, state = _read_until_closed(clients[0])
        assert state == "reset" and got < 4 * size
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        took = time.monotonic() - began
        print(f"SIGTERM with 49 clients that never read: {took:.1f} s")
        assert took < 10, f"SIGTERM took {took:.1f} s"
        for sock in clients:
            sock.close()
