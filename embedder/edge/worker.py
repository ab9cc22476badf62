"""The Gunicorn worker that faces clients: asyncio connections in front of the Flask app's threads.

Gunicorn's ``gthread`` worker hands a connection to a request thread as soon as it is accepted, and
the thread then blocks reading the request: a few hundred clients that connect and send nothing, or
trickle their headers or body (slowloris), hold every thread and the service stops for everyone.
Here Gunicorn's own asyncio worker and HTTP/1.1 protocol (``gunicorn.workers.gasgi``) read every
connection in one event loop, and a request reaches one of the ``threads`` request threads (the
unchanged Flask app, which tokenizes and waits on the batcher) only once its headers and whole
body have arrived. A stalled connection costs memory, not a thread, and within limits:

- **headers**: a new connection has ``header_timeout`` seconds to send its first request's headers
  (and as long again for a TLS handshake before them);
  a kept-alive one has Gunicorn's ``keepalive`` seconds for the next request's. Then 408, closed.
- **body**: it must arrive within ``body_timeout`` seconds plus one second per ``body_min_rate``
  bytes received (Apache's ``mod_reqtimeout`` rule: a client slower than that rate runs out of
  time, a faster one never does). Then 408, closed. Over ``max_body_bytes``, announced or counted
  as it arrives (chunked): 413, closed, the rest never read.
- **connections**: at most ``max_connections`` per worker (Gunicorn's ``worker_connections``); a new
  one over that closes the oldest connection that is not running a request.
- **lingering close**: a connection closed right after a refusal that came before its request was
  read whole (408, 413, the parser's 400/414/431/501, a WebSocket upgrade's 400) is not closed at
  once: the answer goes out, then a FIN, and what the client still sends is read and dropped, in
  the event loop, until it closes its side, for at most :data:`LINGER_SECONDS` in all,
  :data:`LINGER_IDLE_SECONDS` without data and :data:`LINGER_BYTES` (nginx's ``lingering_close``,
  ``lingering_time``, ``lingering_timeout``). A client that sends its whole body before reading
  (Python's ``urllib``) then reads the answer instead of a connection reset. Such a connection
  stays in the connection list (it counts for the limit, and is the first closed to make room).
- **sending**: what a connection holds for a client that does not read is bounded
  (:data:`SEND_BUFFER_BYTES`): a body goes out in pieces, each written once the bytes queued
  before it are under the transport's high-water mark; a body the app streams (a file: the Swagger
  assets) is read from it a piece at a time, never whole; the next request on the connection,
  pipelined or not, is served only after its previous response is written; reading stops while
  writing is paused (uvicorn's and h11's flow control). A connection whose client takes none of
  its bytes for ``send_timeout`` seconds is closed, its unsent bytes dropped (nginx's
  ``send_timeout``); while the worker shuts down, after one :data:`SEND_CHECK_SECONDS` without a
  byte taken. One waiting on its client holds no request being computed: it counts for the
  connection limit and can be closed to make room.
- **stopping** (SIGTERM: a reload, a scale-down, a shutdown): the worker stops accepting, and each
  of its connections closes only where its client knows: a response that starts from then on says
  ``Connection: close`` and the connection closes after it; a kept-alive connection stays open for
  its client's next request (answered so) until Gunicorn's ``keepalive`` seconds pass without one.
  Closing an idle kept-alive connection at once would race a client sending its next request on
  it (that request fails, and a POST is not retried). ``alive`` stays true until then, so that a
  response already announced as kept alive keeps its connection open (Gunicorn closes a connection
  after any response once ``alive`` is false); ``stopping`` says the worker stops.

Gunicorn's own refusals (malformed request line, URI or headers over its limits, unsupported
transfer coding) and the ones above answer in the service's JSON error shape, and so does a
WebSocket upgrade (400: no route here speaks WebSocket). An absolute-form request target
(``POST http://host:port/embed``, RFC 9112 section 3.2.2) reaches the app in origin form
(``/embed``, its query as ``QUERY_STRING``), for the ``http`` and ``https`` schemes; the ``Host``
header is passed on as sent.

Contract with Gunicorn
----------------------
:class:`EdgeProtocol` and :class:`EdgeWorker` lean on members of ``ASGIProtocol``, ``ASGIWorker``
and its base ``Worker`` that Gunicorn does not document as API. :data:`GUNICORN_CONTRACT` declares
every one (class, name, kind, signature as of Gunicorn 27.0.1, the Gunicorn code that must still
use it) and ``tests/fast/test_edge_contract.py`` checks them against the installed Gunicorn, and fails
on a member this module uses without declaring it. Check it first when ``gunicorn`` is upgraded.
The private ones, and why:

- ``ASGIProtocol._request_ready`` (read, ``.set()``): None until HTTP/1 starts, so it tells HTTP/1
  from HTTP/2; setting it wakes ``_handle_connection``, which then sees ``_closed`` and ends (as
  Gunicorn's own ``_keepalive_timeout`` does).
- ``ASGIProtocol._closed`` (read, set): the connection is closed, by us or the client: a header
  deadline then does nothing, and the batcher's ``embedder.client_gone`` reads it. Set when a
  lingering close starts, so that Gunicorn's code treats the connection as closed.
- ``ASGIProtocol._on_headers_complete`` (override): the parser's callback when a request's headers
  are in: stops the header deadline and marks the connection busy.
- ``ASGIProtocol._serve_http_request`` (override, coroutine): one HTTP/1 request, until its response
  is complete: the connection is idle again after it.
- ``ASGIProtocol._build_http_scope`` (override): puts the connection in the scope for the bridge.
- ``ASGIProtocol._send_error_response`` (override, and called for 408): Gunicorn's refusals, in
  JSON; a connection closed after one lingers.
- ``ASGIProtocol._safe_write`` (called): write a refusal.
- ``ASGIProtocol._close_transport`` (override, and called): close; after an early refusal, start
  the lingering close instead.
- ``ASGIProtocol._handle_websocket`` (override, coroutine): refuse a WebSocket upgrade in JSON
  (Gunicorn's hands it to the app, which answers no WebSocket, and writes a bare 403).
- ``ASGIProtocol.data_received`` (override+super): while lingering, bytes are counted and dropped.
- ``ASGIProtocol.transport`` (read): the asyncio transport, half-closed and read while lingering.
- ``ASGIProtocol.pause_writing``/``resume_writing`` (override+super: asyncio's flow control
  callbacks, which Gunicorn's send waits on): mark the connection waiting on its client, and stop
  reading it meanwhile with ``_pause_reading`` (called), resumed with ``_maybe_resume_reading``
  (called: it keeps Gunicorn's own read backpressure).
- ``ASGIWorker._serve`` (override, coroutine, called by ``run``): Gunicorn's serving loop, without
  ASGI lifespan, with :class:`EdgeProtocol` and a TLS handshake deadline; it keeps the heartbeat
  (``notify``, the ``ppid`` check) and ends with ``_shutdown``.
- ``ASGIProtocol._will_close`` (override+super): Gunicorn's keep-alive decision, asked when a
  response starts (and maybe again after it): also true once the worker stops, decided once per
  request so that the connection closes exactly when the response said so.
- ``ASGIWorker.handle_exit_signal`` (override: SIGTERM's handler): sets ``stopping``, not
  ``alive`` (see **stopping** above).
- ``ASGIWorker._shutdown`` (override, coroutine): Gunicorn's graceful wait (on ``nr_conns``, which
  ``ASGIProtocol`` keeps; ``lifespan`` stays None as our ``_serve`` never sets it), then ``alive``
  false.
- ``ASGIWorker._get_ssl_context`` (called): the TLS context from ``certfile``/``keyfile``, or None.

And public members with an unwritten contract: ``ASGIProtocol.__init__(worker)``, ``.worker``,
``connection_made``/``connection_lost`` (overridden, with ``super()``); ``ASGIWorker.__init__``,
``check_config``, ``init_process``, ``load_wsgi`` (overridden), ``.loop``, ``.servers`` (ours are
appended so Gunicorn's ``_shutdown`` closes them), ``.asgi`` (replaced by :class:`WSGIBridge`
before any connection: ``ASGIProtocol.__init__`` takes it as its app); ``Worker.wsgi`` (set: the
server hooks find the service on it), ``.sockets``, ``.alive``, ``.ppid``, ``.log``, ``.cfg``,
``notify()``; ``gunicorn.sock.BaseSocket.sock``.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_to_bytes

from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers.gasgi import ASGIWorker

from ..config import Settings
from . import refusals

#: Every member of Gunicorn's classes this module overrides, calls, reads or sets (see "Contract
#: with Gunicorn" above; ``tests/fast/test_edge_contract.py`` checks each against the installed
#: Gunicorn). ``cls``: the class that defines it (dotted path); ``kind``: ``method``, ``coroutine``
#: (an ``async def``), ``classmethod`` or ``attribute`` (set on ``self`` in Gunicorn's code);
#: ``use``: ``override`` (ours replaces it), ``override+super`` (ours calls Gunicorn's too),
#: ``call``, ``read``, ``set``; ``signature``: ``str(inspect.signature(...))`` of Gunicorn's
#: function on 27.0.1 (None for attributes); ``used_by``: Gunicorn functions that must still
#: mention the name (they call our override, or create, set or wait on the attribute); ``why``.
#: Data only: nothing here changes what the worker does.
GUNICORN_CONTRACT = (
    # ASGIProtocol: one connection (EdgeProtocol's parent).
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "__init__",
     "kind": "method", "use": "call", "signature": "(self, worker)",
     "used_by": (),
     "why": "EdgeWorker._serve builds EdgeProtocol(worker), as Gunicorn's _serve builds its own"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "worker",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol.__init__",),
     "why": "the EdgeWorker: its loop, settings and connection list"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "connection_made",
     "kind": "method", "use": "override+super", "signature": "(self, transport)",
     "used_by": (),
     "why": "after Gunicorn's set-up: join the connection list, start the header deadline"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "connection_lost",
     "kind": "method", "use": "override+super", "signature": "(self, exc)",
     "used_by": (),
     "why": "stop the header deadline, leave the connection list; Gunicorn's counts nr_conns down"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_request_ready",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol.__init__",
                 "gunicorn.asgi.protocol.ASGIProtocol._start_http1",
                 "gunicorn.asgi.protocol.ASGIProtocol._handle_connection",
                 "gunicorn.asgi.protocol.ASGIProtocol._keepalive_timeout"),
     "why": "None until HTTP/1 starts; .set() wakes _handle_connection to see _closed and end"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_closed",
     "kind": "attribute", "use": "read+set", "signature": None,
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol._close_transport",
                 "gunicorn.asgi.protocol.ASGIProtocol.connection_lost",
                 "gunicorn.asgi.protocol.ASGIProtocol._handle_connection"),
     "why": "closed by either side: a late header deadline does nothing; client_gone reads it; "
            "set when a lingering close starts, so Gunicorn's code sees a closed connection"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_on_headers_complete",
     "kind": "method", "use": "override+super", "signature": "(self)",
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol._setup_callback_parser",),
     "why": "the parser's callback once headers are in: connection busy, header deadline off"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_serve_http_request",
     "kind": "coroutine", "use": "override+super", "signature": "(self, request, sockname, peername)",
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol._handle_connection",),
     "why": "one HTTP/1 request until its response is complete: the connection is idle after"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_build_http_scope",
     "kind": "method", "use": "override+super", "signature": "(self, request, sockname, peername)",
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol._handle_http_request",),
     "why": "scope['embedder.connection'] for WSGIBridge (embedder.client_gone)"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_send_error_response",
     "kind": "method", "use": "override", "signature": "(self, status, message, extra_headers=())",
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol._feed_callback_parser",
                 "gunicorn.asgi.protocol.ASGIProtocol._handle_h1c_exception",
                 "gunicorn.asgi.protocol.ASGIProtocol._handle_http_request"),
     "why": "Gunicorn's refusals (400/414/431/501/500) in the service's JSON shape; ours for 408"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_safe_write",
     "kind": "method", "use": "call", "signature": "(self, data)",
     "used_by": (),
     "why": "write a refusal, ignoring a client already gone"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_close_transport",
     "kind": "method", "use": "override+super", "signature": "(self)",
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol._feed_callback_parser",
                 "gunicorn.asgi.protocol.ASGIProtocol._handle_connection",
                 "gunicorn.asgi.protocol.ASGIProtocol._keepalive_timeout"),
     "why": "close after a 408, or to make room; sets _closed. Ours lingers after an early refusal"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_handle_websocket",
     "kind": "coroutine", "use": "override", "signature": "(self, request, sockname, peername)",
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol._handle_connection",),
     "why": "a WebSocket upgrade refused in JSON (400), not handed to the app (a bare 403)"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "data_received",
     "kind": "method", "use": "override+super", "signature": "(self, data)",
     "used_by": (),
     "why": "while lingering, what the client still sends is counted and dropped"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "transport",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol.connection_made",),
     "why": "the asyncio transport: half-closed (write_eof), read and closed while lingering"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "pause_writing",
     "kind": "method", "use": "override+super", "signature": "(self)",
     "used_by": (),
     "why": "asyncio's: over the high-water mark; Gunicorn's send then waits. Ours also stops reading"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "resume_writing",
     "kind": "method", "use": "override+super", "signature": "(self)",
     "used_by": (),
     "why": "asyncio's: drained below the low-water mark; called on connection_lost to free a waiting send"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_pause_reading",
     "kind": "method", "use": "call", "signature": "(self)",
     "used_by": (),
     "why": "stop reading a connection whose client does not take its answers"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_maybe_resume_reading",
     "kind": "method", "use": "call", "signature": "(self)",
     "used_by": (),
     "why": "read again once drained, unless Gunicorn's own read backpressure still holds"},
    {"cls": "gunicorn.asgi.protocol.ASGIProtocol", "name": "_will_close",
     "kind": "method", "use": "override+super", "signature": "(self, request, response_requires_close)",
     "used_by": ("gunicorn.asgi.protocol.ASGIProtocol._handle_http_request",),
     "why": "once the worker stops, a response says Connection: close; decided once per request"},
    # ASGIWorker: the worker process (EdgeWorker's parent).
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "__init__",
     "kind": "method", "use": "override+super", "signature": "(self, *args, **kwargs)",
     "used_by": (),
     "why": "passes the arbiter's arguments on; sets loop and servers"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "check_config",
     "kind": "classmethod", "use": "override", "signature": "(cls, cfg, log)",
     "used_by": ("gunicorn.arbiter.Arbiter.start",),
     "why": "no 'ASGI worker does not use threads' warning: threads sizes the request threads"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "init_process",
     "kind": "method", "use": "override+super", "signature": "(self)",
     "used_by": ("gunicorn.arbiter.Arbiter.spawn_worker",),
     "why": "lift the open-files limit first; Gunicorn's sets up the loop, loads the app, runs"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "load_wsgi",
     "kind": "method", "use": "override+super", "signature": "(self)",
     "used_by": ("gunicorn.workers.base.Worker.init_process",),
     "why": "Gunicorn's loads the app into .asgi; ours wraps it in WSGIBridge"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "asgi",
     "kind": "attribute", "use": "read+set", "signature": None,
     "used_by": ("gunicorn.workers.gasgi.ASGIWorker.load_wsgi",
                 "gunicorn.asgi.protocol.ASGIProtocol.__init__"),
     "why": "the loaded (Flask) app, replaced by WSGIBridge: ASGIProtocol.__init__ takes it"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "_serve",
     "kind": "coroutine", "use": "override", "signature": "(self)",
     "used_by": ("gunicorn.workers.gasgi.ASGIWorker.run",),
     "why": "the serving loop: no lifespan, EdgeProtocol, TLS handshake deadline, heartbeat"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "_shutdown",
     "kind": "coroutine", "use": "override+super", "signature": "(self)",
     "used_by": (),
     "why": "Gunicorn's graceful wait on nr_conns, then alive false"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "handle_exit_signal",
     "kind": "method", "use": "override", "signature": "(self)",
     "used_by": ("gunicorn.workers.gasgi.ASGIWorker.init_signals",),
     "why": "SIGTERM: stopping, with alive kept true until the connections are drained"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "_get_ssl_context",
     "kind": "method", "use": "call", "signature": "(self)",
     "used_by": (),
     "why": "the TLS context from certfile/keyfile, or None"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "loop",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.workers.gasgi.ASGIWorker._setup_event_loop",
                 "gunicorn.workers.gasgi.ASGIWorker.run"),
     "why": "the event loop: listening servers and header deadlines"},
    {"cls": "gunicorn.workers.gasgi.ASGIWorker", "name": "servers",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.workers.gasgi.ASGIWorker.__init__",
                 "gunicorn.workers.gasgi.ASGIWorker._shutdown"),
     "why": "ours are appended, so Gunicorn's _shutdown closes and waits for them"},
    # Worker: ASGIWorker's parent.
    {"cls": "gunicorn.workers.base.Worker", "name": "wsgi",
     "kind": "attribute", "use": "set", "signature": None,
     "used_by": ("gunicorn.workers.base.Worker.load_wsgi",),
     "why": "the Flask app, where gunicorn.conf.py's server hooks find the service"},
    {"cls": "gunicorn.workers.base.Worker", "name": "sockets",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.workers.base.Worker.__init__",),
     "why": "the listening sockets to serve"},
    {"cls": "gunicorn.workers.base.Worker", "name": "alive",
     "kind": "attribute", "use": "read+set", "signature": None,
     "used_by": ("gunicorn.workers.base.Worker.__init__",
                 "gunicorn.workers.gasgi.ASGIWorker.handle_exit_signal",
                 "gunicorn.asgi.protocol.ASGIProtocol._handle_connection"),
     "why": "False once the worker must stop now (max_requests, SIGQUIT); set false once drained"},
    {"cls": "gunicorn.workers.base.Worker", "name": "ppid",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.workers.base.Worker.__init__",),
     "why": "the arbiter's pid: a different parent means it is gone"},
    {"cls": "gunicorn.workers.base.Worker", "name": "notify",
     "kind": "method", "use": "call", "signature": "(self)",
     "used_by": (),
     "why": "the heartbeat, at least every timeout seconds, or the arbiter kills the worker"},
    {"cls": "gunicorn.workers.base.Worker", "name": "log",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.workers.base.Worker.__init__",),
     "why": "Gunicorn's logger"},
    {"cls": "gunicorn.workers.base.Worker", "name": "cfg",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.workers.base.Worker.__init__",),
     "why": "worker_connections and threads"},
    # A listener in Worker.sockets.
    {"cls": "gunicorn.sock.BaseSocket", "name": "sock",
     "kind": "attribute", "use": "read", "signature": None,
     "used_by": ("gunicorn.sock.BaseSocket.__init__",),
     "why": "the socket object handed to loop.create_server"},
)


#: Lingering close (after a refusal that came before the request was read whole): at most this
#: long in all, this long without data from the client, and this many bytes read and dropped;
#: then the connection is closed whatever the client still sends (nginx's ``lingering_time`` 30 s,
#: ``lingering_timeout`` 5 s; shorter here, and bounded in bytes too).
LINGER_SECONDS = 5.0
LINGER_IDLE_SECONDS = 2.0
LINGER_BYTES = 64 * 1024 * 1024

#: About the most bytes of response one connection holds in the worker for a client that does not
#: take them (nginx's ``output_buffers``, 2 x 32 KiB): half is the transport's high-water mark (a
#: piece is written only under it; Gunicorn's own is 64 KiB), half the piece being written. A body
#: goes out in pieces of at most half this, and a streamed body is read from the app that much at
#: a time, in a request thread. (The piece is held until the transport drains, and what it queues
#: is a copy: twice this, in the worst case.) The kernel too holds at most about this much not yet
#: sent (``TCP_NOTSENT_LOWAT``), where it would queue up to ``tcp_wmem``'s maximum (4 MiB) for a
#: client that does not read; what is in flight is not limited, so a fast client is not slowed.
SEND_BUFFER_BYTES = 64 * 1024
#: How often the send deadline (``send_timeout``) is checked; while the worker shuts down, also
#: the deadline itself: a client that took nothing in that time is not waited for.
SEND_CHECK_SECONDS = 1.0

#: ``http://`` or ``https://`` and an authority (RFC 9112 section 3.2.2's absolute form; the
#: query is already split off by the parser, a request target has no fragment).
_ABSOLUTE_FORM = re.compile(rb"(?i:https?)://[^/]+")


def origin_form(target: bytes) -> bytes | None:
    """The origin-form path of an absolute-form request target (``http://h:1/a/b`` -> ``/a/b``,
    ``https://h`` -> ``/``), or None for any other target (origin form, ``*``, other schemes)."""
    match = _ABSOLUTE_FORM.match(target)
    if match is None:
        return None
    return target[match.end():] or b"/"


class EdgeProtocol(ASGIProtocol):
    """Gunicorn's HTTP/1.1 connection handler, plus a header deadline for a connection's first
    request, a place in the worker's connection list (oldest first), JSON error answers, absolute-form
    targets in origin form, a lingering close after an early refusal and bounded sending."""

    def connection_made(self, transport):
        self._header_timer = None
        self._busy = False  # a request's headers have arrived and its answer is not yet sent
        self._refused = False  # answered before the request was read whole: linger when closing
        self._lingering = False
        self._linger_timer = None
        self._waits_on_client = False  # over the high-water mark: the client is not taking bytes
        self._unsent = 0  # bytes queued in the transport at the last send check
        self._drained = False  # the transport drained below its low-water mark since that check
        self._sent_at = 0.0  # loop time the client last took bytes (or had none to take)
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=SEND_BUFFER_BYTES // 2)
        sock = transport.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_NOTSENT_LOWAT"):  # Linux and macOS
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, SEND_BUFFER_BYTES)
            except OSError:  # not a TCP socket (a Unix socket bind)
                pass
        self.worker.admit(self)
        if self._request_ready is not None:  # HTTP/1 (HTTP/2 and uWSGI are not configured)
            self._header_timer = self.worker.loop.call_later(
                self.worker.settings.header_timeout, self._header_timeout)

    def _header_timeout(self):
        self._header_timer = None
        if self._closed or self._busy:
            return
        self._send_error_response(408, "the request's headers did not arrive in time")
        self._close_transport()
        self._request_ready.set()  # as Gunicorn's keep-alive timeout does: let the loop see it

    def _on_headers_complete(self):
        self._busy = True
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        return super()._on_headers_complete()

    async def _serve_http_request(self, *args, **kwargs):
        try:
            return await super()._serve_http_request(*args, **kwargs)
        finally:
            self._busy = False

    #: The request whose response the worker's stopping was last decided for, and that decision.
    _close_decided_for = None
    _close_for_stop = False

    def _will_close(self, request, response_requires_close):
        """Gunicorn's decision, or close because the worker stops: decided when the response
        starts (Gunicorn may ask again after it), so that it closes if and only if it said so."""
        if request is not self._close_decided_for:
            self._close_decided_for, self._close_for_stop = request, self.worker.stopping
        return self._close_for_stop or super()._will_close(request, response_requires_close)

    @property
    def idle(self) -> bool:
        """No request on it: it waits for (the rest of) its next request's headers, or lingers."""
        return not self._busy or self._lingering

    @property
    def waits_on_client(self) -> bool:
        """Its answer is computed and waits for the client to take the bytes already queued."""
        return self._waits_on_client

    def close_idle(self) -> None:
        """Close it to make room (it holds no request being computed, so nothing is lost but the
        connection and what its client did not take)."""
        if self.transport is not None and self.transport.get_write_buffer_size():
            self._drop()  # close() would wait for the client to take them
            return
        if self._lingering:
            self._end_linger()
            return
        self._refused = False  # no lingering: room is needed now
        self._close_transport()
        if self._request_ready is not None:
            self._request_ready.set()

    def connection_lost(self, exc):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self.worker.connections.pop(self, None)
        super().connection_lost(exc)
        self.resume_writing()  # a send waiting for the client to drain returns (and sees _closed)

    # --- sending ---------------------------------------------------------------------------------

    def pause_writing(self):
        super().pause_writing()
        self._waits_on_client = True
        if not self._lingering and self._request_ready is not None:
            self._pause_reading()  # no more requests from a client that does not take its answers

    def resume_writing(self):
        super().resume_writing()
        self._waits_on_client = False
        self._drained = True
        if not self._closed and not self._lingering and self._request_ready is not None:
            self._maybe_resume_reading()

    def check_send(self, now: float, limit: float) -> None:
        """The send deadline, checked every :data:`SEND_CHECK_SECONDS`: bytes queued for the client,
        none of which it took for ``limit`` seconds (measured from the check that first saw them
        stuck), close the connection, dropping them."""
        transport = self.transport
        unsent = transport.get_write_buffer_size() if transport is not None else 0
        if not unsent or not self._unsent or unsent < self._unsent or self._drained:
            self._sent_at = now  # nothing owed, newly owed, or the client took some since
        self._unsent, self._drained = unsent, False
        if unsent and now - self._sent_at >= limit:
            self._drop()

    def _drop(self) -> None:
        """Close at once, dropping what is queued for the client (``abort``, not ``close``, which
        waits for the client to take it), with a reset: the client learns its answer was cut, and
        the kernel frees what it holds for the connection at once (nginx's
        ``reset_timedout_connection``). Gunicorn's code sees the connection closed from now on."""
        self._closed = True
        try:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        except Exception:  # already closed
            pass
        if self._request_ready is not None:
            self._request_ready.set()

    def _build_http_scope(self, request, sockname, peername):
        scope = super()._build_http_scope(request, sockname, peername)
        scope["embedder.connection"] = self
        raw = scope["raw_path"]
        if raw[:1] != b"/":  # absolute form? The app routes on the origin form's path
            origin = origin_form(raw)
            if origin is not None:
                scope["raw_path"] = origin
                # Decoded as Gunicorn decodes an origin-form path (percent-decoded UTF-8).
                scope["path"] = unquote_to_bytes(origin).decode("utf-8", errors="replace")
        return scope

    def _send_error_response(self, status, message, extra_headers=()):
        """Gunicorn's refusal, in the service's JSON error shape (see ``refusals.py``)."""
        self.refused()
        self._safe_write(refusals.error_response(status, message, extra_headers))

    async def _handle_websocket(self, request, sockname, peername):
        """No route here speaks WebSocket: refuse the upgrade in JSON, whatever its version or key
        (Gunicorn's would hand it to the app, which accepts none, and write a bare 403)."""
        self._send_error_response(400, "WebSocket is not served here: this is an HTTP/1.1 JSON API "
                                       "(send the request without 'Upgrade')")
        self._close_transport()

    # --- lingering close -----------------------------------------------------------------------

    def refused(self) -> None:
        """An answer went out before the request was read whole: linger when the connection closes."""
        self._refused = True

    def _close_transport(self):
        if self._lingering:
            return  # already closing: the linger ends it
        if not self._refused or self._closed or self.transport is None or self.transport.is_closing():
            super()._close_transport()
            return
        self._start_linger()

    def _start_linger(self):
        """Send what is written, then a FIN; read and drop what the client still sends until it
        closes, or a bound is reached (see :data:`LINGER_SECONDS`). Gunicorn's code sees the
        connection closed from now on."""
        transport = self.transport
        self._lingering = True
        self._closed = True
        loop = self.worker.loop
        self._linger_end = loop.time() + LINGER_SECONDS
        self._linger_last = loop.time()
        self._linger_bytes = 0
        try:
            if transport.can_write_eof():  # not over TLS: there the answer says Connection: close
                transport.write_eof()
            transport.resume_reading()  # reading may have paused with a body half read
        except Exception:  # the transport is already gone
            self._end_linger()
            return
        self._linger_timer = loop.call_later(LINGER_IDLE_SECONDS, self._linger_check)
        if self._request_ready is not None:
            self._request_ready.set()  # let Gunicorn's loop see _closed and end

    def _linger_check(self):
        self._linger_timer = None
        now = self.worker.loop.time()
        next_check = min(self._linger_last + LINGER_IDLE_SECONDS, self._linger_end)
        if now >= next_check:
            self._end_linger()
        else:
            self._linger_timer = self.worker.loop.call_later(next_check - now, self._linger_check)

    def _end_linger(self):
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        try:
            self.transport.close()
        except Exception:  # already closed
            pass

    def data_received(self, data):
        if self._lingering:
            self._linger_bytes += len(data)
            self._linger_last = self.worker.loop.time()
            if self._linger_bytes > LINGER_BYTES:
                self._end_linger()
            return
        super().data_received(data)


