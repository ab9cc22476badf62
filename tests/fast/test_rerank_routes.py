"""Several models in one app, rerankers among them (fast tier: the fake embedding model and the
fake reranker of tests/support/fakes.py, through Flask's test client).

The three rerank shapes rank the same way (the core's), each in its own request and response
shape and its own error shape; ``model`` chooses among the served models on every route."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY

from fakes import expected, make_models_app

QUERY = "the cat sat"
DOCS = ["a dog ran", "the cat sat on the mat", "cat", "the weather is nice today"]


@pytest.fixture(scope="module")
def app():
    return make_models_app()


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def want(app, query=QUERY, docs=DOCS, raw=False):
    """The scores the app must answer: the fake reranker's, in input order."""
    model = app.reranker.model
    logits = app.rerank_backend.vectors(model.pair_ids(query, docs, True))[:, 0]
    return logits if raw else model.activate(logits)


def test_tei_rerank_is_a_list_best_first(app, client):
    r = client.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert r.status_code == 200 and r.headers["x-input-tokens"]
    scores = want(app)
    body = r.get_json()
    assert [row["index"] for row in body] == sorted(range(len(DOCS)), key=lambda i: -scores[i])
    for row in body:
        assert set(row) == {"index", "score"} and row["score"] == pytest.approx(float(scores[row["index"]]), abs=1e-6)
    raw = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True,
                                       "return_text": True}).get_json()
    logits = want(app, raw=True)
    assert all(row["text"] == DOCS[row["index"]] and row["score"] == pytest.approx(float(logits[row["index"]]),
                                                                                   abs=1e-6) for row in raw)
    assert raw[0]["score"] > 1  # a logit, not a probability


def test_v1_and_v2_rank_alike_with_top_n_and_documents(app, client):
    scores = want(app)
    best = sorted(range(len(DOCS)), key=lambda i: -scores[i])
    v1 = client.post("/v1/rerank", json={"model": "fake/reranker", "query": QUERY,
                                         "documents": [DOCS[0], {"text": DOCS[1]}, *DOCS[2:]], "top_n": 2,
                                         "return_documents": True}).get_json()
    assert [row["index"] for row in v1["results"]] == best[:2]
    assert v1["results"][0]["document"] == {"text": DOCS[best[0]]}
    assert v1["model"] == "fake/reranker" and v1["usage"]["total_tokens"] > 0 and v1["id"]
    v2 = client.post("/v2/rerank", json={"model": "reranker", "query": QUERY, "documents": DOCS,
                                         "top_n": None, "max_tokens_per_doc": None}).get_json()
    assert [row["index"] for row in v2["results"]] == best and "document" not in v2["results"][0]
    assert v2["meta"]["api_version"]["version"] == "2"
    assert [row["relevance_score"] for row in v2["results"]] == pytest.approx([float(scores[i]) for i in best])
    many = client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 99}).get_json()
    assert len(many["results"]) == len(DOCS)


def test_infinity_body_on_tei_route_gets_the_v1_answer(client):
    body = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "return_documents": True}).get_json()
    assert set(body) == {"id", "model", "results", "usage", "meta"}
    assert body["results"][0]["document"]["text"] in DOCS


def test_the_document_is_cut_never_the_query(app, client):
    long_doc = " ".join(f"w{i}" for i in range(200))
    cut = client.post("/rerank", json={"query": QUERY, "texts": [long_doc]})
    assert cut.status_code == 200 and int(cut.headers["x-input-tokens"]) == app.reranker.model.max_input_tokens
    refused = client.post("/rerank", json={"query": QUERY, "texts": ["ok", long_doc], "truncate": False})
    assert refused.status_code == 422
    assert refused.get_json()["error"].startswith("'texts[1]' has 206 tokens, more than the model's 32")
    per_doc = client.post("/v2/rerank", json={"query": QUERY, "documents": [long_doc], "max_tokens_per_doc": 3})
    assert per_doc.status_code == 200 and per_doc.headers["x-input-tokens"] == str(3 + 3 + 3)
    long_query = " ".join(["why"] * 40)
    r = client.post("/v1/rerank", json={"query": long_query, "documents": ["a"]})
    assert r.status_code == 422 and r.get_json()["error"]["param"] == "query"
    assert "leaving no room for a document" in r.get_json()["error"]["message"]


