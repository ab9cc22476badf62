"""The real server (2 workers, real model) answers every route with the model's own vectors, and
text-embeddings-inference's other routes (``/tokenize``, ``/decode``, ``/similarity``, ``POST /``)
and OpenAI's model list with the real tokenizer and model (tests/fast/test_tei_openai.py has them on
the stand-in model)."""

from __future__ import annotations

import base64
import concurrent.futures as cf
from pathlib import Path

import numpy as np
import pytest
import requests

from embedder.config import Settings, worker_layout

pytestmark = pytest.mark.integration
TOL = 1e-5


def post(server, path, body, **kw):
    return requests.post(server.url + path, json=body, timeout=60, **kw)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


@pytest.fixture(scope="module")
def sentences(stsb):
    return [s for _, s1, s2 in stsb[:40] for s in (s1, s2)]


@pytest.fixture(scope="module")
def expected(reference_model, sentences):
    return reference_model.encode(sentences, normalize_embeddings=True)


def test_root_is_the_original_benchmark(server):
    r = requests.get(server.url + "/", timeout=30)
    assert r.status_code == 200
    assert r.text == "ok"


def test_embed_equals_sentence_transformers(server, sentences, expected):
    r = post(server, "/embed", {"inputs": sentences})
    assert r.status_code == 200, r.text
    got = np.array(r.json(), dtype=np.float32)
    assert got.shape == (len(sentences), 384)
    assert np.abs(got - expected).max() < TOL
    for header in ("x-total-time", "x-queue-time", "x-inference-time", "x-tokenization-time"):
        assert float(r.headers[header]) >= 0


def test_embed_single_string_is_two_dimensional(server, sentences, expected):
    r = post(server, "/embed", {"inputs": sentences[3]})
    got = np.array(r.json(), dtype=np.float32)
    assert got.shape == (1, 384)
    assert np.abs(got[0] - expected[3]).max() < TOL


def test_normalize_false_returns_the_raw_pooled_vector(server, reference_model, sentences, expected):
    from sentence_transformers import SentenceTransformer

    raw_model = SentenceTransformer(modules=[reference_model[0], reference_model[1]], device="cpu")
    raw = raw_model.encode(sentences[:8])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)  # really unnormalized
    got = np.array(post(server, "/embed", {"inputs": sentences[:8], "normalize": False}).json())
    assert np.abs(got - raw).max() < 1e-4 * np.abs(raw).max()
    assert np.abs(got / np.linalg.norm(got, axis=1, keepdims=True) - expected[:8]).max() < TOL


def test_dimensions_cut_then_normalize(server, sentences, expected):
    got = np.array(post(server, "/embed", {"inputs": sentences[:5], "dimensions": 64}).json())
    cut = expected[:5, :64]
    assert got.shape == (5, 64)
    assert np.abs(got - cut / np.linalg.norm(cut, axis=1, keepdims=True)).max() < TOL
    openai = post(server, "/v1/embeddings", {"input": sentences[:5], "dimensions": 64}).json()
    assert np.abs(np.array([d["embedding"] for d in openai["data"]]) - got).max() < TOL


def test_openai_float_and_base64(server, reference_model, sentences, expected):
    r = post(server, "/v1/embeddings", {"input": sentences[:6], "model": "all-MiniLM-L6-v2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert [d["index"] for d in body["data"]] == list(range(6))
    assert all(d["object"] == "embedding" for d in body["data"])
    got = np.array([d["embedding"] for d in body["data"]])
    assert np.abs(got - expected[:6]).max() < TOL
    tokens = sum(len(ids) for ids in reference_model.tokenizer(sentences[:6])["input_ids"])
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

    b64 = post(server, "/v1/embeddings", {"input": sentences[:6], "encoding_format": "base64"}).json()
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
                        for d in b64["data"]])
    assert np.abs(decoded - expected[:6]).max() < TOL


def test_openai_token_id_input_matches_text_when_allowed(torch_server, reference_model, sentences, expected):
    ids = reference_model.tokenizer(sentences[:2], add_special_tokens=False)["input_ids"]
    body = post(torch_server, "/v1/embeddings", {"input": ids}).json()
    got = np.array([d["embedding"] for d in body["data"]])
    assert np.abs(got - expected[:2]).max() < TOL
    single = post(torch_server, "/embeddings", {"input": ids[0]}).json()
    assert np.abs(np.array(single["data"][0]["embedding"]) - expected[0]).max() < TOL


def test_official_openai_client(server, sentences, expected):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=sentences[:4])
    got = np.array([d.embedding for d in result.data])
    assert np.abs(got - expected[:4]).max() < TOL
    assert result.usage.prompt_tokens > 0
    short = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=sentences[0],
                                     dimensions=32)
    assert len(short.data[0].embedding) == 32
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="all-MiniLM-L6-v2", input=[])


def test_info_reports_workers_and_threads(server):
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["dimension"] == 384 and info["max_input_tokens"] == 256
    assert info["backend"] == Settings().backend_label == "onnx"
    assert info["workers"] == 2
    assert info["threads_per_worker"] == worker_layout(workers=2).threads
    assert info["max_batch_size"] > 0 and info["max_batch_tokens"] > 0 and info["version"]
    # What is served, and how: the torch-free loader read all-MiniLM-L6-v2's own files.
    assert (info["architecture"], info["tokenizer"], info["modules"], info["pooling"]) == (
        "BertModel", "WordPiece (BertTokenizer)", ["Transformer", "Pooling(mean)", "Normalize"], ["mean"])
    assert (info["loaded_with"], info["loader_note"], info["default_prompt_name"]) == ("files", None, None)