class WSGIBridge:
    """An ASGI app that reads a request's whole body in the event loop, within its deadline and
    size limit, and only then runs the WSGI app in one of ``threads`` threads (PEP 3333 environ,
    body as a ``BytesIO``); the response's first :data:`SEND_BUFFER_BYTES` half (all of it for the
    JSON answers) is collected there, and sent from the loop in pieces, each once the client has
    taken enough of the last; the rest of a longer streamed body (a file) is read a piece at a time.

    Not asgiref's ``WsgiToAsgi`` or a2wsgi: the first spools any body without limit and runs the app
    in a pool shared with the loop's other work, the second reads the body from the request thread,
    which is what a stalled client must not be able to hold."""

    def __init__(self, wsgi, settings: Settings, threads: int):
        self.wsgi = wsgi
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="embedder-request")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return  # lifespan (and nothing else reaches here: no websocket route)
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        connection = scope.get("embedder.connection")
        environ = self._environ(scope, body, connection)
        loop = asyncio.get_running_loop()
        status, headers, parts, rest = await loop.run_in_executor(self.pool, self._call, environ)
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            while True:
                # Joined here, in the loop's thread: a piece can wait long for a slow client.
                await _send_pieces(send, b"".join(parts), rest is not None, connection)
                if rest is None or (connection is not None and connection._closed):
                    return
                parts, more = await loop.run_in_executor(self.pool, rest.take)
                if not more:
                    rest = None  # take() closed it
        finally:
            if rest is not None:  # the client went away, or this task was cancelled
                try:
                    self.pool.submit(rest.close)
                except RuntimeError:  # the pool is shut down: the worker is exiting
                    rest.close()

    async def _read_body(self, scope, receive, send) -> bytes | None:
        """The whole body, or None after answering 408 (too slow) or 413 (too big). One deadline,
        ``body_timeout`` s from now, moved 1 s later per ``body_min_rate`` bytes received."""
        limit, rate = self.settings.max_body_bytes, self.settings.body_min_rate
        connection = scope.get("embedder.connection")
        announced = _header(scope, b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            await _refuse(send, 413, f"request body over {limit} bytes", connection)
            return None
        started = asyncio.get_running_loop().time()
        parts, size = [], 0
        try:
            async with asyncio.timeout_at(started + self.settings.body_timeout) as deadline:
                while True:
                    message = await receive()  # usually the whole body at once, already read
                    if message["type"] != "http.request":
                        return None  # the client went away
                    parts.append(message.get("body", b""))
                    size += len(parts[-1])
                    if size > limit:
                        await _refuse(send, 413, f"request body over {limit} bytes", connection)
                        return None
                    if not message.get("more_body"):
                        return parts[0] if len(parts) == 1 else b"".join(parts)
                    deadline.reschedule(started + self.settings.body_timeout + size / rate)
        except TimeoutError:
            await _refuse(send, 408, f"the request body did not arrive in time (at least {rate} bytes/s "
                                     f"after {self.settings.body_timeout:g} s)", connection)
            return None

    def _environ(self, scope, body: bytes, connection) -> dict:
        server = scope.get("server") or ("localhost", 80)
        client = scope.get("client") or ("", 0)
        environ = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": scope.get("root_path", ""),
            "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
            "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
            "REMOTE_ADDR": client[0],
            "REMOTE_PORT": str(client[1]),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope["scheme"],
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            # The batcher asks this while the request waits: has the client closed its connection?
            "embedder.client_gone": (lambda: connection._closed) if connection is not None else None,
        }
        for name, value in scope["headers"]:
            if name == b"content-length" or name == b"transfer-encoding":
                continue  # the body is whole now: CONTENT_LENGTH above says how long
            key = name.decode("latin-1").upper().replace("-", "_")
            key = key if key == "CONTENT_TYPE" else "HTTP_" + key
            value = value.decode("latin-1")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _call(self, environ):
        """Run the WSGI app (in a request thread): its status, headers, the first piece of its body
        (as chunks), and the rest to read later (a :class:`_Rest`), or None when that is all of it."""
        started = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]

        rest = _Rest(self.wsgi(environ, start_response))
        try:
            parts, more = rest.take()  # start_response may come with the first chunk (a generator)
            status, headers = started
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        except BaseException:
            rest.close()
            raise
        return int(status[:3]), headers, parts, rest if more else None


