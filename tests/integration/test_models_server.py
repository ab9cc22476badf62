"""Several models in one real server (``EMBEDDER_MODELS``): a tiny embedding model beside two tiny
rerankers (BERT uncased with sentence-transformers' default Sigmoid, XLM-RoBERTa with an Identity
activation: raw logits), 2 workers of 1 thread each, on the onnx backend (its own export cache) and
on the torch backend.

On each backend every rerank shape (TEI's ``/rerank``, Jina/Cohere v1's ``/v1/rerank``, Cohere v2's
``/v2/rerank``) gives ``CrossEncoder.predict``'s scores (within 1e-5), activated and raw, ranked
best first, with ``top_n`` and the documents' texts, on documents with CJK, emoji and one over the
model's limit; ``max_tokens_per_doc`` scores each document cut to that many tokens and TEI's
``truncate: false`` refuses the one that does not fit; the embedding model's ``/embed`` and
``/v1/embeddings`` still give ``SentenceTransformer.encode``'s vectors; ``/v1/models``, ``/info`` and
``/metrics`` name every model; an unknown model, or one of the wrong kind, is 404 in each API's
shape. And a list the server cannot serve (two models under one name, a reranker with three labels)
stops it at start with the reason.
"""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import tiny_models as tiny
from bench.harness.servers import Gunicorn

pytestmark = pytest.mark.integration
TOL = 1e-5
TIMEOUT = 60
QUERY = "Who is playing a guitar?"
EMBEDDER = "tiny-embedder"
RERANKER = "tiny-reranker"
#: A served name with an organisation, as hub ids have: requests may give its last part alone.
XLMR = "test-org/xlmr-reranker"
XLMR_SHORT = "xlmr-reranker"
#: Served name -> (tiny kind, build options) of each reranker, in EMBEDDER_MODELS' order. The
#: options are test_reranker_backends.py's, so the session's cache builds each once.
RERANKERS = {RERANKER: ("bert-uncased", {}), XLMR: ("xlm-roberta", {"activation": "Identity"})}
ACTIVATIONS = {RERANKER: "Sigmoid", XLMR: "Identity"}
LONG = len(tiny.TEXTS) - 1  # the document over every model's limit
assert len(tiny.TEXTS[LONG]) > 1000


# --- the servers and the references -------------------------------------------------------------

@pytest.fixture(scope="module")
def paths(tiny_model_cache) -> dict[str, Path]:
    """Served name -> model directory, in the order served (the embedding model first)."""
    return {EMBEDDER: tiny_model_cache.get("bert-uncased", **tiny.PARITY_CASES["bert-uncased"]),
            **{name: tiny_model_cache.get_reranker(kind, **options) for name, (kind, options) in RERANKERS.items()}}


def models_setting(paths: dict[str, Path]) -> str:
    return ",".join(f"{name}={path}" for name, path in paths.items())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """This module's export cache (the session's holds the default model's export alone)."""
    return tmp_path_factory.mktemp("models-server-cache")


@pytest.fixture(scope="module", params=["onnx", "torch"])
def server(request, paths, cache_dir):
    """The three models in one server of 2 workers (each with its own scheduler over the three),
    one thread each."""
    backend = request.param
    env = {"EMBEDDER_MODELS": models_setting(paths), "EMBEDDER_BACKEND": backend, "EMBEDDER_THREADS": "1",
           "EMBEDDER_CACHE_DIR": str(cache_dir)}
    with Gunicorn(workers=2, env=env) as srv:
        srv.backend = backend
        yield srv


class Reference:
    """A reranker as sentence-transformers users run it: ``CrossEncoder(path).predict``."""

    def __init__(self, path: Path):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(path), device="cpu")
        # The limit served; XLM-R's family with none saved: sentence-transformers' is 2 past the
        # positions the model takes (as test_reranker_backends.py).
        assert self.model.max_seq_length in (tiny.POSITIONS, tiny.POSITIONS + 2)
        self.model.max_seq_length = tiny.POSITIONS
        self.tokenizer = self.model.tokenizer

    def scores(self, documents: list[str], raw: bool = False, query: str = QUERY) -> np.ndarray:
        import torch

        options = {"activation_fn": torch.nn.Identity()} if raw else {}
        return self.model.predict([(query, d) for d in documents], **options).astype(np.float64)


