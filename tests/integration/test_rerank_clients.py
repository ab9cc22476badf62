"""The rerank clients people already use (pinned in requirements-test.txt), set up as their own docs
say for a self-hosted server, against one real server (onnx, 2 workers) serving a tiny embedding
model beside a tiny reranker (``EMBEDDER_MODELS``): each gets exactly the ranking and the scores of
``CrossEncoder(path).predict`` (within 1e-5), on documents with CJK, emoji and one over the model's
limit; openai lists both models with their kind; and an unknown model reaches the Cohere SDK as its
NotFoundError, with our message. Each test checks which route its client called (the server's own
request counts).

What each client sends (read from its source):

- cohere ``ClientV2.rerank``: ``POST /v2/rerank`` ``{"model", "query", "documents", "top_n"}``;
  ``Client.rerank`` (v1): ``POST /v1/rerank`` with ``return_documents`` when given.
- LangChain ``CohereRerank`` (langchain-cohere): the cohere ``ClientV2``, ``top_n`` and
  ``max_tokens_per_doc: null`` in the body.
- LlamaIndex ``TextEmbeddingInference`` (llama-index-postprocessor-tei-rerank): ``POST /rerank``
  ``{"query", "texts"}``, no model (the server's first reranker), the nodes' scores set from it.
- litellm ``rerank`` with ``cohere/<model>`` and ``api_base``: ``POST /v2/rerank``, Cohere's v2 body.
- openai ``models.list()``: ``GET /v1/models``; ``models.retrieve(id)``: ``GET /v1/models/<id>``.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import client_pools
import tiny_models as tiny
from bench.harness.servers import Gunicorn
from client_pools import collect_client_pools  # noqa: F401 (autouse: collects what the clients left open)

# Allowed here only: the client libraries' own connection pools (tests/support/client_pools.py).
pytestmark = [pytest.mark.integration, *client_pools.ALLOWED]
TOL = 1e-5
TIMEOUT = 60  # seconds: every client call here is bounded by this
QUERY = "Who is playing a guitar?"
EMBEDDER = "tiny-embedder"
RERANKER = "tiny-reranker"
DOCUMENTS = tiny.TEXTS  # CJK, emoji, and the last one over the reranker's 128 tokens


@pytest.fixture(scope="module")
def reranker_path(tiny_model_cache):
    return tiny_model_cache.get_reranker("bert-uncased")  # test_reranker_backends.py's: built once


@pytest.fixture(scope="module")
def server(tiny_model_cache, reranker_path, tmp_path_factory):
    embedder = tiny_model_cache.get("bert-uncased", **tiny.PARITY_CASES["bert-uncased"])
    env = {"EMBEDDER_MODELS": f"{EMBEDDER}={embedder},{RERANKER}={reranker_path}", "EMBEDDER_BACKEND": "onnx",
           "EMBEDDER_THREADS": "1", "EMBEDDER_CACHE_DIR": str(tmp_path_factory.mktemp("rerank-clients-cache"))}
    with Gunicorn(workers=2, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def want(reranker_path) -> np.ndarray:
    """``CrossEncoder.predict``'s scores of (QUERY, document), in input order."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(reranker_path), device="cpu")
    assert model.max_seq_length == tiny.POSITIONS
    scores = model.predict([(QUERY, d) for d in DOCUMENTS]).astype(np.float64)
    assert np.diff(np.sort(scores)).min() > 100 * TOL  # apart enough that the ranking itself is checked
    return scores


class Answered:
    """How many 200s the reranker gave on each route while the block ran (the server's own
    ``embedder_requests_total``, summed over its workers): which route a client really called."""

    def __init__(self, server):
        self.server = server

    def counts(self) -> dict[str, float]:
        text = requests.get(self.server.url + "/metrics", timeout=TIMEOUT).text
        return {s.labels["route"]: s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "embedder_requests_total"
                and s.labels.get("code") == "200" and s.labels.get("model") == RERANKER}

    def __enter__(self) -> Answered:
        self.before = self.counts()
        return self

    def __exit__(self, *exc) -> None:
        after = self.counts()
        self.delta = {route: n - self.before.get(route, 0) for route, n in after.items()
                      if n != self.before.get(route, 0)}


def best_first(scores) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def assert_ranked(indexes: list[int], scores: list[float], want: np.ndarray, top_n: int) -> None:
    assert list(indexes) == best_first(want)[:top_n], (list(indexes), list(scores), want)
    got = np.array(scores, dtype=np.float64)
    assert np.abs(got - want[list(indexes)]).max() < TOL, np.abs(got - want[list(indexes)]).max()


# --- cohere -------------------------------------------------------------------------------------

def test_cohere_v2_rerank(server, want):
    import cohere

    co = cohere.ClientV2(api_key="unused", base_url=server.url, timeout=TIMEOUT)
    with Answered(server) as answered:
        r = co.rerank(model=RERANKER, query=QUERY, documents=DOCUMENTS, top_n=2, request_options={"max_retries": 0})
    assert answered.delta == {"/v2/rerank": 1}
    assert_ranked([x.index for x in r.results], [x.relevance_score for x in r.results], want, 2)
    everything = co.rerank(model=RERANKER, query=QUERY, documents=DOCUMENTS, request_options={"max_retries": 0})
    assert_ranked([x.index for x in everything.results], [x.relevance_score for x in everything.results], want,
                  len(DOCUMENTS))
    assert r.id and r.meta.api_version.version == "2"