class _Rest:
    """A WSGI response body (PEP 3333's iterable), read a piece at a time in a request thread, and
    closed (its ``close()`` called) once read whole, on an error, or when the client went away."""

    def __init__(self, result):
        self._result = result
        self._chunks = iter(result)
        self._lock = threading.Lock()  # close() may come from another thread while take() reads
        self._done = False

    def take(self) -> tuple[list[bytes], bool]:
        """The next chunks, up to about half :data:`SEND_BUFFER_BYTES` in all; and whether more may
        follow (when not, it is closed)."""
        parts, size = [], 0
        with self._lock:
            try:
                if not self._done:
                    for chunk in self._chunks:
                        if chunk:
                            parts.append(chunk)
                            size += len(chunk)
                            if size >= SEND_BUFFER_BYTES // 2:
                                return parts, True
            except BaseException:
                self._close()
                raise
            self._close()
        return parts, False

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if not self._done:
            self._done = True
            if hasattr(self._result, "close"):
                self._result.close()


async def _send_pieces(send, body: bytes, more: bool, connection) -> None:
    """Send ``body`` in pieces of at most half :data:`SEND_BUFFER_BYTES`: after writing each,
    Gunicorn's ``send`` waits while the bytes queued are over the high-water mark, so a client that
    does not read holds no more than that. ``more``: more of the body follows."""
    size, step, start = len(body), SEND_BUFFER_BYTES // 2, 0
    while True:
        end = start + step
        await send({"type": "http.response.body", "body": body[start:end], "more_body": more or end < size})
        if end >= size or (connection is not None and connection._closed):
            return
        start = end


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1").strip()
    return None


