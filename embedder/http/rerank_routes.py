"""Rerank routes, one per API shape, all on the same core (``core/rerank.py``):
text-embeddings-inference's ``POST /rerank`` (a list, best first; Infinity's ``documents`` body
there is answered as ``/v1/rerank``), Jina's, vLLM's and Cohere's v1 ``POST /v1/rerank``, and
Cohere's v2 ``POST /v2/rerank``. ``model`` names the reranker; none is the first one."""

from __future__ import annotations

import uuid

from flask import Blueprint, current_app, g, request

from ..core.errors import InputTooLong
from ..core.rerank import Ranking, RerankService
from .exchange import client_gone, read_body, timing_headers
from .responses import json_response
from .routing import Routing
from .schemas import (
    ApiVersion,
    BilledUnits,
    CohereRerankResponse,
    DocumentText,
    RerankMeta,
    RerankResponse,
    RerankResult,
    RerankResultDocument,
    RerankUsage,
    Schemas,
    TEIRank,
    TEIRankText,
    TEIRerankResponse,
)
from .validation import parse_cohere_rerank, parse_json, parse_rerank, parse_tei_rerank

rerank_api = Blueprint("rerank", __name__)


def _reranker(data: dict) -> tuple[RerankService, Schemas]:
    routing: Routing = current_app.extensions["embedder.routing"]
    service, schemas = routing.reranker(data)
    g.model = service.model_id
    return service, schemas


def _ranked(service: RerankService, request_, documents_field: str) -> Ranking:
    """The core's ranking; a document too long (truncation off) named by the shape's field."""
    try:
        return service.rerank(request_, client_gone())
    except InputTooLong as exc:
        exc.param = documents_field
        raise


@rerank_api.post("/rerank")
def tei_rerank():
    """text-embeddings-inference's shape (``texts``); a body with ``documents`` instead (Infinity's,
    and what litellm's ``infinity/`` and ``hosted_vllm/`` providers send here) is answered as
    ``/v1/rerank``."""
    data = parse_json(read_body(), request.content_type)
    if "texts" not in data and "documents" in data:
        return _v1_answer(data)
    service, schemas = _reranker(data)
    parsed, return_text = parse_tei_rerank(data, schemas)
    ranking = _ranked(service, parsed, "texts")
    rows = [TEIRankText.model_construct(index=i, score=ranking.scores[i], text=parsed.documents[i])
            if return_text else TEIRank.model_construct(index=i, score=ranking.scores[i])
            for i in ranking.order]
    return json_response(schemas[TEIRerankResponse].model_construct(rows), headers=timing_headers(ranking))


def _results(ranking: Ranking, documents: list[str], return_documents: bool) -> list:
    return [RerankResultDocument.model_construct(index=i, relevance_score=ranking.scores[i],
                                                 document=DocumentText.model_construct(text=documents[i]))
            if return_documents else RerankResult.model_construct(index=i, relevance_score=ranking.scores[i])
            for i in ranking.order]


def _meta(version: str) -> RerankMeta:
    return RerankMeta.model_construct(api_version=ApiVersion.model_construct(version=version),
                                      billed_units=BilledUnits.model_construct(search_units=1))


@rerank_api.post("/v1/rerank")
def rerank():
    """Jina's, vLLM's and Cohere's v1 shape: ``results`` with ``relevance_score``."""
    return _v1_answer(parse_json(read_body(), request.content_type))


def _v1_answer(data: dict):
    service, schemas = _reranker(data)
    parsed, return_documents = parse_rerank(data, schemas)
    ranking = _ranked(service, parsed, "documents")
    body = schemas[RerankResponse].model_construct(
        id=str(uuid.uuid4()), model=service.model_id,
        results=_results(ranking, parsed.documents, return_documents),
        usage=RerankUsage.model_construct(total_tokens=ranking.tokens, prompt_tokens=ranking.tokens),
        meta=_meta("1"))
    return json_response(body, headers=timing_headers(ranking))


@rerank_api.post("/v2/rerank")
def cohere_rerank():
    """Cohere's v2 shape (Cohere's ``ClientV2.rerank``, LangChain's ``CohereRerank``)."""
    data = parse_json(read_body(), request.content_type)
    service, schemas = _reranker(data)
    parsed, return_documents = parse_cohere_rerank(data, schemas)
    ranking = _ranked(service, parsed, "documents")
    body = schemas[CohereRerankResponse].model_construct(
        id=str(uuid.uuid4()), results=_results(ranking, parsed.documents, return_documents), meta=_meta("2"))
    return json_response(body, headers=timing_headers(ranking))
