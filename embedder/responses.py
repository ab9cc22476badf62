"""JSON responses (orjson, numpy arrays included) and errors in the shape of the route's API."""

from __future__ import annotations

import orjson
from flask import Response, request

from .http_errors import kind_of, native_body, openai_body

OPENAI_ROUTES = ("/v1/embeddings", "/embeddings")


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                    headers=headers, mimetype="application/json")


def error_response(error: BaseException, headers: dict | None = None) -> Response:
    """The error as the route's API shapes it, with the table's status and fixed headers."""
    kind = kind_of(error)
    body = openai_body(error) if request.path in OPENAI_ROUTES else native_body(error)
    return json_response(body, kind.status, {**kind.headers, **(headers or {})})
