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

Gunicorn's own refusals (malformed request line, URI or headers over its limits, unsupported
transfer coding) and the ones above answer in the service's JSON error shape.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers.gasgi import ASGIWorker

from . import gunicorn_errors
from .config import Settings


class EdgeProtocol(ASGIProtocol):
    """Gunicorn's HTTP/1.1 connection handler, plus a header deadline for a connection's first
    request, a place in the worker's connection list (oldest first) and JSON error answers."""

    def connection_made(self, transport):
        self._header_timer = None
        self._busy = False  # a request's headers have arrived and its answer is not yet sent
        super().connection_made(transport)
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

    @property
    def idle(self) -> bool:
        """No request on it: it waits for (the rest of) its next request's headers."""
        return not self._busy

    def close_idle(self) -> None:
        """Close it to make room (it holds no request, so nothing is lost but the connection)."""
        self._close_transport()
        if self._request_ready is not None:
            self._request_ready.set()

    def connection_lost(self, exc):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.worker.connections.pop(self, None)
        super().connection_lost(exc)

    def _build_http_scope(self, request, sockname, peername):
        scope = super()._build_http_scope(request, sockname, peername)
        scope["embedder.connection"] = self
        return scope

    def _send_error_response(self, status, message, extra_headers=()):
        """Gunicorn's refusal, in the service's JSON error shape (see ``gunicorn_errors``)."""
        self._safe_write(gunicorn_errors.error_response(status, message, extra_headers))


class WSGIBridge:
    """An ASGI app that reads a request's whole body in the event loop, within its deadline and
    size limit, and only then runs the WSGI app in one of ``threads`` threads (PEP 3333 environ,
    body as a ``BytesIO``); the response, small JSON here, is collected there and sent from the loop.

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
        status, headers, chunks = await loop.run_in_executor(self.pool, self._call, environ)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    async def _read_body(self, scope, receive, send) -> bytes | None:
        """The whole body, or None after answering 408 (too slow) or 413 (too big). One deadline,
        ``body_timeout`` s from now, moved 1 s later per ``body_min_rate`` bytes received."""
        limit, rate = self.settings.max_body_bytes, self.settings.body_min_rate
        announced = _header(scope, b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            await _refuse(send, 413, f"request body over {limit} bytes")
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
                        await _refuse(send, 413, f"request body over {limit} bytes")
                        return None
                    if not message.get("more_body"):
                        return parts[0] if len(parts) == 1 else b"".join(parts)
                    deadline.reschedule(started + self.settings.body_timeout + size / rate)
        except TimeoutError:
            await _refuse(send, 408, f"the request body did not arrive in time (at least {rate} bytes/s "
                                     f"after {self.settings.body_timeout:g} s)")
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
        """Run the WSGI app (in a request thread) and collect its whole response."""
        started = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]

        result = self.wsgi(environ, start_response)
        try:
            chunks = list(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = started
        return (int(status[:3]),
                [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers], chunks)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1").strip()
    return None


async def _refuse(send, status: int, message: str) -> None:
    body = gunicorn_errors.error_body(status, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class EdgeWorker(ASGIWorker):
    """``worker_class`` in ``gunicorn.conf.py``: Gunicorn's asyncio worker serving the Flask app
    (``wsgi:app``, unchanged) through :class:`WSGIBridge`, with :class:`EdgeProtocol` connections."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = Settings.from_env()
        #: Open connections, oldest first (a dict keeps insertion order).
        self.connections: dict[EdgeProtocol, None] = {}

    @classmethod
    def check_config(cls, cfg, log):
        pass  # ``threads`` is used: it sizes the request threads

    def init_process(self):
        raise_open_files_limit(self.cfg.worker_connections + 64)
        super().init_process()

    def load_wsgi(self):
        super().load_wsgi()
        self.wsgi = self.asgi  # the Flask app: the server hooks find the service on it
        self.asgi = WSGIBridge(self.wsgi, self.settings, self.cfg.threads)

    def admit(self, connection: EdgeProtocol) -> None:
        """Count a new connection in; over ``worker_connections``, close the oldest idle one."""
        self.connections[connection] = None
        if len(self.connections) > self.cfg.worker_connections:
            for oldest in self.connections:
                if oldest.idle and oldest is not connection:
                    oldest.close_idle()
                    self.connections.pop(oldest, None)
                    break

    async def _serve(self):
        """ASGIWorker's loop without ASGI lifespan (a WSGI app has none), with our protocol."""
        ssl_context = self._get_ssl_context()
        # A TLS handshake comes before the first request's headers, within the same deadline.
        handshake = {"ssl_handshake_timeout": self.settings.header_timeout} if ssl_context else {}
        for sock in self.sockets:
            self.servers.append(await self.loop.create_server(
                lambda: EdgeProtocol(self), sock=sock.sock, ssl=ssl_context, start_serving=True,
                **handshake))
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            await asyncio.sleep(1.0)
        await self._shutdown()

    async def _shutdown(self):
        """Stop accepting, close the connections that hold no request, then Gunicorn's graceful
        wait for the rest (each closes after its response, since the worker is no longer alive)."""
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            if connection.idle:
                connection.close_idle()
        await super()._shutdown()
        self.asgi.pool.shutdown(wait=False)


def raise_open_files_limit(wanted: int) -> None:
    """Each connection is a file descriptor: lift the soft limit toward ``wanted`` (never past the
    hard limit; macOS's default soft limit is 256)."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