@pytest.mark.parametrize("path, body, field", [
    ("/rerank", {"query": "q", "texts": []}, "'texts' must not be empty"),
    ("/rerank", {"query": "", "texts": ["a"]}, "'query' is an empty string"),
    ("/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "left"}, "'truncation_direction' must be"),
    ("/v1/rerank", {"query": "q", "documents": ["a", {"txt": "b"}]}, "'documents[1]' has no 'text'"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, "'top_n' must be a positive integer"),
    ("/v2/rerank", {"query": "q", "documents": ["a", 3]}, "'documents' must be a list of strings"),
    ("/v2/rerank", {"query": "q"}, "missing field 'documents'"),
    ("/v2/rerank", {"query": "q", "documents": ["a"] * 1001}, "'documents' has 1001 documents, more than the limit"),
])
def test_bad_input_gets_the_shapes_own_error(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.get_json()
    error = r.get_json()
    message = {"/rerank": lambda e: e["error"], "/v1/rerank": lambda e: e["error"]["message"],
               "/v2/rerank": lambda e: e["message"]}[path](error)
    assert message.startswith(field), message
    if path == "/v2/rerank":
        assert set(error) == {"message"}


def test_model_chooses_among_the_served_models(app, client):
    wrong_kind = client.post("/v1/rerank", json={"model": "whitespace-mean", "query": "q", "documents": ["a"]})
    assert wrong_kind.get_json()["error"]["message"].startswith(
        "The model 'fake/whitespace-mean' is an embedding model, not a reranker")
    unknown = client.post("/v2/rerank", json={"model": "nope", "query": "q", "documents": ["a"]})
    assert unknown.status_code == 404 and "'fake/reranker' (reranker)" in unknown.get_json()["message"]
    r = client.post("/v1/embeddings", json={"model": "fake/reranker", "input": "a"})
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "model_not_found"
    assert client.post("/embed", json={"inputs": "a", "model": 3}).status_code == 422
    named = client.post("/embed", json={"inputs": "a b", "model": "fake/whitespace-mean"}).get_json()
    assert np.abs(np.array(named[0]) - expected(app, ["a b"])[0]).max() < 1e-6
    assert client.post("/embed", json={"inputs": "a", "model": "reranker"}).status_code == 404
    assert client.post("/tokenize", json={"inputs": "a", "model": "whitespace-mean"}).status_code == 200


def test_models_info_and_metrics_name_every_model(app, client):
    listed = client.get("/v1/models").get_json()["data"]
    assert [(m["id"], m["kind"]) for m in listed] == [("fake/whitespace-mean", "embedding"),
                                                      ("fake/reranker", "reranker")]
    assert client.get("/v1/models/reranker").get_json()["kind"] == "reranker"
    info = client.get("/info").get_json()
    assert [(m["model_id"], m["kind"], m["dimension"]) for m in info["models"]] == [
        ("fake/whitespace-mean", "embedding", 384), ("fake/reranker", "reranker", 1)]
    assert info["models"][1]["activation"] == "Sigmoid" and info["max_documents"] == 1000
    assert info["model_id"] == "fake/whitespace-mean" and "embedding" in info["model_type"]

    def inputs(model):
        return REGISTRY.get_sample_value("embedder_inputs_total", {"model": model}) or 0

    before = inputs("fake/reranker"), inputs("fake/whitespace-mean")
    client.post("/rerank", json={"query": QUERY, "texts": DOCS})
    client.post("/embed", json={"inputs": ["a", "b"]})
    assert (inputs("fake/reranker") - before[0], inputs("fake/whitespace-mean") - before[1]) == (len(DOCS), 2)
    assert REGISTRY.get_sample_value("embedder_requests_total",
                                     {"route": "/rerank", "code": "200", "model": "fake/reranker"}) >= 1


def test_openapi_documents_the_rerank_routes(client):
    document = client.get("/openapi.json").get_json()
    assert {"/rerank", "/v1/rerank", "/v2/rerank"} <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert schemas["CohereRerankRequest"]["properties"]["documents"]["maxItems"] == 1000
    assert document["paths"]["/v2/rerank"]["post"]["responses"]["422"]["$ref"].endswith("cohere422")


def test_raw_scores_and_truncate_are_honoured_on_every_shape(app, client):
    logits = want(app, raw=True)
    for path in ("/v1/rerank", "/v2/rerank"):
        body = client.post(path, json={"query": QUERY, "documents": DOCS, "raw_scores": True}).get_json()
        assert {row["index"]: row["relevance_score"] for row in body["results"]} == pytest.approx(
            {i: float(logits[i]) for i in range(len(DOCS))}, abs=1e-6)
        long_doc = " ".join(f"w{i}" for i in range(200))
        refused = client.post(path, json={"query": QUERY, "documents": ["ok", long_doc], "truncate": False})
        assert refused.status_code == 422 and "'documents[1]' has 206 tokens" in refused.text