async def _refuse(send, status: int, message: str, connection=None) -> None:
    """Answer a refusal of a request whose body is not read whole, and close; the connection
    lingers (keeps reading and dropping, within bounds) so that the client reads the answer."""
    if connection is not None:
        connection.refused()
    body = refusals.error_body(status, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class EdgeWorker(ASGIWorker):
    """``worker_class`` in ``gunicorn.conf.py``: Gunicorn's asyncio worker serving the Flask app
    (``wsgi:app``, unchanged) through :class:`WSGIBridge`, with :class:`EdgeProtocol` connections."""

    #: SIGTERM came: accept no more, close each connection where its client knows (**stopping**).
    stopping = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = Settings.from_env()
        #: Open connections, oldest first (a dict keeps insertion order).
        self.connections: dict[EdgeProtocol, None] = {}
        self._send_checks = None  # the timer of the next send deadline check, once one connects

    @classmethod
    def check_config(cls, cfg, log):
        pass  # ``threads`` is used: it sizes the request threads

    def init_process(self):
        # Each connection is a descriptor, and may hold another: a file its response streams.
        raise_open_files_limit(2 * self.cfg.worker_connections + 64)
        super().init_process()

    def load_wsgi(self):
        super().load_wsgi()
        self.wsgi = self.asgi  # the Flask app: the server hooks find the service on it
        self.asgi = WSGIBridge(self.wsgi, self.settings, self.cfg.threads)

    def admit(self, connection: EdgeProtocol) -> None:
        """Count a new connection in; over ``worker_connections``, close the oldest that holds no
        request being computed (idle, lingering, or waiting for its client to take its answer)."""
        self.connections[connection] = None
        if self._send_checks is None:
            self._send_checks = self.loop.call_later(SEND_CHECK_SECONDS, self._check_sends)
        if len(self.connections) > self.cfg.worker_connections:
            for oldest in self.connections:
                if (oldest.idle or oldest.waits_on_client) and oldest is not connection:
                    oldest.close_idle()
                    self.connections.pop(oldest, None)
                    break

    def _check_sends(self):
        """Every :data:`SEND_CHECK_SECONDS`: close the connections whose clients took none of their
        queued bytes for ``send_timeout`` s, or, once the worker shuts down, since the last check."""
        now = self.loop.time()
        limit = self.settings.send_timeout if self.alive and not self.stopping else SEND_CHECK_SECONDS
        for connection in list(self.connections):
            connection.check_send(now, limit)
        self._send_checks = self.loop.call_later(SEND_CHECK_SECONDS, self._check_sends)

    async def _serve(self):
        """ASGIWorker's loop without ASGI lifespan (a WSGI app has none), with our protocol."""
        ssl_context = self._get_ssl_context()
        # A TLS handshake comes before the first request's headers, within the same deadline.
        handshake = {"ssl_handshake_timeout": self.settings.header_timeout} if ssl_context else {}
        for sock in self.sockets:
            self.servers.append(await self.loop.create_server(
                lambda: EdgeProtocol(self), sock=sock.sock, ssl=ssl_context, start_serving=True,
                **handshake))
        while self.alive and not self.stopping:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            await asyncio.sleep(1.0)
        await self._shutdown()

    def handle_exit_signal(self):
        """SIGTERM: stop gracefully (**stopping**; Gunicorn's sets ``alive`` false at once)."""
        self.stopping = True

    async def _shutdown(self):
        """Stop accepting, then Gunicorn's graceful wait, up to ``graceful_timeout``, for every
        connection to close where its client knows (**stopping**): after a response that says
        ``Connection: close``, or when its keep-alive time runs out without a request."""
        self.stopping = True  # also when the loop ended otherwise (the master gone, alive false)
        await super()._shutdown()
        self.alive = False
        self.asgi.pool.shutdown(wait=False)


def raise_open_files_limit(wanted: int) -> None:
    """Each connection is a file descriptor: lift the soft limit toward ``wanted`` (never past the
    hard limit; macOS's default soft limit is 256)."""
    try:
        import resource  # POSIX only: elsewhere there is no limit to lift
    except ImportError:  # not a POSIX system
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