@pytest.fixture(scope="module")
def references(paths) -> dict[str, Reference]:
    out = {name: Reference(paths[name]) for name in RERANKERS}
    for ref in out.values():  # scores far enough apart that the ranking itself is checked, not noise
        for raw in (False, True):
            gaps = np.diff(np.sort(ref.scores(tiny.TEXTS, raw=raw)))
            assert gaps.min() > 10 * TOL, gaps
    return out


@pytest.fixture(scope="module")
def sentence_transformer(paths):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(paths[EMBEDDER]), device="cpu")


@pytest.fixture(scope="module")
def vectors(sentence_transformer) -> np.ndarray:
    """The embedding model's vectors of tiny.TEXTS (max_seq_length 32: several are cut)."""
    return sentence_transformer.encode(tiny.TEXTS, normalize_embeddings=True).astype(np.float64)


def post(server, path: str, body: dict, status: int = 200) -> requests.Response:
    r = requests.post(server.url + path, json=body, timeout=TIMEOUT)
    assert r.status_code == status, (path, body.get("model"), r.status_code, r.text[:2000])
    return r


def get(server, path: str):
    r = requests.get(server.url + path, timeout=TIMEOUT)
    assert r.status_code == 200, (path, r.text[:2000])
    return r.json()


def best_first(scores) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def assert_ranked(rows: list[dict], field: str, want: np.ndarray, top_n: int | None = None,
                  indexes: list[int] | None = None) -> None:
    """``rows`` are the documents best first, ``top_n`` of them, each scored as ``want`` (in input
    order; ``indexes``: the input positions ``want`` is of, when not all)."""
    indexes = list(range(len(want))) if indexes is None else indexes
    order = [indexes[i] for i in best_first(want)][:top_n]
    assert [row["index"] for row in rows] == order, ([(row["index"], row[field]) for row in rows], want)
    got = np.array([row[field] for row in rows], dtype=np.float64)
    expected = np.array([want[indexes.index(i)] for i in order])
    assert np.abs(got - expected).max() < TOL, np.abs(got - expected).max()


# --- rerank: every shape is CrossEncoder.predict ------------------------------------------------

@pytest.mark.parametrize("name", RERANKERS)
def test_tei_rerank_is_cross_encoder_predict(server, references, name):
    ref = references[name]
    want, raw = ref.scores(tiny.TEXTS), ref.scores(tiny.TEXTS, raw=True)
    if ACTIVATIONS[name] == "Identity":
        assert np.array_equal(want, raw) and want.min() < 0  # logits: no sigmoid applied
    else:
        assert 0 < want.min() and want.max() < 1 and np.abs(want - 1 / (1 + np.exp(-raw))).max() < 1e-6
    rows = post(server, "/rerank", {"model": name, "query": QUERY, "texts": tiny.TEXTS, "return_text": True}).json()
    assert_ranked(rows, "score", want)
    assert all(set(row) == {"index", "score", "text"} and row["text"] == tiny.TEXTS[row["index"]] for row in rows)
    rows = post(server, "/rerank", {"model": name, "query": QUERY, "texts": tiny.TEXTS, "raw_scores": True,
                                    "truncate": True, "return_text": False}).json()
    assert_ranked(rows, "score", raw)
    assert all(set(row) == {"index", "score"} for row in rows)


