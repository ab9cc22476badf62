"""The client libraries people already use, installed from PyPI (requirements-test.txt) and set up
the way their own docs say to point them at a self-hosted text-embeddings-inference (TEI) or
OpenAI-compatible server, against the real server (conftest's 2-worker ``server``): every vector
they get equals what ``POST /embed`` returns for the same texts (max abs difference < 1e-5), and a
client that would send something the server cannot serve correctly (LangChain's default tiktoken
token ids, litellm's sentence-similarity body for a ``sentence-transformers/...`` model name) gets
a clear error, never a 200 with other vectors.

What each client sends (recorded against a stub server):

- ``openai`` ``embeddings.create``: ``POST /v1/embeddings`` ``{"model", "input", "encoding_format":
  "base64"}`` by default (``"float"`` and ``dimensions`` when asked); ``models.list()``:
  ``GET /v1/models``. llama-index ``OpenAILikeEmbedding`` and langchain-openai ``OpenAIEmbeddings``
  are this client (base64 too); litellm ``openai/...`` is too, without ``encoding_format``.
- langchain-openai ``OpenAIEmbeddings`` with its defaults: ``"input"`` is lists of tiktoken
  ``cl100k_base`` token ids.
- ``huggingface_hub`` ``feature_extraction`` with ``InferenceClient(model=URL)``: ``POST /``
  ``{"inputs": [...]}`` (plus ``normalize``, ``prompt_name``, ``truncate``,
  ``truncation_direction`` when given); ``sentence_similarity``: ``POST /`` ``{"inputs":
  {"source_sentence", "sentences"}, "parameters": {}}``. langchain-huggingface
  ``HuggingFaceEndpointEmbeddings`` and llama-index ``HuggingFaceInferenceAPIEmbedding`` (one text
  a request) are this client.
- llama-index ``TextEmbeddingsInference``: ``POST /embed`` ``{"inputs": [...], "truncate": true}``.
- litellm ``huggingface/...`` with ``api_base``: ``POST <api_base>`` ``{"inputs": [...]}``; for a
  model name containing ``sentence-transformers`` it sends the sentence-similarity body instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import requests

import client_pools
from client_pools import collect_client_pools  # noqa: F401 (autouse: collects what the clients left open)

# Allowed here only: the client libraries' own connection pools (tests/support/client_pools.py).
pytestmark = [pytest.mark.integration, *client_pools.ALLOWED]
TOL = 1e-5
TIMEOUT = 60  # seconds: every client call here is bounded by this


def bounded(fn, *args, **kwargs):
    """Run ``fn`` with a deadline, for clients that take no timeout of their own."""
    pool = cf.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=TIMEOUT)
    finally:
        pool.shutdown(wait=False)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def assert_same(got, want):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.abs(got - want).max() < TOL, np.abs(got - want).max()


def openai_vectors(data) -> np.ndarray:
    """The vectors of an openai response (the client decodes the base64 it asked for)."""
    return np.array([d.embedding for d in data], dtype=np.float64)


@pytest.fixture(scope="module")
def texts(stsb):
    """Eight STS-B sentences. None has a newline or edge white space, which some clients change
    before sending (langchain-huggingface replaces newlines, llama-index strips)."""
    out = [s for _, s1, s2 in stsb[:4] for s in (s1, s2)]
    assert all(s == s.strip() and "\n" not in s for s in out)
    return out


@pytest.fixture(scope="module")
def model_id(server):
    return requests.get(server.url + "/info", timeout=30).json()["model_id"]


@pytest.fixture(scope="module")
def embed(server):
    """What ``POST /embed`` answers for these texts (and fields): the reference for every client."""
    def embed(texts, **fields):
        r = requests.post(server.url + "/embed", json={"inputs": texts, **fields}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        return np.array(r.json(), dtype=np.float64)
    return embed


@pytest.fixture(scope="module")
def expected(embed, texts):
    return embed(texts)


@pytest.fixture
def hub_online(monkeypatch):
    """conftest sets HF_HUB_OFFLINE=1 for the whole session, and huggingface_hub then refuses every
    request, even to a server on 127.0.0.1; a user's environment has it unset."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


# --- openai ---------------------------------------------------------------------------------

def test_openai_sync_base64_float_dimensions(server, model_id, texts, expected, embed):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    default = client.embeddings.create(model=model_id, input=texts)  # the client asks for base64
    assert_same(openai_vectors(default.data), expected)
    assert default.model == model_id and default.usage.prompt_tokens > 0
    floats = client.embeddings.create(model=model_id, input=texts, encoding_format="float")
    assert_same(openai_vectors(floats.data), expected)
    single = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0])
    assert_same(openai_vectors(single.data), expected[:1])
    short = client.embeddings.create(model=model_id, input=texts, dimensions=64)
    assert_same(openai_vectors(short.data), embed(texts, dimensions=64))


