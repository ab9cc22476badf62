"""The Flask application factory: wires settings, model, service, routes, errors and metrics.

``create_app()`` loads the model, so under Gunicorn with ``preload_app`` it runs once in the
master; nothing here runs the model (that happens in ``EmbeddingService.start_worker``).
"""

from __future__ import annotations

import hmac
import logging
import time

from flask import Flask, Response, g, request
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from metrics import definitions as m

from ..backends import create_backend
from ..config import Settings
from ..core.service import EmbeddingService
from ..model.errors import ModelUnavailable, UnsupportedModel
from ..model.load import load_model
from ..model.source import resolve_model
from . import docs_page
from .error_table import Unauthorized, kind_of
from .responses import error_response
from .routes import api
from .schemas import Schemas

log = logging.getLogger("embedder.app")

# A refused body is read up to this much before the connection is closed anyway.
DRAIN_LIMIT = 64 * 1024 * 1024


def build_service(settings: Settings):
    """The configured model, found (the one place a server resolves it: a hub id, a directory or the
    bundled model) and loaded, in the master, behind its backend and the core's service. A model
    that cannot be found or served as sentence-transformers serves it stops the server (SystemExit)
    with the message that says why."""
    try:
        source = resolve_model(settings)
        model = load_model(source.path, source.model_id, settings.backend, settings.resolved_cache_dir(),
                           settings.trust_remote_code)
        return EmbeddingService(settings, model, create_backend(settings, model))
    except (ModelUnavailable, UnsupportedModel) as why:  # what to do about it is in the message
        raise SystemExit(f"embedder cannot start: {why}") from None


def create_app(settings: Settings | None = None, service=None) -> Flask:
    settings = settings or Settings.from_env()
    service = service or build_service(settings)

    app = Flask("embedder")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["embedder"] = service
    # The request and response models bound to this service's limits (validation, answers, OpenAPI).
    app.extensions["embedder.schemas"] = Schemas.bind(service.limits, service.model_id, settings.openai_token_ids)

    app.register_blueprint(api)
    app.register_blueprint(docs_page.docs)  # Swagger UI at /docs
    _register_errors(app)
    _register_metrics(app)
    _register_auth(app, settings)
    return app


def _drain_body(limit: int = DRAIN_LIMIT) -> None:
    """Read (and drop) the rest of a refused body, so the client reads our answer, not a reset."""
    stream = request.environ.get("wsgi.input")
    read = 0
    try:
        while stream is not None and read < limit:
            chunk = stream.read(64 * 1024)
            if not chunk:
                break
            read += len(chunk)
    except (OSError, ValueError):
        pass


def _register_auth(app: Flask, settings: Settings) -> None:
    """Optional bearer API key, compared in constant time."""
    if not settings.api_key:
        return
    expected = settings.api_key.encode()
    open_routes = ({"/health", "/openapi.json"} | docs_page.OPEN_PATHS
                   | ({"/metrics"} if not settings.metrics_require_key else set()))

    @app.before_request
    def require_key():
        if request.path in open_routes:
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'")


def _register_errors(app: Flask) -> None:
    """Every error, the core's, ours and werkzeug's, answered from the one table (http_errors.py)."""

    @app.errorhandler(Exception)
    def answer(error: Exception):
        kind = kind_of(error)
        if kind.status == 500:
            log.exception("unhandled error on %s %s", request.method, request.path)
        if kind.reason is not None:
            m.FAILURES.labels(kind.reason).inc()
        headers = {}
        if isinstance(error, RequestEntityTooLarge):
            _drain_body()
            headers["Connection"] = "close"
        elif isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return error_response(error, headers)


def _register_metrics(app: Flask) -> None:
    @app.before_request
    def start_timer():
        g.started = time.perf_counter()
        m.IN_FLIGHT.inc()
        service = app.extensions["embedder"]
        if not service.ready:  # outside Gunicorn's hooks (e.g. Flask's test client)
            service.start_worker()

    @app.after_request
    def count(response: Response):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        m.REQUESTS.labels(route, str(response.status_code)).inc()
        started = g.get("started")
        if started is not None:
            m.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response

    @app.teardown_request
    def done(_exc):
        if g.pop("started", None) is not None:
            m.IN_FLIGHT.dec()