@pytest.mark.parametrize("name", RERANKERS)
def test_v1_rerank_is_cross_encoder_predict(server, references, name):
    ref = references[name]
    want, raw = ref.scores(tiny.TEXTS), ref.scores(tiny.TEXTS, raw=True)
    asked = XLMR_SHORT if name == XLMR else name  # the last part of the served name picks it too
    documents = [text if i % 2 else {"text": text} for i, text in enumerate(tiny.TEXTS)]
    r = post(server, "/v1/rerank", {"model": asked, "query": QUERY, "documents": documents, "top_n": 3,
                                    "return_documents": True})
    body = r.json()
    assert set(body) == {"id", "model", "results", "usage", "meta"} and body["model"] == name
    assert_ranked(body["results"], "relevance_score", want, top_n=3)
    assert all(row["document"] == {"text": tiny.TEXTS[row["index"]]} for row in body["results"])
    assert body["usage"]["total_tokens"] == int(r.headers["x-input-tokens"]) > tiny.POSITIONS
    body = post(server, "/v1/rerank", {"model": name, "query": QUERY, "documents": tiny.TEXTS,
                                       "raw_scores": True}).json()
    assert_ranked(body["results"], "relevance_score", raw)
    assert all("document" not in row for row in body["results"])
    many = post(server, "/v1/rerank", {"model": name, "query": QUERY, "documents": tiny.TEXTS, "top_n": 99}).json()
    assert_ranked(many["results"], "relevance_score", want)


@pytest.mark.parametrize("name", RERANKERS)
def test_v2_rerank_is_cross_encoder_predict(server, references, name):
    want = references[name].scores(tiny.TEXTS)
    body = post(server, "/v2/rerank", {"model": name, "query": QUERY, "documents": tiny.TEXTS, "top_n": 2}).json()
    assert set(body) == {"id", "results", "meta"} and body["meta"]["api_version"]["version"] == "2"
    assert_ranked(body["results"], "relevance_score", want, top_n=2)
    assert all(set(row) == {"index", "relevance_score"} for row in body["results"])
    body = post(server, "/v2/rerank", {"model": name, "query": QUERY, "documents": tiny.TEXTS, "top_n": None,
                                       "max_tokens_per_doc": None, "return_documents": True}).json()
    assert_ranked(body["results"], "relevance_score", want)
    assert all(row["document"] == {"text": tiny.TEXTS[row["index"]]} for row in body["results"])


def test_no_model_is_the_first_reranker(server, references):
    want = references[RERANKER].scores(tiny.TEXTS)
    assert_ranked(post(server, "/rerank", {"query": QUERY, "texts": tiny.TEXTS}).json(), "score", want)
    assert_ranked(post(server, "/v2/rerank", {"query": QUERY, "documents": tiny.TEXTS}).json()["results"],
                  "relevance_score", want)
    assert post(server, "/v1/rerank", {"query": QUERY, "documents": ["a"]}).json()["model"] == RERANKER
    # Infinity's body (documents) on TEI's route gets the /v1/rerank answer, of the model it names
    body = post(server, "/rerank", {"model": XLMR_SHORT, "query": QUERY, "documents": tiny.TEXTS}).json()
    assert body["model"] == XLMR
    assert_ranked(body["results"], "relevance_score", references[XLMR].scores(tiny.TEXTS))


def cut_documents(ref: Reference, n: int) -> tuple[list[int], list[str]]:
    """The texts whose first ``n`` tokens (no special tokens) decode to a text that encodes to
    those same tokens: (their indexes, those texts), what CrossEncoder scores for a cut document."""
    indexes, texts = [], []
    for i, text in enumerate(tiny.TEXTS):
        ids = ref.tokenizer(text, add_special_tokens=False)["input_ids"][:n]
        decoded = ref.tokenizer.decode(ids)
        if ref.tokenizer(decoded, add_special_tokens=False)["input_ids"] == ids:
            indexes.append(i)
            texts.append(decoded)
    return indexes, texts


