"""JSON responses (orjson, NumPy arrays included) from the response models, and errors in the shape
of the route's API."""

from __future__ import annotations

import orjson
from flask import Response, request
from pydantic import BaseModel, RootModel

from .error_table import cohere_body, kind_of, native_body, openai_body


def is_openai_path(path: str) -> bool:
    """Whether errors on ``path`` take OpenAI's shape: OpenAI's routes, and anything under ``/v1/``
    (an unknown route there is an OpenAI client's mistake, so its 404 is OpenAI's too)."""
    return path.startswith(("/v1/", "/models/")) or path in ("/embeddings", "/models")


def is_cohere_path(path: str) -> bool:
    """Whether errors on ``path`` take Cohere's shape: its v2 API (``/v2/rerank``)."""
    return path.startswith("/v2/")


def _plain(value):
    """orjson's fallback for the response models (built with ``model_construct``: no validation
    on the hot path): a model as its fields, a root model as its root (NumPy arrays stay arrays,
    which orjson writes natively)."""
    if isinstance(value, RootModel):
        return value.root
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    """``body`` (a response model, or a plain error body) as JSON."""
    return Response(orjson.dumps(body, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                    headers=headers, mimetype="application/json")


def error_response(error: BaseException, headers: dict | None = None) -> Response:
    """The error as the route's API shapes it, with the table's status and fixed headers."""
    kind = kind_of(error)
    path = request.path
    body = (openai_body(error) if is_openai_path(path) else cohere_body(error) if is_cohere_path(path)
            else native_body(error))
    return json_response(body, kind.status, {**kind.headers, **(headers or {})})
