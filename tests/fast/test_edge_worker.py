"""The edge worker's ASGI-to-WSGI bridge without a server (fast): the environ the Flask app sees,
the body read whole before a thread is taken, refusals of slow or oversized bodies (which mark the
connection to linger when it closes), absolute-form request targets in origin form; and bounded
sending: a body sent and read from the app in pieces, a connection not read while its client does
not take its answer, the send deadline, and the connection limit counting such connections."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import sys
import types

import pytest
from gunicorn.config import Config

from embedder.config import Settings
from embedder.edge.worker import SEND_BUFFER_BYTES, EdgeProtocol, EdgeWorker, WSGIBridge, origin_form


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


# --- bounded sending ------------------------------------------------------------------------------

class _Body:
    """A streamed WSGI body (a file's, say): ``count`` chunks of ``size`` bytes, counting how many
    were read and whether ``close()`` was called."""

    def __init__(self, count: int, size: int):
        self.count, self.size, self.read, self.closed = count, size, 0, 0

    def __iter__(self):
        for i in range(self.count):
            self.read += 1
            yield bytes([i % 256]) * self.size

    def close(self):
        self.closed += 1


def stream(body, connection=None):
    """Serve a GET whose app answers with ``body`` (an iterable); the messages sent, and for each
    body message how many chunks the app had been asked for when it was sent."""
    bridge = WSGIBridge(lambda environ, start: (start("200 OK", [("Content-Type", "text/plain")]), body)[1],
                        Settings(), threads=2)
    sent, read_at = [], []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)
        read_at.append(getattr(body, "read", None))
        if connection is not None and message["type"] == "http.response.body":
            connection._closed = True  # the client goes away after the first piece

    s = scope(method="GET", path="/docs/swagger-ui-bundle.js")
    if connection is not None:
        s["embedder.connection"] = connection
    asyncio.run(bridge(s, receive, send))
    bridge.pool.shutdown(wait=True)  # a close() handed to a request thread has run
    return sent, read_at


def test_a_streamed_body_is_read_and_sent_a_bounded_piece_at_a_time():
    body = _Body(count=400, size=1000)  # 400 kB, as a file wrapper yields it
    sent, read_at = stream(body)
    start, pieces = sent[0], sent[1:]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert b"".join(p["body"] for p in pieces) == b"".join(bytes([i % 256]) * 1000 for i in range(400))
    assert all(len(p["body"]) <= SEND_BUFFER_BYTES // 2 for p in pieces) and len(pieces) > 10
    assert [p["more_body"] for p in pieces] == [True] * (len(pieces) - 1) + [False]
    # Never read ahead of what is sent by more than a piece (and its last chunk): not whole at once.
    sent_bytes = 0
    for piece, read in zip(pieces, read_at[1:]):
        sent_bytes += len(piece["body"])
        assert read * 1000 <= sent_bytes + SEND_BUFFER_BYTES // 2 + 1000
    assert body.closed == 1


def test_one_large_chunk_goes_out_in_pieces():
    sent, _ = stream([b"x" * (5 * SEND_BUFFER_BYTES + 7)])
    pieces = [m["body"] for m in sent[1:]]
    assert b"".join(pieces) == b"x" * (5 * SEND_BUFFER_BYTES + 7)
    assert [len(p) for p in pieces if p] == [SEND_BUFFER_BYTES // 2] * 10 + [7]
    assert sent[-1]["more_body"] is False


def test_a_client_gone_mid_body_stops_the_reading_and_closes_the_body():
    body = _Body(count=1000, size=1000)
    connection = _Connection()
    sent, _ = stream(body, connection)
    assert len(sent) == 2  # the start and one piece: nothing more is read or sent for nobody
    assert body.read < 100 and body.closed == 1


class _Transport:
    """Stands in for an asyncio transport; the test sets how many bytes wait for the client."""

    def __init__(self):
        self.unsent, self.reading, self.aborted, self.closed, self.options = 0, True, False, False, {}

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000),
                "socket": self}.get(name, default)

    def set_write_buffer_limits(self, high=None, low=None):
        self.high = high

    def get_write_buffer_size(self):
        return self.unsent

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def setsockopt(self, level, option, value):
        self.options[(level, option)] = value

    def abort(self):
        self.aborted = True

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.aborted or self.closed

    def can_write_eof(self):
        return True

    def write_eof(self):
        pass

    def write(self, data):
        pass


LINGER = (socket.SOL_SOCKET, socket.SO_LINGER)
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close with a reset


def connected(test):
    """Run ``test(connection, transport)`` on an EdgeProtocol connected to a stand-in transport,
    in an event loop, with a stand-in worker."""
    async def run():
        worker = types.SimpleNamespace(
            cfg=Config(), log=logging.getLogger("test_edge_worker"), asgi=None,
            loop=asyncio.get_running_loop(), nr_conns=0, nr=0, max_requests=sys.maxsize, alive=True,
            stopping=False, settings=Settings(), connections={}, admit=lambda connection: None)
        connection, transport = EdgeProtocol(worker), _Transport()
        connection.connection_made(transport)
        try:
            test(connection, transport)
        finally:
            connection.connection_lost(None)
    asyncio.run(run())


def test_a_client_that_does_not_take_its_answer_is_not_read_meanwhile():
    def test(connection, transport):
        assert transport.high == SEND_BUFFER_BYTES // 2
        # The kernel queues no more than that, not yet sent (it would, up to tcp_wmem's 4 MiB).
        assert transport.options[(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)] == SEND_BUFFER_BYTES
        assert not connection.waits_on_client and transport.reading
        connection.pause_writing()  # the transport is over its high-water mark
        assert connection.waits_on_client and not transport.reading
        connection.resume_writing()
        assert not connection.waits_on_client and transport.reading
    connected(test)


def test_the_send_deadline_counts_from_the_last_byte_the_client_took():
    def test(connection, transport):
        transport.unsent = 5000
        connection.check_send(100.0, 10)  # first seen owed: the deadline is 110
        connection.check_send(109.0, 10)
        assert not transport.aborted
        transport.unsent = 4000  # the client took some: now 120
        connection.check_send(110.0, 10)
        connection.check_send(119.5, 10)
        assert not transport.aborted
        connection.resume_writing()  # drained, and refilled as much by the next piece: now 125
        connection.check_send(125.0, 10)
        connection.check_send(134.0, 10)
        assert not transport.aborted and not connection._closed
        connection.check_send(135.0, 10)
        assert transport.aborted and not transport.closed and connection._closed
        assert transport.options[LINGER] == RESET  # the answer was cut; the kernel frees its part
    connected(test)


def test_a_connection_with_nothing_owed_has_no_send_deadline():
    def test(connection, transport):
        for now in (0.0, 100.0, 1000.0):
            connection.check_send(now, 10)
        assert not transport.aborted
    connected(test)


def test_closed_to_make_room_a_connection_drops_what_its_client_did_not_take():
    def test(connection, transport):
        transport.unsent = 1
        connection.close_idle()
        assert transport.aborted and transport.options[LINGER] == RESET
    connected(test)

    def test(connection, transport):  # nothing owed: an ordinary close
        connection.close_idle()
        assert transport.closed and not transport.aborted and LINGER not in transport.options
    connected(test)


def test_over_the_limit_the_oldest_connection_not_computing_is_closed():
    """A connection waiting on its client to take an answer holds no request being computed: it
    counts for the limit, and is closed to make room before any busy one."""
    class Conn:
        def __init__(self, waits=False):
            self.idle, self.waits_on_client, self.closed = False, waits, False

        def close_idle(self):
            self.closed = True

    worker = EdgeWorker.__new__(EdgeWorker)  # no process: only what admit() reads
    worker.cfg, worker.connections = types.SimpleNamespace(worker_connections=2), {}
    worker.loop, worker._send_checks = types.SimpleNamespace(call_later=lambda *args: "timer"), None
    busy, waiting, new = Conn(), Conn(waits=True), Conn()
    worker.admit(busy)
    worker.admit(waiting)
    assert not busy.closed and not waiting.closed
    worker.admit(new)
    assert waiting.closed and not busy.closed and list(worker.connections) == [busy, new]