@pytest.mark.parametrize("name", RERANKERS)
def test_max_tokens_per_doc_cuts_each_document(server, references, name):
    ref = references[name]
    n = 4
    indexes, texts = cut_documents(ref, n)
    assert LONG in indexes and len(indexes) >= 4, indexes
    want = ref.scores(texts)
    documents = [tiny.TEXTS[i] for i in indexes]
    pair_tokens = sum(len(ref.tokenizer(QUERY, text)["input_ids"]) for text in texts)
    for path in ("/v1/rerank", "/v2/rerank"):
        r = post(server, path, {"model": name, "query": QUERY, "documents": documents, "max_tokens_per_doc": n,
                                "return_documents": True})
        assert_ranked(r.json()["results"], "relevance_score", want)
        assert all(row["document"]["text"] == documents[row["index"]] for row in r.json()["results"])  # whole
        assert int(r.headers["x-input-tokens"]) == pair_tokens
    # a limit past every document's length changes nothing
    body = post(server, "/v2/rerank", {"model": name, "query": QUERY, "documents": tiny.TEXTS[:LONG],
                                       "max_tokens_per_doc": 100}).json()
    assert_ranked(body["results"], "relevance_score", ref.scores(tiny.TEXTS[:LONG]))


@pytest.mark.parametrize("name", RERANKERS)
def test_truncate_false_refuses_only_a_document_that_does_not_fit(server, references, name):
    ref = references[name]
    fits = post(server, "/rerank", {"model": name, "query": QUERY, "texts": tiny.TEXTS[:LONG], "truncate": False})
    assert_ranked(fits.json(), "score", ref.scores(tiny.TEXTS[:LONG]))
    refused = post(server, "/rerank", {"model": name, "query": QUERY, "texts": tiny.TEXTS, "truncate": False},
                   status=422).json()
    tokens = len(ref.tokenizer(QUERY, tiny.TEXTS[LONG])["input_ids"])
    assert refused["error"].startswith(f"'texts[{LONG}]' has {tokens} tokens, more than the model's "
                                       f"{tiny.POSITIONS}"), refused
    assert refused["error_type"] == "validation"
    # the query is never cut: one that leaves no room for a document is refused
    long_query = " ".join(["guitar"] * (tiny.POSITIONS + 10))
    error = post(server, "/v1/rerank", {"model": name, "query": long_query, "documents": ["a"]},
                 status=422).json()["error"]
    assert error["param"] == "query", error


# --- the embedding model beside them ------------------------------------------------------------

def test_embedding_model_serves_sentence_transformers_vectors(server, vectors):
    for body in ({"inputs": tiny.TEXTS, "model": EMBEDDER, "truncate": True}, {"inputs": tiny.TEXTS}):
        got = np.array(post(server, "/embed", body).json(), dtype=np.float64)
        assert got.shape == vectors.shape and np.abs(got - vectors).max() < TOL, body
    body = post(server, "/v1/embeddings", {"model": EMBEDDER, "input": tiny.TEXTS, "encoding_format": "float"}).json()
    assert body["model"] == EMBEDDER
    got = np.array([row["embedding"] for row in sorted(body["data"], key=lambda row: row["index"])])
    assert got.shape == vectors.shape and np.abs(got - vectors).max() < TOL


def test_concurrent_requests_for_every_model_keep_their_answers(server, references, vectors):
    """Requests for the three models at once, over both workers: each worker's one scheduler takes
    the models in turns, and every answer is still its own model's."""
    wants = {name: ref.scores(tiny.TEXTS) for name, ref in references.items()}

    def one(i: int):
        kind = i % 3
        texts = tiny.TEXTS[i % 4:]
        if kind == 0:
            got = np.array(post(server, "/embed", {"model": EMBEDDER, "inputs": texts}).json())
            return np.abs(got - vectors[i % 4:]).max() < TOL
        name = RERANKER if kind == 1 else XLMR
        rows = post(server, "/rerank", {"model": name, "query": QUERY, "texts": texts}).json()
        want = wants[name][i % 4:]
        return [row["index"] for row in rows] == best_first(want) and \
            max(abs(row["score"] - want[row["index"]]) for row in rows) < TOL

    with cf.ThreadPoolExecutor(max_workers=12) as pool:
        assert all(pool.map(one, range(36)))


# --- what the server says it serves -------------------------------------------------------------