def test_cohere_v1_rerank_with_documents(server, want):
    import cohere

    co = cohere.Client(api_key="unused", base_url=server.url, timeout=TIMEOUT)
    with Answered(server) as answered:
        r = co.rerank(model=RERANKER, query=QUERY, documents=DOCUMENTS, top_n=3, return_documents=True,
                      request_options={"max_retries": 0})
    assert answered.delta == {"/v1/rerank": 1}
    assert_ranked([x.index for x in r.results], [x.relevance_score for x in r.results], want, 3)
    assert [x.document.text for x in r.results] == [DOCUMENTS[x.index] for x in r.results]


def test_cohere_unknown_model_is_its_not_found_error(server):
    import cohere

    co = cohere.ClientV2(api_key="unused", base_url=server.url, timeout=TIMEOUT)
    with pytest.raises(cohere.errors.NotFoundError) as err:
        co.rerank(model="rerank-v3.5", query=QUERY, documents=["a"], request_options={"max_retries": 0})
    assert err.value.status_code == 404
    assert err.value.body == {"message": "The model 'rerank-v3.5' does not exist on this server; it serves "
                                         f"'{EMBEDDER}' (embedding), '{RERANKER}' (reranker) (GET /v1/models)"}
    with pytest.raises(cohere.errors.NotFoundError) as err:  # an embedding model is not a reranker
        co.rerank(model=EMBEDDER, query=QUERY, documents=["a"], request_options={"max_retries": 0})
    assert err.value.body["message"].startswith(f"The model '{EMBEDDER}' is an embedding model, not a reranker")


# --- LangChain and LlamaIndex -------------------------------------------------------------------

def test_langchain_cohere_rerank(server, want):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    reranker = CohereRerank(model=RERANKER, base_url=server.url, cohere_api_key="unused", top_n=2)
    with Answered(server) as answered:
        docs = reranker.compress_documents([Document(page_content=t) for t in DOCUMENTS], QUERY)
    assert answered.delta == {"/v2/rerank": 1}
    order = best_first(want)[:2]
    assert [d.page_content for d in docs] == [DOCUMENTS[i] for i in order]
    got = np.array([d.metadata["relevance_score"] for d in docs])
    assert np.abs(got - want[order]).max() < TOL
    ranked = reranker.rerank(DOCUMENTS, QUERY, top_n=None)  # its lower-level call: [{"index", "relevance_score"}]
    assert_ranked([x["index"] for x in ranked], [x["relevance_score"] for x in ranked], want, len(DOCUMENTS))


def test_llama_index_tei_rerank(server, want):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    reranker = TextEmbeddingInference(model_name=RERANKER, base_url=server.url, top_n=2, timeout=TIMEOUT)
    with Answered(server) as answered:
        nodes = reranker.postprocess_nodes([NodeWithScore(node=TextNode(text=t)) for t in DOCUMENTS],
                                           query_bundle=QueryBundle(QUERY))
    assert answered.delta == {"/rerank": 1}
    order = best_first(want)[:2]
    assert [n.node.text for n in nodes] == [DOCUMENTS[i] for i in order]
    got = np.array([n.score for n in nodes])
    assert np.abs(got - want[order]).max() < TOL


# --- openai -------------------------------------------------------------------------------------

def test_openai_lists_both_models_with_their_kind(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    listed = list(client.models.list())
    assert [(m.id, m.model_extra["kind"]) for m in listed] == [(EMBEDDER, "embedding"), (RERANKER, "reranker")]
    assert all(m.object == "model" and m.owned_by and m.created > 0 for m in listed)
    for name, kind in ((EMBEDDER, "embedding"), (RERANKER, "reranker")):
        model = client.models.retrieve(name)
        assert (model.id, model.model_extra["kind"]) == (name, kind)
    raw = client.models.with_raw_response.list()
    assert [m["kind"] for m in raw.http_response.json()["data"]] == ["embedding", "reranker"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.NotFoundError) as err:  # a reranker is not an embedding model
        client.embeddings.create(model=RERANKER, input="a")
    assert err.value.code == "model_not_found"


# --- litellm ------------------------------------------------------------------------------------

# litellm's response type trips a pydantic warning (ReadOnly TypedDict items) the first time a
# process builds it; with warnings as errors, litellm would report it as a connection error.
@pytest.mark.filterwarnings("ignore:Items .* on TypedDict class 'RerankBilledUnits':UserWarning")
def test_litellm_cohere_rerank(server, litellm, want):
    with Answered(server) as answered:
        r = litellm.rerank(model=f"cohere/{RERANKER}", query=QUERY, documents=DOCUMENTS, top_n=2,
                           api_base=server.url, api_key="unused", timeout=TIMEOUT)
    assert answered.delta == {"/v2/rerank": 1}
    assert_ranked([x["index"] for x in r.results], [x["relevance_score"] for x in r.results], want, 2)

