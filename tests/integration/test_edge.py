"""What faces clients at the edge, through a real server (conftest's 2-worker default server):
inputs with no content are refused like empty ones, and the access log Gunicorn writes holds no
secret a client sent (user names, query values, credential headers)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from raw_http import exchange

pytestmark = pytest.mark.integration
SECRET = "sk-edge-9f31c2"


@pytest.mark.parametrize("path,body", [
    ("/embed", {"inputs": [" \t\n"]}),
    ("/embed", {"inputs": ["ok", "\u0000"]}),
    ("/embed", {"inputs": "\u200b\u200d\ufeff"}),
    ("/v1/embeddings", {"input": ["\u3000\u2028"]}),
])
def test_inputs_without_content_are_422(server, path, body):
    r = requests.post(server.url + path, json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert "no content" in r.text


def test_the_access_log_holds_no_secret(server):
    r = requests.post(f"{server.url}/embed?api_key={SECRET}", json={"inputs": "hello"}, timeout=30,
                      auth=(f"user-{SECRET}", "pw"), headers={"X-Api-Key": SECRET,
                                                             "Referer": f"http://x/?token={SECRET}"})
    assert r.status_code == 200
    deadline = time.monotonic() + 10  # Gunicorn writes the line after the response
    while "/embed?api_key=" not in server.access_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = server.access_log.read_text()
    assert "/embed?api_key=[redacted]" in text and '"POST' in text
    assert SECRET not in text


def test_a_chunked_body_over_the_limit_is_413(server):
    """5 MiB sent chunked (no Content-Length) against the 4 MiB default: 413, never a body cut at
    the limit and answered 200; the server keeps serving."""
    def chunks():
        yield b'{"inputs": "'
        for _ in range(5 * 16):
            yield b"x " * 32 * 1024
        yield b'"}'

    r = requests.post(server.url + "/embed", data=chunks(), timeout=60,
                      headers={"Content-Type": "application/json"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 413 and r.json()["error_type"] == "request_entity_too_large"
    assert requests.post(server.url + "/embed", json={"inputs": "still fine"}, timeout=60).status_code == 200


def _raw(server, request: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes, read the whole answer (Gunicorn closes after an error)."""
    return exchange(server.port, request, timeout=30)


@pytest.mark.parametrize("request_bytes,status,code", [
    (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431,
     "request_header_fields_too_large"),
    (b"POST /embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: bogus\r\n\r\n", 501,
     "not_implemented"),
], ids=["400", "414", "431", "501"])
def test_gunicorns_own_errors_are_json(server, request_bytes, status, code):
    got, headers, body = _raw(server, request_bytes)
    assert got == status, body
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    answer = json.loads(body)
    assert answer["error_type"] == code and answer["error"], answer
    assert b"<html" not in body
    assert requests.post(server.url + "/embed", json={"inputs": "still fine"}, timeout=60).status_code == 200


def _dropped(server) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(server.url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "embedder_dropped_inputs_total" and s.labels.get("reason") == "client_gone")


def test_heavy_requests_whose_clients_leave_do_not_hold_up_single_sentences(server, stsb):
    """Two requests of 256 long inputs whose clients hang up after 0.5 s: their queued inputs are
    dropped before the model (counted), no pass runs longer than ~0.25 s by the cost model, and
    single sentences sent meanwhile are answered 200 with p95 under 2 s."""
    import socket
    import statistics
    import threading

    long_text = " ".join(s for _, s, _ in stsb[:60])[:1000]
    body = json.dumps({"inputs": [long_text] * 256}).encode()
    head = f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    dropped = _dropped(server)
    heavy = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(2)]
    for sock in heavy:
        sock.sendall(head.encode() + body)
    latencies, statuses = [], []

    def probe():
        with requests.Session() as http:
            for i in range(24):
                began = time.monotonic()
                r = http.post(server.url + "/embed", json={"inputs": stsb[i][1]}, timeout=30)
                latencies.append(time.monotonic() - began)
                statuses.append(r.status_code)
                time.sleep(0.2)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.5)
    pending = 0  # heavy requests still waiting (one may have been refused at once: 429 by deadline)
    for sock in heavy:
        sock.setblocking(False)
        try:
            answered = sock.recv(65536)
        except BlockingIOError:
            answered = b""
        pending += not answered
        assert not answered or answered.startswith(b"HTTP/1.1 429"), answered[:200]
        sock.close()  # the client hangs up
    prober.join(120)
    assert statuses == [200] * 24, statuses
    p95 = statistics.quantiles(latencies, n=20)[-1]
    assert p95 < 2.0, sorted(latencies)
    # Most of each abandoned request's 256 inputs never reached the model (a worker runs some tens
    # of these long inputs in the 0.6 s before it notices).
    assert pending >= 1
    deadline = time.monotonic() + 10
    while _dropped(server) - dropped < 150 * pending and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _dropped(server) - dropped >= 150 * pending


