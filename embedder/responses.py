"""JSON responses (orjson, numpy arrays included) and errors in the shape of the route's API."""

from __future__ import annotations

import orjson
from flask import Response, request

from .http_errors import kind_of, native_body, openai_body

def is_openai_path(path: str) -> bool:
    """Whether errors on ``path`` take OpenAI's shape: OpenAI's routes, and anything under ``/v1/``
    (an unknown route there is an OpenAI client's mistake, so its 404 is OpenAI's too)."""
    return path.startswith(("/v1/", "/models/")) or path in ("/embeddings", "/models")


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                    headers=headers, mimetype="application/json")


def error_response(error: BaseException, headers: dict | None = None) -> Response:
    """The error as the route's API shapes it, with the table's status and fixed headers."""
    kind = kind_of(error)
    body = openai_body(error) if is_openai_path(request.path) else native_body(error)
    return json_response(body, kind.status, {**kind.headers, **(headers or {})})