def test_models_and_info_name_every_model(server):
    listed = get(server, "/v1/models")
    assert listed["object"] == "list"
    assert [(m["id"], m["kind"], m["object"]) for m in listed["data"]] == [
        (EMBEDDER, "embedding", "model"), (RERANKER, "reranker", "model"), (XLMR, "reranker", "model")]
    assert get(server, f"/v1/models/{XLMR}")["kind"] == "reranker"
    assert get(server, f"/v1/models/{XLMR_SHORT}")["id"] == XLMR  # the last part names it too
    assert get(server, f"/v1/models/{EMBEDDER}")["kind"] == "embedding"
    info = get(server, "/info")
    loaded_with = "files" if server.backend == "onnx" else "sentence-transformers"
    assert [(m["model_id"], m["kind"], m["dimension"], m["max_input_tokens"], m["activation"], m["backend"],
             m["loaded_with"]) for m in info["models"]] == [
        (EMBEDDER, "embedding", 32, 32, None, server.backend, loaded_with),
        (RERANKER, "reranker", 1, tiny.POSITIONS, "Sigmoid", server.backend, loaded_with),
        (XLMR, "reranker", 1, tiny.POSITIONS, "Identity", server.backend, loaded_with)]
    assert [m["architecture"] for m in info["models"]] == [
        "BertModel", "BertForSequenceClassification", "XLMRobertaForSequenceClassification"]
    assert info["model_id"] == EMBEDDER and info["workers"] == 2 and info["threads_per_worker"] == 1


def scrape(server) -> tuple[str, dict]:
    text = requests.get(server.url + "/metrics", timeout=TIMEOUT).text
    return text, {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for family in text_string_to_metric_families(text) for s in family.samples}


def inputs_by_model(samples: dict) -> dict[str, float]:
    return {dict(labels)["model"]: v for (n, labels), v in samples.items() if n == "embedder_inputs_total"}


def test_metrics_count_each_models_work(server):
    _, samples = scrape(server)
    before = inputs_by_model(samples)
    assert set(before) == {EMBEDDER, RERANKER, XLMR}
    post(server, "/embed", {"model": EMBEDDER, "inputs": tiny.TEXTS[:3]})
    post(server, "/rerank", {"model": RERANKER, "query": QUERY, "texts": tiny.TEXTS[:4]})
    post(server, "/v2/rerank", {"model": XLMR_SHORT, "query": QUERY, "documents": tiny.TEXTS[:5]})
    post(server, "/v2/rerank", {"model": "no-such-model", "query": QUERY, "documents": ["a"]}, status=404)
    text, samples = scrape(server)
    after = inputs_by_model(samples)
    assert {name: after[name] - before[name] for name in after} == {EMBEDDER: 3, RERANKER: 4, XLMR: 5}
    for name, kind in ((EMBEDDER, "embedding"), (RERANKER, "reranker"), (XLMR, "reranker")):
        assert f'embedder_inputs_total{{model="{name}"}}' in text
        info = [labels for (n, labels), v in samples.items() if n == "embedder_model_info" and dict(labels)["model"]
                == name]
        assert len(info) == 1 and dict(info[0])["kind"] == kind and dict(info[0])["backend"] == server.backend
    assert samples[("embedder_requests_total", (("code", "200"), ("model", XLMR), ("route", "/v2/rerank")))] >= 1
    assert samples[("embedder_workers", ())] == 2
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed: the exposition format was parsed, not checked by promtool")
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


# --- a model that is not there, or not of the route's kind: 404 in each API's shape --------------

