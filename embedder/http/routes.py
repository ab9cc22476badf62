"""HTTP routes: the original benchmark's ``GET /``; text-embeddings-inference's ``POST /embed``
(and ``POST /``), ``/tokenize``, ``/decode``, ``/similarity``; OpenAI's ``/v1/embeddings`` and
``/v1/models``; and ``/health``, ``/info``, ``/metrics``, ``/openapi.json``."""

from __future__ import annotations

import base64
import os

from flask import Blueprint, Response, current_app, g, request

from metrics.multiprocess import MetricsUnavailable, render

from .. import __version__
from ..core.errors import ModelNotFound, Unavailable
from ..core.models import ServedModels
from ..core.service import WARMUP_TEXT, Embeddings, EmbeddingService, EmbedRequest, ModelService
from . import openapi
from .exchange import client_gone, read_body, timing_headers
from .responses import json_response
from .routing import Routing
from .schemas import (
    CostModel,
    DecodeResponse,
    Embedding,
    EmbeddingModelType,
    EmbeddingType,
    EmbedResponse,
    Health,
    Info,
    Model,
    ModelInfo,
    ModelList,
    OpenAIEmbeddingResponse,
    RerankerModelType,
    RerankerType,
    Schemas,
    SimilarityResponse,
    Token,
    TokenizeResponse,
    Usage,
)
from .validation import (
    parse_decode,
    parse_json,
    parse_openai,
    parse_similarity,
    parse_tei,
    parse_tokenize,
    refuse_token_ids,
)

api = Blueprint("api", __name__)


def _models() -> ServedModels:
    return current_app.extensions["embedder"]


def _routing() -> Routing:
    return current_app.extensions["embedder.routing"]


def _embedding(data: dict) -> tuple[EmbeddingService, Schemas]:
    """The embedding model the body names (``model``; the first one when none), and its models;
    the metrics count the request for it."""
    service, schemas = _routing().embedding(data)
    g.model = service.model_id
    return service, schemas


@api.get("/")
def original_benchmark():
    """Encode "this is a test" like the original Flask benchmark did, through the batcher."""
    service, _ = _embedding({})
    service.embed(EmbedRequest(texts=[WARMUP_TEXT]), client_gone())
    return Response("ok", mimetype="text/plain")


def _vectors(result: Embeddings, schemas: Schemas) -> Response:
    """TEI's answer: the vectors, one row per input."""
    body = schemas[EmbedResponse].model_construct(result.vectors)
    return json_response(body, headers=timing_headers(result))


@api.post("/embed")
def embed():
    data = parse_json(read_body(), request.content_type)
    service, schemas = _embedding(data)
    return _vectors(service.embed(parse_tei(data, schemas), client_gone()), schemas)


@api.post("/")
def tei_base_route():
    """TEI's base route, where huggingface_hub's InferenceClient(model=URL) posts every task:
    ``feature_extraction`` sends /embed's request, ``sentence_similarity`` /similarity's (``inputs``
    an object); each is answered as its route answers it."""
    data = parse_json(read_body(), request.content_type)
    if isinstance(data.get("inputs"), dict):
        return _similarity(data)
    service, schemas = _embedding(data)
    return _vectors(service.embed(parse_tei(data, schemas), client_gone()), schemas)


@api.post("/v1/embeddings")
@api.post("/embeddings")
def openai_embeddings():
    data = parse_json(read_body(), request.content_type)
    refuse_token_ids(data, _routing().default.openai_token_ids)
    service, schemas = _embedding(data)
    parsed, encoding_format = parse_openai(data, schemas)
    result = service.embed(parsed, client_gone())
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
    return json_response(body, headers=timing_headers(result))


@api.post("/similarity")
def similarity():
    return _similarity(parse_json(read_body(), request.content_type))


def _similarity(data: dict):
    service, schemas = _embedding(data)
    scores, result = service.similarity(parse_similarity(data, schemas), client_gone())
    return json_response(schemas[SimilarityResponse].model_construct(scores), headers=timing_headers(result))


@api.post("/tokenize")
def tokenize():
    """Every token of each text, untruncated, as TEI gives them: ``start``/``stop`` are UTF-8 byte
    offsets into the text (prompt included), None for special tokens, whose ``text`` is the token.
    The answer is built while the tokens count against the worker's budget (``service.tokens``)."""
    data = parse_json(read_body(), request.content_type)
    service, schemas = _embedding(data)
    texts, add_special_tokens, prompt_name = parse_tokenize(data, schemas)
    token = schemas[Token]
    with service.tokens(texts, add_special_tokens, prompt_name, client_gone()) as tokenized:
        rows = [_token_row(token, text, tokens) for text, tokens in tokenized]
        return json_response(schemas[TokenizeResponse].model_construct(rows))


