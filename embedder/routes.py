"""HTTP routes: the original benchmark's ``GET /``; text-embeddings-inference's ``POST /embed``
(and ``POST /``), ``/tokenize``, ``/decode``, ``/similarity``; OpenAI's ``/v1/embeddings`` and
``/v1/models``; and ``/health``, ``/info``, ``/metrics``, ``/openapi.json``."""

from __future__ import annotations

import base64
import time

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from metrics.multiprocess import render

from . import openapi
from .errors import ModelNotFound, Unavailable
from .responses import json_response
from .service import WARMUP_TEXT, EmbeddingService, EmbedRequest, Embeddings
from .validation import parse_decode, parse_json, parse_openai, parse_similarity, parse_tei, parse_tokenize

api = Blueprint("api", __name__)


def _body() -> bytes:
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


def _client_gone():
    """A check the batcher calls while the request waits: has the client closed its connection?
    The edge worker puts it in the environ; None elsewhere (Flask's test client has no connection)."""
    return request.environ.get("embedder.client_gone")


def _service() -> EmbeddingService:
    return current_app.extensions["embedder"]


def _timing_headers(result: Embeddings) -> dict:
    """Where the request's time went, in milliseconds, as text-embeddings-inference reports it."""
    total = time.perf_counter() - g.started
    return {
        "x-total-time": f"{total * 1000:.2f}",
        "x-tokenization-time": f"{result.tokenize_seconds * 1000:.2f}",
        "x-queue-time": f"{result.queue_seconds * 1000:.2f}",
        "x-inference-time": f"{result.inference_seconds * 1000:.2f}",
        "x-input-tokens": str(result.tokens),
    }


@api.get("/")
def original_benchmark():
    """Encode "this is a test" like the original Flask benchmark did, through the batcher."""
    _service().embed(EmbedRequest(texts=[WARMUP_TEXT]), _client_gone())
    return Response("ok", mimetype="text/plain")


@api.post("/embed")
def embed():
    service = _service()
    data = parse_json(_body(), request.content_type)
    result = service.embed(parse_tei(data, service.schemas), _client_gone())
    return json_response(result.vectors, headers=_timing_headers(result))


@api.post("/")
def tei_base_route():
    """TEI's base route, where huggingface_hub's InferenceClient(model=URL) posts every task:
    ``feature_extraction`` sends /embed's request, ``sentence_similarity`` /similarity's (``inputs``
    an object); each is answered as its route answers it."""
    data = parse_json(_body(), request.content_type)
    if isinstance(data.get("inputs"), dict):
        return _similarity(data)
    service = _service()
    result = service.embed(parse_tei(data, service.schemas), _client_gone())
    return json_response(result.vectors, headers=_timing_headers(result))


@api.post("/v1/embeddings")
@api.post("/embeddings")
def openai_embeddings():
    service = _service()
    data = parse_json(_body(), request.content_type)
    parsed = parse_openai(data, service.schemas)
    result = service.embed(parsed, _client_gone())
    if parsed.encoding_format == "base64":
        items = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in result.vectors]
    else:
        items = result.vectors
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": item} for i, item in enumerate(items)],
        "model": service.model_id,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }
    return json_response(body, headers=_timing_headers(result))


@api.post("/similarity")
def similarity():
    return _similarity(parse_json(_body(), request.content_type))


def _similarity(data: dict):
    service = _service()
    scores, result = service.similarity(parse_similarity(data, service.schemas), _client_gone())
    return json_response(scores, headers=_timing_headers(result))


@api.post("/tokenize")
def tokenize():
    service = _service()
    texts, add_special_tokens, prompt_name = parse_tokenize(parse_json(_body(), request.content_type),
                                                            service.schemas)
    return json_response(service.tokenize(texts, add_special_tokens, prompt_name))


@api.post("/decode")
def decode():
    service = _service()
    ids, skip_special_tokens = parse_decode(parse_json(_body(), request.content_type), service.schemas)
    return json_response(service.decode(ids, skip_special_tokens))


def _model_card(service: EmbeddingService) -> dict:
    return {"id": service.model_id, "object": "model", "created": service.created, "owned_by": "embedder"}


@api.get("/v1/models")
@api.get("/models")
def models():
    """OpenAI's model list: the one model this server serves."""
    return json_response({"object": "list", "data": [_model_card(_service())]})


@api.get("/v1/models/<path:model>")
@api.get("/models/<path:model>")
def model(model: str):
    service = _service()
    if model not in service.limits.model_names:
        raise ModelNotFound(f"The model '{model}' does not exist on this server; it serves "
                            f"'{service.model_id}'", param="model")
    return json_response(_model_card(service))


@api.get("/health")
def health():
    if not _service().healthy():
        raise Unavailable("model not loaded or batching thread not running")
    return json_response({"status": "ok"})


@api.get("/info")
def info():
    return json_response(_service().info())


@api.get("/metrics")
def metrics():
    body, content_type = render()
    return Response(body, content_type=content_type)


@api.get("/openapi.json")
def openapi_document():
    return Response(openapi.document_bytes(_service()), mimetype="application/json")