def test_openai_async(server, model_id, texts, expected, embed):
    import openai

    async def go():
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                                    timeout=TIMEOUT)
        async with client:
            return await asyncio.gather(
                client.embeddings.create(model=model_id, input=texts),
                client.embeddings.create(model=model_id, input=texts, encoding_format="float"),
                client.embeddings.create(model=model_id, input=texts, dimensions=32))

    default, floats, short = run(go())
    assert_same(openai_vectors(default.data), expected)
    assert_same(openai_vectors(floats.data), expected)
    assert_same(openai_vectors(short.data), embed(texts, dimensions=32))


def test_openai_models_list_and_unknown_model(server, model_id, texts):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    assert [m.id for m in client.models.list()] == [model_id]
    assert client.models.retrieve(model_id).id == model_id
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="text-embedding-3-small", input=texts[:1])
    assert err.value.code == "model_not_found"
    assert model_id in err.value.message


# --- huggingface_hub ------------------------------------------------------------------------

def test_huggingface_hub_feature_extraction(server, hub_online, texts, expected):
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=server.url, timeout=TIMEOUT)  # POST /
    assert_same(client.feature_extraction(texts), expected)
    assert_same(client.feature_extraction(texts[2]), expected[2:3])
    with_fields = client.feature_extraction(texts, normalize=True, truncate=True,
                                            truncation_direction="right")
    assert_same(with_fields, expected)
    # TEI's own quick tour: a client without a model, the /embed URL given per call.
    tei_docs = InferenceClient(timeout=TIMEOUT).feature_extraction(texts, model=server.url + "/embed")
    assert_same(tei_docs, expected)


def test_huggingface_hub_async_feature_extraction(server, hub_online, texts, expected):
    from huggingface_hub import AsyncInferenceClient

    async def go():
        client = AsyncInferenceClient(model=server.url, timeout=TIMEOUT)
        return await asyncio.gather(client.feature_extraction(texts),
                                    client.feature_extraction(texts[5]))

    batch, single = run(go())
    assert_same(batch, expected)
    assert_same(single, expected[5:6])


def test_huggingface_hub_sentence_similarity(server, hub_online, texts, expected):
    """``InferenceClient(model=URL).sentence_similarity`` POSTs the sentence-similarity body to
    ``/`` (TEI's route for the model's task); it gets the cosine similarities of the /embed
    vectors, sync and async."""
    from huggingface_hub import AsyncInferenceClient, InferenceClient

    want = expected[1:] @ expected[0]
    got = InferenceClient(model=server.url, timeout=TIMEOUT).sentence_similarity(
        texts[0], other_sentences=texts[1:])
    assert np.abs(np.array(got) - want).max() < TOL, (got, want)

    async def go():
        return await AsyncInferenceClient(model=server.url, timeout=TIMEOUT).sentence_similarity(
            texts[0], other_sentences=texts[1:])

    assert np.abs(np.array(run(go())) - want).max() < TOL


def test_huggingface_hub_sentence_similarity_route(server, hub_online, texts, expected):
    """The same with TEI's ``/similarity`` URL given per call."""
    from huggingface_hub import InferenceClient

    want = expected[1:] @ expected[0]
    got = InferenceClient(timeout=TIMEOUT).sentence_similarity(
        texts[0], other_sentences=texts[1:], model=server.url + "/similarity")
    assert np.abs(np.array(got) - want).max() < TOL, (got, want)


# --- LangChain ------------------------------------------------------------------------------

def test_langchain_huggingface_endpoint_embeddings(server, hub_online, texts, expected):
    """LangChain's TEI page: ``HuggingFaceEndpointEmbeddings(model="http://localhost:8080")``.
    (langchain-huggingface 1.2.2 and later refuse a URL there: requirements-test.txt pins 1.2.1.)"""
    from langchain_huggingface import HuggingFaceEndpointEmbeddings

    embeddings = HuggingFaceEndpointEmbeddings(model=server.url)
    assert_same(bounded(embeddings.embed_documents, texts), expected)
    assert_same([bounded(embeddings.embed_query, texts[3])], expected[3:4])
    assert_same(run(embeddings.aembed_documents(texts)), expected)


def test_langchain_openai_without_ctx_length_check(server, model_id, texts, expected):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model=model_id, base_url=server.url + "/v1", api_key="unused",
                                  check_embedding_ctx_length=False, max_retries=0, timeout=TIMEOUT)
    assert_same(embeddings.embed_documents(texts), expected)
    assert_same([embeddings.embed_query(texts[1])], expected[1:2])
    assert_same(run(embeddings.aembed_documents(texts)), expected)


@pytest.fixture
def tiktoken_offline(monkeypatch):
    """tiktoken downloads cl100k_base from a blob store on first use (unreachable here); litellm
    ships that very file under the name tiktoken caches it by, so point tiktoken's cache there."""
    spec = importlib.util.find_spec("litellm")
    cache = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    assert (cache / "9b5ad71b2ce5302211f9c61530b329a4922fc6a4").is_file()  # sha1 of its URL
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


