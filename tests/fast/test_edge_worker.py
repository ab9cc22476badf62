"""The edge worker's ASGI-to-WSGI bridge without a server (fast): the environ the Flask app sees,
the body read whole before a thread is taken, refusals of slow or oversized bodies (which mark the
connection to linger when it closes), and absolute-form request targets in origin form."""

from __future__ import annotations

import asyncio
import json

import pytest

from embedder.config import Settings
from embedder.edge.worker import WSGIBridge, origin_form


def scope(headers=(), path="/embed", query=b"", method="POST"):
    return {"type": "http", "method": method, "path": path, "query_string": query, "root_path": "",
            "http_version": "1.1", "scheme": "http", "headers": list(headers),
            "server": ("127.0.0.1", 8000), "client": ("10.0.0.1", 5555)}


def serve(bridge, scope_, messages, gap=0.0):
    """Run one request; ``messages`` are the body parts, ``gap`` seconds apart. Returns the status,
    headers and body sent, and whether the app was called."""
    sent, calls = [], []

    async def receive():
        if not messages:
            await asyncio.sleep(3600)
        await asyncio.sleep(gap)
        body, more = messages.pop(0)
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(message):
        sent.append(message)

    inner = bridge.wsgi
    bridge.wsgi = lambda environ, start: (calls.append(environ), inner(environ, start))[1]
    asyncio.run(bridge(scope_, receive, send))
    bridge.wsgi = inner
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"], calls


def echo(environ, start_response):
    keys = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH", "REMOTE_ADDR",
            "SERVER_PORT", "HTTP_ACCEPT", "HTTP_TRANSFER_ENCODING")
    seen = {k: environ.get(k) for k in keys}
    seen["body"] = environ["wsgi.input"].read().decode()
    seen["gone"] = environ["embedder.client_gone"]
    start_response("201 Created", [("Content-Type", "application/json"), ("X-Seen", "1")])
    return [json.dumps(seen, default=str).encode(), b"\n"]


@pytest.fixture
def bridge():
    b = WSGIBridge(echo, Settings(max_body_bytes=100, body_timeout=0.2, body_min_rate=1000), threads=2)
    yield b
    b.pool.shutdown()


def test_the_app_gets_a_pep3333_environ_and_the_whole_body(bridge):
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked"),
               (b"accept", b"a"), (b"accept", b"b")]
    status, out, body, _ = serve(bridge, scope(headers, path="/caf\u00e9", query=b"x=1"),
                                 [(b'{"a":', True), (b' 1}', False)])
    assert status == 201 and out[b"x-seen"] == b"1" and out[b"content-type"] == b"application/json"
    seen = json.loads(body)
    assert seen["REQUEST_METHOD"] == "POST" and seen["PATH_INFO"] == "/caf\u00e9".encode().decode("latin-1")
    assert seen["QUERY_STRING"] == "x=1" and seen["CONTENT_TYPE"] == "application/json"
    assert seen["body"] == '{"a": 1}' and seen["CONTENT_LENGTH"] == "8"
    assert seen["HTTP_TRANSFER_ENCODING"] is None  # the body is whole: it has a length now
    assert seen["HTTP_ACCEPT"] == "a,b" and seen["REMOTE_ADDR"] == "10.0.0.1" and seen["SERVER_PORT"] == "8000"
    assert seen["gone"] is None  # no connection behind this scope


def test_a_body_announced_or_counted_over_the_limit_is_413_without_the_app(bridge):
    for headers, parts in (([(b"content-length", b"101")], []),
                           ([], [(b"x" * 60, True), (b"x" * 60, True)])):
        status, out, body, calls = serve(bridge, scope(headers), parts)
        assert status == 413 and out[b"connection"] == b"close" and not calls
        assert json.loads(body)["error_type"] == "request_entity_too_large"


def test_a_body_too_slow_is_408_without_the_app_one_in_time_is_served(bridge):
    status, _, body, calls = serve(bridge, scope(), [(b"x", True), (b"y", True)], gap=0.3)
    assert status == 408 and not calls
    assert json.loads(body)["error_type"] == "request_timeout"
    status, _, _, calls = serve(bridge, scope(), [(b"x", True), (b"y", False)], gap=0.05)
    assert status == 201 and len(calls) == 1


def test_a_body_that_never_starts_is_408(bridge):
    status, _, _, calls = serve(bridge, scope([(b"content-length", b"5")]), [])
    assert status == 408 and not calls


class _Connection:
    """Stands in for an EdgeProtocol: records the bridge's refused() call."""
    _closed = False
    lingers = False

    def refused(self):
        self.lingers = True


def test_a_refusal_before_the_body_is_read_marks_the_connection_to_linger(bridge):
    for headers, parts, gap, expected in (([(b"content-length", b"101")], [], 0.0, 413),
                                          ([], [(b"x" * 60, True), (b"x" * 60, True)], 0.0, 413),
                                          ([], [(b"x", True), (b"y", True)], 0.3, 408)):
        connection = _Connection()
        s = {**scope(headers), "embedder.connection": connection}
        status, _, _, calls = serve(bridge, s, parts, gap=gap)
        assert status == expected and not calls and connection.lingers
    connection = _Connection()  # served: the body was read whole, nothing to linger for
    status, _, _, _ = serve(bridge, {**scope(), "embedder.connection": connection}, [(b"{}", False)])
    assert status == 201 and not connection.lingers


@pytest.mark.parametrize("target,expected", [
    (b"http://127.0.0.1:8000/embed", b"/embed"),
    (b"HTTPS://example.com/v1/embeddings", b"/v1/embeddings"),
    (b"http://user:pw@host/a%20b/c", b"/a%20b/c"),
    (b"http://host", b"/"),
    (b"http://host:80", b"/"),
    (b"/embed", None),
    (b"*", None),
    (b"ftp://host/embed", None),
    (b"http:///embed", None),  # no authority: not an http URI
    (b"", None),
])
def test_origin_form_of_an_absolute_form_target(target, expected):
    assert origin_form(target) == expected
