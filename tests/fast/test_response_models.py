"""Every answer is its response model: the routes build them with ``model_construct`` (no
validation on the hot path), so here each 200 body is validated against the model bound to the
app's limits, and a model with a field the route does not fill fails."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from embedder.http.schemas import (
    CohereRerankResponse,
    DecodeResponse,
    EmbedResponse,
    Health,
    Info,
    ModelList,
    OpenAIEmbeddingResponse,
    RerankResponse,
    SimilarityResponse,
    TEIRerankResponse,
    TokenizeResponse,
)
from embedder.http.schemas import Model as ModelCard
from fakes import make_app, make_models_app

CASES = [
    ("post", "/embed", {"inputs": ["a b", "c"]}, EmbedResponse),
    ("post", "/", {"inputs": "a b"}, EmbedResponse),
    ("post", "/embed", {"inputs": "a b", "dimensions": 8, "normalize": False}, EmbedResponse),
    ("post", "/v1/embeddings", {"input": ["a b", "c"]}, OpenAIEmbeddingResponse),
    ("post", "/v1/embeddings", {"input": "a", "encoding_format": "base64"}, OpenAIEmbeddingResponse),
    ("post", "/similarity", {"inputs": {"source_sentence": "a", "sentences": ["a", "b c"]}}, SimilarityResponse),
    ("post", "/", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}, SimilarityResponse),
    ("post", "/tokenize", {"inputs": ["héllo wörld", "x"], "prompt_name": "query"}, TokenizeResponse),
    ("post", "/decode", {"ids": [[101, 5, 102], [7]]}, DecodeResponse),
    ("get", "/v1/models", None, ModelList),
    ("get", "/v1/models/whitespace-mean", None, ModelCard),
    ("get", "/health", None, Health),
    ("get", "/info", None, Info),
]


#: The rerank routes' answers, on an app serving an embedding model and a reranker.
RERANK_CASES = [
    ("post", "/rerank", {"query": "a b", "texts": ["a", "b c"]}, TEIRerankResponse),
    ("post", "/rerank", {"query": "a b", "texts": ["a", "b c"], "return_text": True, "raw_scores": True},
     TEIRerankResponse),
    ("post", "/rerank", {"query": "a b", "documents": ["a", "b c"], "return_documents": True}, RerankResponse),
    ("post", "/v1/rerank", {"query": "a", "documents": ["a", {"text": "b"}], "top_n": 1}, RerankResponse),
    ("post", "/v1/rerank", {"query": "a", "documents": ["a", "b"], "return_documents": True}, RerankResponse),
    ("post", "/v2/rerank", {"model": "reranker", "query": "a", "documents": ["a", "b"], "top_n": None,
                            "max_tokens_per_doc": None}, CohereRerankResponse),
    ("post", "/v2/rerank", {"query": "a", "documents": ["a", "b"], "return_documents": True},
     CohereRerankResponse),
    ("get", "/v1/models", None, ModelList),
    ("get", "/v1/models/fake/reranker", None, ModelCard),
    ("get", "/info", None, Info),
]


@pytest.fixture(scope="module")
def app():
    return make_app()


@pytest.fixture(scope="module")
def models_app():
    return make_models_app()


@pytest.mark.parametrize("method, path, body, model", RERANK_CASES,
                         ids=[f"{method} {path} {i}" for i, (method, path, _, _) in enumerate(RERANK_CASES)])
def test_every_rerank_answer_is_its_model(models_app, method, path, body, model):
    test_every_answer_is_its_model(models_app, method, path, body, model)


@pytest.mark.parametrize("method, path, body, model", CASES,
                         ids=[f"{method} {path} {i}" for i, (method, path, _, _) in enumerate(CASES)])
def test_every_answer_is_its_model(app, method, path, body, model):
    client = app.test_client()
    r = client.post(path, json=body) if method == "post" else client.get(path)
    assert r.status_code == 200, r.get_json()
    bound = app.extensions["embedder.routing"].default[model]
    parsed = bound.model_validate(r.get_json())
    if isinstance(parsed, BaseModel) and not hasattr(parsed, "root"):
        assert set(r.get_json()) == set(bound.model_fields), "an answer with fields its model does not declare"


def test_a_wrong_answer_fails_its_model(app):
    """The check above can fail: a vector longer than the model's dimension is not an EmbedResponse."""
    bound = app.extensions["embedder.routing"].default[EmbedResponse]
    with pytest.raises(ValidationError):
        bound.model_validate([[0.0] * 385])
