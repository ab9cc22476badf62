"""HTTP routes: the original benchmark's ``GET /``; text-embeddings-inference's ``POST /embed``
(and ``POST /``), ``/tokenize``, ``/decode``, ``/similarity``; OpenAI's ``/v1/embeddings`` and
``/v1/models``; and ``/health``, ``/info``, ``/metrics``, ``/openapi.json``."""

from __future__ import annotations

import base64
import os
import time

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from metrics.multiprocess import MetricsUnavailable, render

from .. import __version__
from ..core.errors import ModelNotFound, Unavailable
from ..core.service import WARMUP_TEXT, Embeddings, EmbeddingService, EmbedRequest
from . import openapi
from .responses import json_response
from .schemas import (
    CostModel,
    DecodeResponse,
    Embedding,
    EmbeddingModelType,
    EmbedResponse,
    Health,
    Info,
    Model,
    ModelList,
    ModelType,
    OpenAIEmbeddingResponse,
    Schemas,
    SimilarityResponse,
    Token,
    TokenizeResponse,
    Usage,
)
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


def _schemas() -> Schemas:
    return current_app.extensions["embedder.schemas"]


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


def _vectors(result: Embeddings) -> Response:
    """TEI's answer: the vectors, one row per input."""
    body = _schemas()[EmbedResponse].model_construct(result.vectors)
    return json_response(body, headers=_timing_headers(result))


@api.post("/embed")
def embed():
    data = parse_json(_body(), request.content_type)
    return _vectors(_service().embed(parse_tei(data, _schemas()), _client_gone()))


@api.post("/")
def tei_base_route():
    """TEI's base route, where huggingface_hub's InferenceClient(model=URL) posts every task:
    ``feature_extraction`` sends /embed's request, ``sentence_similarity`` /similarity's (``inputs``
    an object); each is answered as its route answers it."""
    data = parse_json(_body(), request.content_type)
    if isinstance(data.get("inputs"), dict):
        return _similarity(data)
    return _vectors(_service().embed(parse_tei(data, _schemas()), _client_gone()))


@api.post("/v1/embeddings")
@api.post("/embeddings")
def openai_embeddings():
    service, schemas = _service(), _schemas()
    data = parse_json(_body(), request.content_type)
    parsed, encoding_format = parse_openai(data, schemas)
    result = service.embed(parsed, _client_gone())
    if encoding_format == "base64":
        items = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in result.vectors]
    else:
        items = result.vectors
    embedding = schemas[Embedding]
    body = schemas[OpenAIEmbeddingResponse].model_construct(
        object="list",
        data=[embedding.model_construct(object="embedding", index=i, embedding=item) for i, item in enumerate(items)],
        model=service.model_id,
        usage=Usage.model_construct(prompt_tokens=result.tokens, total_tokens=result.tokens))
    return json_response(body, headers=_timing_headers(result))


@api.post("/similarity")
def similarity():
    return _similarity(parse_json(_body(), request.content_type))


def _similarity(data: dict):
    schemas = _schemas()
    scores, result = _service().similarity(parse_similarity(data, schemas), _client_gone())
    return json_response(schemas[SimilarityResponse].model_construct(scores), headers=_timing_headers(result))


@api.post("/tokenize")
def tokenize():
    """Every token of each text, untruncated, as TEI gives them: ``start``/``stop`` are UTF-8 byte
    offsets into the text (prompt included), None for special tokens, whose ``text`` is the token."""
    schemas = _schemas()
    texts, add_special_tokens, prompt_name = parse_tokenize(parse_json(_body(), request.content_type), schemas)
    token = schemas[Token]
    rows = []
    for text, tokens in _service().tokens(texts, add_special_tokens, prompt_name):
        row = []
        for token_id, piece, special, start, stop in tokens:
            if special:
                row.append(token.model_construct(id=token_id, text=piece, special=True, start=None, stop=None))
            else:
                begin, piece = len(text[:start].encode("utf-8")), text[start:stop]
                row.append(token.model_construct(id=token_id, text=piece, special=False, start=begin,
                                                 stop=begin + len(piece.encode("utf-8"))))
        rows.append(row)
    return json_response(schemas[TokenizeResponse].model_construct(rows))


@api.post("/decode")
def decode():
    schemas = _schemas()
    ids, skip_special_tokens = parse_decode(parse_json(_body(), request.content_type), schemas)
    return json_response(schemas[DecodeResponse].model_construct(_service().decode(ids, skip_special_tokens)))


def _model_card(service: EmbeddingService) -> Model:
    return Model(id=service.model_id, object="model", created=service.created, owned_by="embedder")


@api.get("/v1/models")
@api.get("/models")
def models():
    """OpenAI's model list: the one model this server serves."""
    return json_response(ModelList(object="list", data=[_model_card(_service())]))


@api.get("/v1/models/<path:model>")
@api.get("/models/<path:model>")
def model(model: str):
    service = _service()
    if model not in _schemas().model_names:
        raise ModelNotFound(f"The model '{model}' does not exist on this server; it serves "
                            f"'{service.model_id}'", param="model")
    return json_response(_model_card(service))


@api.get("/health")
def health():
    if not _service().healthy():
        raise Unavailable("model not loaded or batching thread not running")
    return json_response(Health(status="ok"))


@api.get("/info")
def info():
    """The model, limits and worker layout in force, with text-embeddings-inference's fields."""
    service = _service()
    s, model, layout = service.settings, service.model, service.layout
    return json_response(Info(
        model_id=service.model_id,
        architecture=model.architecture,
        tokenizer=model.tokenizer_kind,
        modules=list(model.modules),
        pooling=list(model.pooling_modes),
        dimension=model.dimension,
        max_input_tokens=model.max_input_tokens,
        normalized_by_model=model.ends_with_normalize,
        prompts=sorted(model.prompts),
        default_prompt_name=model.default_prompt_name,
        loaded_with=model.loaded_with,
        loader_note=model.loader_note or None,
        backend=service.backend.name,
        workers=layout.workers,
        threads_per_worker=layout.threads,
        pid=os.getpid(),
        max_batch_size=s.max_batch_size,
        max_batch_tokens=s.max_batch_tokens,
        batch_cost_ms=CostModel(**service.batcher.cost.model.as_dict()),
        max_queued_inputs=s.max_queued_inputs,
        max_queued_tokens=s.max_queued_tokens,
        max_inputs=s.max_inputs,
        max_input_chars=s.max_input_chars,
        max_body_bytes=s.max_body_bytes,
        request_timeout=s.request_timeout,
        version=__version__,
        # text-embeddings-inference's /info fields, for clients that read them.
        model_sha=None,
        model_dtype=s.quantize or "float32",
        served_model_name=service.model_id,
        model_type=ModelType(embedding=EmbeddingModelType(pooling="_".join(model.pooling_modes) or "mean")),
        max_concurrent_requests=layout.workers * s.http_threads,
        max_input_length=model.max_input_tokens,
        max_batch_requests=s.max_batch_size,
        max_client_batch_size=s.max_inputs,
        auto_truncate=True,
        tokenization_workers=layout.workers * s.http_threads,
        sha=None,
        docker_label=None,
    ))


@api.get("/metrics")
def metrics():
    try:
        body, content_type = render()
    except MetricsUnavailable as exc:
        raise Unavailable(str(exc)) from None
    return Response(body, content_type=content_type)


@api.get("/openapi.json")
def openapi_document():
    service = _service()
    return Response(openapi.document_bytes(service.settings, _schemas(), service.model_id),
                    mimetype="application/json")