def _token_row(token: type, text: str, tokens: list[tuple[int, str, bool, int, int]]) -> list:
    """One text's tokens as TEI's answer has them. Byte offsets are counted on from the previous
    token's (offsets only go forward, but in case one does not, it is counted from the start), so a
    long text costs its length once, not once per token; an ASCII text's are its character offsets."""
    row = []
    ascii_text = text.isascii()
    char_at = byte_at = 0  # a character offset and its byte offset
    for token_id, piece, special, start, stop in tokens:
        if special:
            row.append(token.model_construct(id=token_id, text=piece, special=True, start=None, stop=None))
            continue
        piece = text[start:stop]
        if ascii_text:
            begin, end = start, stop
        else:
            if start < char_at:
                char_at = byte_at = 0
            byte_at += len(text[char_at:start].encode("utf-8"))
            char_at = start
            begin = byte_at
            end = begin + len(piece.encode("utf-8"))
        row.append(token.model_construct(id=token_id, text=piece, special=False, start=begin, stop=end))
    return row


@api.post("/decode")
def decode():
    data = parse_json(read_body(), request.content_type)
    service, schemas = _embedding(data)
    ids, skip_special_tokens = parse_decode(data, schemas)
    texts = service.decode(ids, skip_special_tokens, client_gone())
    return json_response(schemas[DecodeResponse].model_construct(texts))


def _model_card(service: ModelService) -> Model:
    return Model(id=service.model_id, object="model", created=_models().created, owned_by="embedder",
                 kind=service.kind)


@api.get("/v1/models")
@api.get("/models")
def models():
    """OpenAI's model list: every model this server serves, embedding models and rerankers, with
    their kind."""
    return json_response(ModelList(object="list", data=[_model_card(s) for s in _models().services.values()]))


@api.get("/v1/models/<path:model>")
@api.get("/models/<path:model>")
def model(model: str):
    served = _models().services.get(_routing().aliases.get(model, ""))
    if served is None:
        names = ", ".join(f"'{name}'" for name in _models().services)
        raise ModelNotFound(f"The model '{model}' does not exist on this server; it serves {names}",
                            param="model")
    return json_response(_model_card(served))


@api.get("/health")
def health():
    if not _models().healthy():
        raise Unavailable("model not loaded or batching thread not running")
    return json_response(Health(status="ok"))


def _model_info(service: ModelService) -> ModelInfo:
    model = service.model
    return ModelInfo(
        model_id=service.model_id,
        kind=service.kind,
        architecture=model.architecture,
        tokenizer=model.tokenizer_kind,
        modules=list(model.modules),
        pooling=list(model.pooling_modes),
        dimension=model.dimension,
        max_input_tokens=model.max_input_tokens,
        normalized_by_model=model.ends_with_normalize,
        prompts=sorted(model.prompts),
        default_prompt_name=model.default_prompt_name,
        activation=model.activation or None,
        loaded_with=model.loaded_with,
        loader_note=model.loader_note or None,
        backend=service.backend.name,
        batch_cost_ms=CostModel(**service.batcher.cost.model.as_dict()),
    )


@api.get("/info")
def info():
    """Every model, the limits and the worker layout in force; the first model's fields also at
    the top, with text-embeddings-inference's, for clients that read one model's /info."""
    models = _models()
    s, layout = models.settings, models.layout
    described = [_model_info(service) for service in models.services.values()]
    first = described[0]
    model_type = (RerankerType(reranker=RerankerModelType(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}))
                  if first.kind == "reranker"
                  else EmbeddingType(embedding=EmbeddingModelType(pooling="_".join(first.pooling) or "mean")))
    return json_response(Info(
        **first.__dict__,
        models=described,
        workers=layout.workers,
        threads_per_worker=layout.threads,
        pid=os.getpid(),
        max_batch_size=s.max_batch_size,
        max_batch_tokens=s.max_batch_tokens,
        max_queued_inputs=s.max_queued_inputs,
        max_queued_tokens=s.max_queued_tokens,
        max_inputs=s.max_inputs,
        max_documents=s.max_documents,
        max_input_chars=s.max_input_chars,
        max_body_bytes=s.max_body_bytes,
        request_timeout=s.request_timeout,
        version=__version__,
        # text-embeddings-inference's /info fields, for clients that read them.
        model_sha=None,
        model_dtype=s.precision,
        served_model_name=first.model_id,
        model_type=model_type,
        max_concurrent_requests=layout.workers * s.http_threads,
        max_input_length=first.max_input_tokens,
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
    routing = _routing()
    return Response(openapi.document_bytes(_models().settings, routing.default, routing.default.model_id),
                    mimetype="application/json")
