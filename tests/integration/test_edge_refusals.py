"""Answers below the app, through a real server: refusals that arrive (a lingering close after
answering before the body was read, so a client that sends its whole body before reading, as
Python's ``urllib`` does, reads the answer instead of a reset; and its bounds), absolute-form
request targets served as their origin form, and upgrades answered in JSON."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import requests

from embedder.edge.worker import LINGER_BYTES, LINGER_SECONDS
from raw_http import exchange

pytestmark = pytest.mark.integration
KEY = "edge-refusals-key"
LIMIT = 4 * 1024 * 1024  # EMBEDDER_MAX_BODY_BYTES' default




def _post(target: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n" % len(body) + extra + b"\r\n" + body)


def _urlopen(url: str, data, headers=None) -> tuple[int, dict]:
    """POST through urllib (the whole body is sent before the answer is read); (status, JSON)."""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/json", e.headers
        return e.code, json.loads(e.read())


def _big(size: int) -> bytes:
    return b'{"inputs": "' + b"x" * (size - 14) + b'"}'


# --- refusals that arrive --------------------------------------------------------------------------

def test_urllib_reads_the_413_of_a_body_over_the_limit(server):
    """Content-Length 1 MB over the limit, through urllib: the 413 in JSON every time (before: a
    connection reset, 4 of 4). Chunked (no Content-Length, counted as it arrives) too."""
    body = _big(LIMIT + 1_000_000)
    for _ in range(5):
        status, answer = _urlopen(server.url + "/embed", body)
        assert status == 413 and answer["error_type"] == "request_entity_too_large", answer
    parts = [body[i:i + 256 * 1024] for i in range(0, len(body), 256 * 1024)]
    status, answer = _urlopen(server.url + "/embed", iter(parts))  # Transfer-Encoding: chunked
    assert status == 413 and answer["error_type"] == "request_entity_too_large", answer
    assert requests.post(server.url + "/embed", json={"inputs": "still fine"}, timeout=60).status_code == 200


@pytest.fixture(scope="module")
def keyed_server():
    """One worker with an API key set."""
    from bench.harness.servers import Gunicorn

    with Gunicorn(workers=1, env={"EMBEDDER_API_KEY": KEY}) as srv:
        yield srv


def test_urllib_reads_the_401_of_a_large_body_and_the_413_of_one_over_the_limit(keyed_server):
    for _ in range(3):
        status, answer = _urlopen(keyed_server.url + "/embed", _big(LIMIT - 100_000))
        assert status == 401 and answer["error_type"] == "auth", answer
        status, answer = _urlopen(keyed_server.url + "/embed", _big(LIMIT + 1_000_000))
        assert status == 413 and answer["error_type"] == "request_entity_too_large", answer
    status, _ = _urlopen(keyed_server.url + "/embed", b'{"inputs": "ok"}', {"Authorization": f"Bearer {KEY}"})
    assert status == 200


def _refused_then_keep_sending(port: int, chunk: int, pause: float) -> tuple[bytes, float, int]:
    """Announce a body far over the limit, then send ``chunk`` bytes every ``pause`` s until the
    server closes the connection: (the answer read, seconds until the close, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000\r\n\r\n")
        began, sent, answer, payload = time.monotonic(), 0, b"", b"x" * chunk
        while time.monotonic() - began < 30:
            try:
                sock.sendall(payload)
            except OSError:  # reset or broken pipe: the server has closed
                break
            sent += chunk
            sock.setblocking(False)
            try:
                answer += sock.recv(65536)  # the 413, then the end of the server's side
            except BlockingIOError:
                pass
            except OSError:
                break
            sock.setblocking(True)
            sock.settimeout(10)
            time.sleep(pause)
        return answer, time.monotonic() - began, sent
    finally:
        sock.close()


def test_a_client_that_keeps_sending_is_closed_after_the_linger_bounds(keyed_server):
    """Refused at once (413), the client sends on: at ~1 MB/s the connection is closed after
    LINGER_SECONDS; as fast as it can, after about LINGER_BYTES; the 413 was sent first."""
    answer, seconds, sent = _refused_then_keep_sending(keyed_server.port, 64 * 1024, 0.05)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert LINGER_SECONDS - 0.5 < seconds < LINGER_SECONDS + 4, seconds
    answer, seconds, sent = _refused_then_keep_sending(keyed_server.port, 1024 * 1024, 0)
    assert seconds < LINGER_SECONDS, seconds
    assert LINGER_BYTES * 0.9 < sent < LINGER_BYTES + 32 * 1024 * 1024, sent  # plus socket buffers
    r = requests.get(keyed_server.url + "/health", timeout=10)
    assert r.status_code == 200


# --- absolute-form request targets ---------------------------------------------------------------

def test_an_absolute_form_target_is_served_as_its_origin_form(server):
    body = json.dumps({"inputs": ["absolute form", "RFC 9112 section 3.2.2"]}).encode()
    origin = exchange(server.port, _post(b"/embed", body))
    absolute = exchange(server.port, _post(f"http://127.0.0.1:{server.port}/embed".encode(), body))
    assert origin[0] == absolute[0] == 200, absolute
    assert np.allclose(json.loads(absolute[2]), json.loads(origin[2]), atol=1e-6, rtol=0)
    openai = exchange(server.port, _post(b"HTTPS://example.com/v1/embeddings", b'{"input": "x"}'))
    assert openai[0] == 200 and json.loads(openai[2])["object"] == "list", openai
    for target in (b"http://localhost/health", b"http://localhost/health?probe=1"):
        status, headers, answer = exchange(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: other\r\n"
                                                   b"Connection: close\r\n\r\n")
        assert status == 200 and json.loads(answer) == {"status": "ok"}, answer
    assert exchange(server.port, b"GET ftp://localhost/health HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n")[0] == 404


def test_an_absolute_form_target_leaves_no_secret_in_the_access_log(server):
    secret = "sk-absolute-51aa"
    status, _, _ = exchange(server.port, f"GET http://user-{secret}:pw@127.0.0.1/health?api_key={secret} "
                                     "HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status == 200
    deadline = time.monotonic() + 10
    while "api_key=[redacted]" not in server.access_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = server.access_log.read_text()
    assert "GET http://[redacted]@127.0.0.1/health?api_key=[redacted]" in text
    assert secret not in text


# --- upgrades ----------------------------------------------------------------------------------------

WS = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


@pytest.mark.parametrize("request_bytes", [
    WS + b"Sec-WebSocket-Version: 13\r\n\r\n",
    WS + b"Sec-WebSocket-Version: 8\r\n\r\n",  # Gunicorn's own answer would be 426
    WS.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short") + b"Sec-WebSocket-Version: 13\r\n\r\n",
    WS.replace(b"GET / ", b"GET /embed ").replace(b"websocket", b"WebSocket")
    + b"Sec-WebSocket-Version: 13\r\n\r\n",
], ids=["v13", "v8", "bad-key", "on-a-route"])
def test_a_websocket_upgrade_is_refused_in_json(server, request_bytes):
    status, headers, body = exchange(server.port, request_bytes, timeout=15)
    assert status == 400, body
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    answer = json.loads(body)
    assert set(answer) == {"error", "error_type"} and answer["error_type"] == "bad_request", answer
    assert "WebSocket" in answer["error"]


def test_other_upgrades_are_ignored_and_served_over_http_1_1(server):
    """``Upgrade: h2c`` (not offered) and an unknown token: the request is served as HTTP/1.1, as
    RFC 9110 section 7.8 allows. A POST that asks for WebSocket (not a handshake: RFC 6455 wants
    a GET) reaches the app, whose router refuses a WebSocket request on an HTTP route: 400, JSON."""
    status, _, body = exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
                                        b"Connection: Upgrade, HTTP2-Settings, close\r\n"
                                        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: foo/2\r\n"
                                        b"Connection: Upgrade, close\r\n\r\n")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    body = b'{"inputs": "x"}'
    status, headers, answer = exchange(server.port, b"POST /embed HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                                b"Connection: Upgrade, close\r\nContent-Type: application/json\r\n"
                                                b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert status == 400 and headers["content-type"] == "application/json", answer
    assert json.loads(answer)["error_type"] == "bad_request"


# --- the bad-input battery through urllib ------------------------------------------------------------

def _battery() -> list[tuple[str, str, bytes | None, dict, int]]:
    """(method, path, body, headers, status): what a new user or an attacker sends, each refused."""
    too_many = json.dumps({"inputs": ["a"] * 257}).encode()
    too_long = json.dumps({"inputs": "word " * 4001}).encode()
    return [
        ("POST", "/embed", b"{not json", {}, 400),
        ("POST", "/embed", b"[1, 2]", {}, 422),
        ("POST", "/embed", b'{"inputs": []}', {}, 422),
        ("POST", "/embed", b'{"inputs": "   "}', {}, 422),
        ("POST", "/embed", b'{"inputs": 42}', {}, 422),
        ("POST", "/embed", too_many, {}, 422),
        ("POST", "/embed", too_long, {}, 422),
        ("POST", "/embed", b'{"inputs": "word ' + b"word " * 300 + b'", "truncate": false}', {}, 422),
        ("POST", "/embed", b'{"inputs": "a", "dimensions": 9999}', {}, 422),
        ("POST", "/embed", b'{"inputs": "a", "truncation_direction": "left"}', {}, 422),
        ("POST", "/embed", b'{"inputs": "a"}', {"Content-Type": "text/plain"}, 415),
        ("POST", "/embed", _big(LIMIT + 100_000), {}, 413),
        ("POST", "/v1/embeddings", b'{"model": "no-such-model", "input": "a"}', {}, 404),
        ("POST", "/v1/embeddings", b'{"model": "all-MiniLM-L6-v2", "input": [[1, 2, 3]]}', {}, 422),
        ("POST", "/v1/embeddings", b'{"input": "a", "encoding_format": "int8"}', {}, 422),
        ("POST", "/tokenize", json.dumps({"inputs": ["a " * 10_000] * 7}).encode(), {}, 422),
        ("POST", "/decode", b'{"ids": [[-1]]}', {}, 422),
        ("POST", "/rerank", b'{"query": "q", "texts": ["a"]}', {}, 404),
        ("POST", "/similarity", b'{"inputs": {"source_sentence": "a"}}', {}, 422),
        ("GET", "/embed", None, {}, 405),
        ("POST", "/no/such/route", b"{}", {}, 404),
    ]


def test_the_bad_input_battery_through_urllib_is_read_as_json_and_never_reset(server):
    """Python's urllib sends the whole body before it reads: every refusal is read whole, as JSON
    with its status, not a reset or a 500; the server serves normally afterwards."""
    seen = []
    for method, path, body, headers, status in _battery():
        req = urllib.request.Request(server.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                got, answer = r.status, r.read()
        except urllib.error.HTTPError as e:
            got, answer = e.code, e.read()
            assert e.headers["Content-Type"] == "application/json", (path, e.headers)
        seen.append((method, path, status, got, answer[:200]))
        assert "error" in json.loads(answer), answer[:300]
    wrong = [s for s in seen if s[2] != s[3]]
    assert not wrong, wrong
    assert requests.post(server.url + "/embed", json={"inputs": "still fine"}, timeout=60).status_code == 200