def test_langchain_openai_defaults_get_a_clear_422(server, model_id, texts, tiktoken_offline):
    """By default OpenAIEmbeddings tokenizes with tiktoken's cl100k_base and sends those ids: read
    as this model's ids they would embed other words. The server refuses them and says what to do."""
    import openai
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model=model_id, base_url=server.url + "/v1", api_key="unused",
                                  max_retries=0, timeout=TIMEOUT)
    with pytest.raises(openai.UnprocessableEntityError) as err:
        embeddings.embed_documents(texts)
    assert err.value.status_code == 422
    message = err.value.message
    assert "token ids" in message and "Send the text" in message, message
    assert "check_embedding_ctx_length=False" in message, message
    with pytest.raises(openai.UnprocessableEntityError):
        embeddings.embed_query(texts[0])


# --- LlamaIndex -----------------------------------------------------------------------------

def test_llama_index_text_embeddings_inference(server, model_id, texts, expected):
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    embed_model = TextEmbeddingsInference(model_name=model_id, base_url=server.url, timeout=TIMEOUT)
    assert_same(embed_model.get_text_embedding_batch(texts), expected)
    assert_same([embed_model.get_query_embedding(texts[4])], expected[4:5])
    assert_same([embed_model.get_text_embedding(texts[6])], expected[6:7])
    assert_same(run(embed_model.aget_text_embedding_batch(texts)), expected)


def test_llama_index_openai_like(server, model_id, texts, expected):
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embed_model = OpenAILikeEmbedding(model_name=model_id, api_base=server.url + "/v1",
                                      api_key="unused", max_retries=0, timeout=TIMEOUT)
    assert_same(embed_model.get_text_embedding_batch(texts), expected)
    assert_same([embed_model.get_query_embedding(texts[7])], expected[7:8])
    assert_same(run(embed_model.aget_text_embedding_batch(texts)), expected)


def test_llama_index_huggingface_inference_api(server, hub_online, texts, expected):
    """Its sync methods each run a new event loop while huggingface_hub's async client keeps its
    connection pool: a second sync call on one instance fails with "Event loop is closed" whatever
    the server (llama-index-embeddings-huggingface-api 0.6.0 with huggingface_hub 1.x). So: one sync
    call per instance, and the async methods in one loop."""
    from llama_index.embeddings.huggingface_api import HuggingFaceInferenceAPIEmbedding

    def make():
        return HuggingFaceInferenceAPIEmbedding(model_name=server.url, timeout=TIMEOUT)

    assert_same(bounded(make().get_text_embedding_batch, texts), expected)
    assert_same([bounded(make().get_query_embedding, texts[2])], expected[2:3])

    async def go():
        embed_model = make()
        return (await embed_model.aget_text_embedding_batch(texts),
                await embed_model.aget_query_embedding(texts[0]))

    batch, query = run(go())
    assert_same(batch, expected)
    assert_same([query], expected[:1])


# --- litellm --------------------------------------------------------------------------------

def litellm_vectors(response) -> list:
    return [d["embedding"] for d in response.data]


def test_litellm_openai(server, litellm, model_id, texts, expected):
    kwargs = dict(model=f"openai/{model_id}", input=texts, api_base=server.url + "/v1",
                  api_key="unused", timeout=TIMEOUT)
    assert_same(litellm_vectors(litellm.embedding(**kwargs)), expected)
    assert_same(litellm_vectors(run(litellm.aembedding(**kwargs))), expected)


def test_litellm_huggingface(server, litellm, model_id, texts, expected):
    """``huggingface/<name>`` with ``api_base``, ``input_type="feature-extraction"`` (without it
    litellm first asks huggingface.co for the model's pipeline tag). The name is the last part of
    the model id: for a name containing ``sentence-transformers`` litellm sends a similarity body
    (next test)."""
    kwargs = dict(model="huggingface/" + model_id.rsplit("/", 1)[-1], input=texts,
                  api_base=server.url, input_type="feature-extraction", timeout=TIMEOUT)
    assert_same(litellm_vectors(litellm.embedding(**kwargs)), expected)
    assert_same(litellm_vectors(run(litellm.aembedding(**kwargs))), expected)


def test_litellm_huggingface_sentence_transformers_name_is_refused(server, litellm, model_id, texts):
    """For ``huggingface/sentence-transformers/...`` litellm sends ``{"inputs": {"source_sentence":
    texts[0], "sentences": texts[1:]}, "input_type": "feature-extraction"}`` and would hand back
    the similarity scores as "embeddings" (one float each, one fewer than the texts): the server
    must answer an error, never those scores."""
    with pytest.raises(Exception) as err:  # litellm maps the status to its own exception types
        litellm.embedding(model=f"huggingface/{model_id}", input=texts, api_base=server.url,
                          input_type="feature-extraction", timeout=TIMEOUT)
    assert getattr(err.value, "status_code", None) in (400, 422), repr(err.value)
