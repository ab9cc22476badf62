"""What every model route does with its exchange: read the whole body, ask whether the client
left, and report where the time went in text-embeddings-inference's headers."""

from __future__ import annotations

import time

from flask import current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge


def read_body() -> bytes:
    """The request body, never cut short: with a Content-Length, werkzeug refuses one over
    ``MAX_CONTENT_LENGTH`` (413); a chunked body (no Content-Length), which werkzeug would silently
    stop reading at the limit, is read one byte past it and refused the same way."""
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    data = request.environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return data


def client_gone():
    """A check the batcher calls while the request waits: has the client closed its connection?
    The edge worker puts it in the environ; None elsewhere (Flask's test client has no connection)."""
    return request.environ.get("embedder.client_gone")


def timing_headers(result) -> dict:
    """Where the request's time went, in milliseconds, as text-embeddings-inference reports it
    (``result``: the core's Embeddings or Ranking)."""
    total = time.perf_counter() - g.started
    return {
        "x-total-time": f"{total * 1000:.2f}",
        "x-tokenization-time": f"{result.tokenize_seconds * 1000:.2f}",
        "x-queue-time": f"{result.queue_seconds * 1000:.2f}",
        "x-inference-time": f"{result.inference_seconds * 1000:.2f}",
        "x-input-tokens": str(result.tokens),
    }
