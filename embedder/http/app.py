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
from ..core.models import DuplicateName, ServedModels, check_names
from ..core.rerank import RerankService
from ..core.scheduler import Scheduler
from ..core.service import EmbeddingService
from ..model.errors import ModelUnavailable, UnsupportedModel
from ..model.load import load_model
from ..model.source import resolve_models
from . import docs_page
from .error_table import Unauthorized, kind_of
from .rerank_routes import rerank_api
from .responses import error_response
from .routes import api
from .routing import Routing

log = logging.getLogger("embedder.app")

# A refused body is read up to this much before the connection is closed anyway.
DRAIN_LIMIT = 64 * 1024 * 1024


def build_models(settings: Settings) -> ServedModels:
    """The configured models, found (the one place a server resolves them: hub ids, directories or
    the bundled model) and loaded, in the master, each behind its backend and the core's service,
    all on one scheduler per worker. A model that cannot be found or served as
    sentence-transformers serves it stops the server (SystemExit) with the message that says why."""
    try:
        scheduler = Scheduler(settings.max_queued_inputs, settings.max_queued_tokens)
        services = []
        sources = resolve_models(settings)
        check_names([source.model_id for source in sources])  # before loading anything
        for source in sources:
            model = load_model(source.path, source.model_id, settings.backend, settings.resolved_cache_dir(),
                               settings.trust_remote_code)
            service = RerankService if model.kind == "reranker" else EmbeddingService
            services.append(service(settings, model, create_backend(settings, model), scheduler, source.model_id))
        return ServedModels(settings, services)
    except (ModelUnavailable, UnsupportedModel, DuplicateName) as why:  # what to do about it is in the message
        raise SystemExit(f"embedder cannot start: {why}") from None


def create_app(settings: Settings | None = None, service=None) -> Flask:
    """The app for ``settings`` (default: the environment's), serving ``service`` (a
    :class:`ServedModels`, or one model's service) or the configured models, loaded now."""
    settings = settings or Settings.from_env()
    if service is None:
        models = build_models(settings)
    else:
        models = service if isinstance(service, ServedModels) else ServedModels.of(service)

    app = Flask("embedder")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["embedder"] = models
    # Which model a request names, and each model's request and response models bound to its limits.
    app.extensions["embedder.routing"] = Routing(models, settings.openai_token_ids)

    app.register_blueprint(api)
    app.register_blueprint(rerank_api)
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
            m.FAILURES.labels(kind.reason, g.get("model", "")).inc()
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
        models = app.extensions["embedder"]
        if not models.ready:  # outside Gunicorn's hooks (e.g. Flask's test client)
            models.start_worker()

    @app.after_request
    def count(response: Response):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        model = g.get("model", "")  # set by the route once it knows which served model answers
        m.REQUESTS.labels(route, str(response.status_code), model).inc()
        started = g.get("started")
        if started is not None:
            m.REQUEST_SECONDS.labels(route, model).observe(time.perf_counter() - started)
        return response

    @app.teardown_request
    def done(_exc):
        if g.pop("started", None) is not None:
            m.IN_FLIGHT.dec()