def test_an_unknown_model_is_404_in_each_shape(server):
    served = f"'{EMBEDDER}' (embedding), '{RERANKER}' (reranker), '{XLMR}' (reranker)"
    unknown = "The model 'no-such-model' does not exist on this server; it serves " + served
    tei = post(server, "/rerank", {"model": "no-such-model", "query": QUERY, "texts": ["a"]}, status=404).json()
    assert tei == {"error": unknown + " (GET /v1/models)", "error_type": "model_not_found"}
    v1 = post(server, "/v1/rerank", {"model": "no-such-model", "query": QUERY, "documents": ["a"]}, status=404)
    assert v1.json()["error"] == {"message": unknown + " (GET /v1/models)", "type": "invalid_request_error",
                                  "param": "model", "code": "model_not_found"}
    v2 = post(server, "/v2/rerank", {"model": "no-such-model", "query": QUERY, "documents": ["a"]}, status=404)
    assert v2.json() == {"message": unknown + " (GET /v1/models)"}
    embed = post(server, "/embed", {"model": "no-such-model", "inputs": "a"}, status=404).json()
    assert embed["error_type"] == "model_not_found"
    openai = post(server, "/v1/embeddings", {"model": "no-such-model", "input": "a"}, status=404).json()["error"]
    assert openai["code"] == "model_not_found" and openai["param"] == "model"
    assert requests.get(server.url + "/v1/models/no-such-model", timeout=TIMEOUT).status_code == 404


def test_a_model_of_the_other_kind_is_404(server):
    for path, body in (("/v1/embeddings", {"model": RERANKER, "input": "a"}),
                       ("/v1/embeddings", {"model": XLMR_SHORT, "input": "a"})):
        error = post(server, path, body, status=404).json()["error"]
        assert error["code"] == "model_not_found", error
        assert " is a reranker, not an embedding model; this server serves " in error["message"], error
    tei = post(server, "/embed", {"model": RERANKER, "inputs": "a"}, status=404).json()
    assert tei["error"].startswith(f"The model '{RERANKER}' is a reranker, not an embedding model")
    v2 = post(server, "/v2/rerank", {"model": EMBEDDER, "query": QUERY, "documents": ["a"]}, status=404).json()
    assert v2["message"].startswith(f"The model '{EMBEDDER}' is an embedding model, not a reranker")
    tei = post(server, "/rerank", {"model": EMBEDDER, "query": QUERY, "texts": ["a"]}, status=404).json()
    assert tei["error_type"] == "model_not_found"


# --- lists the server refuses at start -----------------------------------------------------------

def refused_start(env: dict) -> str:
    """The log of a server that must exit at start (not 0), with its one-line reason and no
    traceback (a setting refused while Gunicorn reads gunicorn.conf.py included)."""
    srv = Gunicorn(workers=1, env=env)
    try:
        with pytest.raises(RuntimeError, match="gunicorn exited with"):
            srv.start(timeout=120)
        assert srv.proc.returncode not in (0, None)
        log = srv.log()
        assert "Traceback" not in log, log
        return log
    finally:
        srv.stop(timeout=10)
        Path(srv._log.name).unlink(missing_ok=True)


def test_two_models_of_one_name_stop_the_server(paths, cache_dir, tmp_path):
    env = {"EMBEDDER_CACHE_DIR": str(cache_dir)}
    log = refused_start({**env, "EMBEDDER_MODELS": f"same={paths[EMBEDDER]},same={paths[RERANKER]}"})
    assert "embedder cannot start: EMBEDDER_MODELS: the name 'same' is given twice" in log, log
    # two directories of one name, each served under it (no name given); copies of one model, whose
    # export the onnx server left in the cache
    twins = [tmp_path / side / "twin" for side in ("a", "b")]
    for twin in twins:
        shutil.copytree(paths[RERANKER], twin)
    log = refused_start({**env, "EMBEDDER_MODELS": ",".join(str(p) for p in twins)})
    assert "embedder cannot start: two models would be served as 'twin': give each its own name" in log, log


def test_a_reranker_of_three_labels_stops_the_server(paths, tiny_model_cache, cache_dir):
    three = tiny_model_cache.get_reranker("bert-uncased", num_labels=3)
    log = refused_start({"EMBEDDER_CACHE_DIR": str(cache_dir),
                         "EMBEDDER_MODELS": f"{EMBEDDER}={paths[EMBEDDER]},three={three}"})
    assert "embedder cannot start: three gives 3 scores per pair (num_labels 3): rerank needs one score per pair" \
        in log, log