def test_health(server):
    r = requests.get(server.url + "/health", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_bad_requests_are_clear_json_errors(server):
    cases = [
        (b"{not json", "application/json", 400),
        (b'{"inputs": []}', "application/json", 422),
        (b'{"inputs": [1, 2]}', "application/json", 422),
        (b'{"text": "x"}', "application/json", 422),
        (b'{"inputs": "x"}', "text/plain", 415),
    ]
    for body, ctype, status in cases:
        r = requests.post(server.url + "/embed", data=body, headers={"Content-Type": ctype}, timeout=10)
        assert r.status_code == status, (body, r.text)
        assert r.headers["Content-Type"] == "application/json"
        assert isinstance(r.json()["error"], str) and r.json()["error_type"]
    r = requests.post(server.url + "/v1/embeddings", json={"input": []}, timeout=10)
    assert r.status_code == 422 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_200_concurrent_requests_get_their_own_vectors(server, reference_model, stsb):
    texts = list(dict.fromkeys(s for _, s1, s2 in stsb for s in (s1, s2)))[100:300]
    assert len(texts) == 200
    want = reference_model.encode(texts, normalize_embeddings=True)
    pids = server.worker_pids()
    cpu_before = {pid: cpu_seconds(pid) for pid in pids}

    def one(i):
        return i, post(server, "/embed", {"inputs": texts[i]})

    with cf.ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(one, range(200)))
    for i, r in results:
        assert r.status_code == 200, r.text
        assert np.abs(np.array(r.json()[0]) - want[i]).max() < TOL, f"request {i} got another vector"
    # Both workers served traffic and neither was replaced (no hang, no crash).
    assert sorted(server.worker_pids()) == sorted(pids)
    assert all(cpu_seconds(pid) - cpu_before[pid] > 0.05 for pid in pids), cpu_before


@pytest.mark.parametrize("which", ["server", "torch_server"])
def test_preload_loads_the_model_once_in_the_master(which, request):
    server = request.getfixturevalue(which)
    log = server.log()
    loads = [line for line in log.splitlines() if "embedder.model: loading model" in line]
    assert len(loads) == 1, log
    assert f"[{server.pid}]" in loads[0]  # in the master
    if which == "torch_server":
        # The torch master holds the weights (22M parameters, ~90 MB in float32) before it forks.
        # (An onnx master holds only file paths: its workers map one weights file, test_onnx_server.py.)
        rss_kb = int(next(line.split()[1] for line in Path(f"/proc/{server.pid}/status").read_text()
                          .splitlines() if line.startswith("VmRSS")))
        assert rss_kb > 150_000


def test_multithreaded_worker_does_not_hang_and_gunicorn_flags_win(torch_server):
    """Fork safety: a torch worker with 2 threads answers (the master never ran the model; had it,
    the worker would hang and the request time out). GUNICORN_CMD_ARGS' --workers 1 wins over
    EMBEDDER_WORKERS=3, and /info reports what really runs (conftest's torch_server)."""
    assert len(torch_server.worker_pids()) == 1
    info = requests.get(torch_server.url + "/info", timeout=30).json()
    assert (info["threads_per_worker"], info["workers"], info["backend"]) == (2, 1, "torch")
    r = post(torch_server, "/embed", {"inputs": ["a sentence"] * 40})
    assert r.status_code == 200 and len(r.json()) == 40


# -- real servers: the real tokenizer (tokenizers; transformers' on the torch server) and model ---

@pytest.mark.parametrize("which", ["server", "torch_server"])
def test_tokenize_and_decode_match_the_models_tokenizer(which, request, reference_model):
    srv = request.getfixturevalue(which)
    text = "Héllo wörld, this is naïve café tokenization!"
    got = requests.post(srv.url + "/tokenize", json={"inputs": text}, timeout=30).json()[0]
    encoding = reference_model.tokenizer(text, return_offsets_mapping=True)
    assert [t["id"] for t in got] == encoding["input_ids"]
    raw = text.encode("utf-8")
    for token in got:
        if not token["special"]:
            assert raw[token["start"]:token["stop"]].decode("utf-8") == token["text"]
    decoded = requests.post(srv.url + "/decode", json={"ids": encoding["input_ids"]}, timeout=30).json()
    assert decoded == [reference_model.tokenizer.decode(encoding["input_ids"], skip_special_tokens=True)]


def test_similarity_and_post_root_on_the_real_model(server, reference_model, stsb):
    source, sentences = stsb[0][1], [s for _, _, s in stsb[:8]]
    r = requests.post(server.url + "/similarity",
                      json={"inputs": {"source_sentence": source, "sentences": sentences}}, timeout=30)
    assert r.status_code == 200
    vectors = reference_model.encode([source, *sentences], normalize_embeddings=True)
    assert np.abs(np.array(r.json()) - vectors[1:] @ vectors[0]).max() < 1e-5
    root = requests.post(server.url + "/", json={"inputs": sentences}, timeout=30)
    assert np.abs(np.array(root.json()) - vectors[1:]).max() < 1e-5


def test_openai_client_lists_the_model_and_gets_the_token_id_refusal(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["sentence-transformers/all-MiniLM-L6-v2"]
    with pytest.raises(openai.UnprocessableEntityError, match="check_embedding_ctx_length=False"):
        client.embeddings.create(model="all-MiniLM-L6-v2", input=[[15339, 1917]])
    with pytest.raises(openai.NotFoundError, match="model_not_found|does not exist"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