def test_stalled_and_slow_clients_do_not_take_the_service(server):
    """1,000 connections that send nothing, 200 that trickle header lines and 200 that trickle a
    body, from one client, held (reopened when closed) for 20 s: every single sentence another
    client POSTs meanwhile is answered 200, p95 under 2 s; the read deadlines close every kind."""
    from bench.tools import stall

    got = stall.run(server.url, idle=1000, slow_headers=200, slow_bodies=200, seconds=20)
    assert got["probes"] >= 40 and got["statuses"] == {200: got["probes"]}, got
    assert got["p95_s"] < 2, got
    attack = got["attack"]
    assert attack["open_max"] >= 1300, attack  # the attack really held its connections
    assert set(attack["closed_by_server"]) == set(stall.KINDS), attack  # 10 s deadlines hit each kind
    assert requests.post(server.url + "/embed", json={"inputs": "after"}, timeout=30).status_code == 200


@pytest.fixture(scope="module")
def tight_server():
    """One worker with short read deadlines and room for 20 connections."""
    from bench.harness.servers import Gunicorn

    env = {"EMBEDDER_HEADER_TIMEOUT": "1", "EMBEDDER_BODY_TIMEOUT": "1", "EMBEDDER_BODY_MIN_RATE": "100",
           "EMBEDDER_MAX_CONNECTIONS": "20"}
    with Gunicorn(workers=1, env=env) as srv:
        yield srv


def _read_all(sock) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_headers_that_do_not_arrive_in_time_get_408_and_the_connection_closes(tight_server):
    import socket

    for sent in (b"", b"POST /embed HTTP/1.1\r\nHost: x\r\n"):  # nothing; half the headers
        with socket.create_connection(("127.0.0.1", tight_server.port), timeout=10) as sock:
            began = time.monotonic()
            sock.sendall(sent)
            data = _read_all(sock)
            assert 0.8 < time.monotonic() - began < 5
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert json.loads(data.partition(b"\r\n\r\n")[2])["error_type"] == "request_timeout"


def test_a_body_slower_than_the_minimum_rate_gets_408_one_faster_is_served(tight_server):
    import socket

    body = json.dumps({"inputs": "a body sent slowly " * 30}).encode()
    head = (f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", tight_server.port), timeout=10) as sock:
        sock.sendall(head + body[:1])  # then nothing: 1 s + 1/100 s allowed
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"did not arrive in time" in data
    with socket.create_connection(("127.0.0.1", tight_server.port), timeout=10) as sock:
        sock.sendall(head)  # and no body at all
        assert _read_all(sock).startswith(b"HTTP/1.1 408 ")
    with socket.create_connection(("127.0.0.1", tight_server.port), timeout=10) as sock:
        sock.sendall(head)
        for i in range(0, len(body), 60):  # 120 bytes/s for ~5 s, past the 1 s: over the minimum rate
            time.sleep(0.5)
            sock.sendall(body[i:i + 60])
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 200 "), data[:300]


def test_a_body_announced_over_the_limit_is_413_before_it_is_sent(tight_server):
    import socket

    with socket.create_connection(("127.0.0.1", tight_server.port), timeout=10) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 99999999\r\n\r\n")
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 413 "), data
    assert json.loads(data.partition(b"\r\n\r\n")[2])["error_type"] == "request_entity_too_large"


def test_over_the_connection_limit_the_oldest_idle_connection_is_closed(tight_server):
    import socket

    idle = [socket.create_connection(("127.0.0.1", tight_server.port), timeout=10) for _ in range(25)]
    try:
        time.sleep(0.3)
        closed = []
        for i, sock in enumerate(idle):
            sock.setblocking(False)
            try:
                closed.append(i) if sock.recv(1) == b"" else None
            except BlockingIOError:
                pass
            except OSError:
                closed.append(i)
        assert closed and closed == list(range(len(closed))), closed  # the oldest ones, in order
        assert len(closed) >= 5
        r = requests.post(tight_server.url + "/embed", json={"inputs": "room for me"}, timeout=10)
        assert r.status_code == 200
    finally:
        for sock in idle:
            sock.close()
