"""Real servers (1 worker, torch backend) serving tiny random-weight models of common architectures
(tests/support/tiny_models.py: BERT cased and uncased, DistilBERT, RoBERTa, XLM-RoBERTa, MPNet,
ModernBERT, Qwen3): ``/embed`` gives sentence-transformers' own vectors, normalized and raw, with a
prompt, and an input over the model's limit is truncated as sentence-transformers truncates it
(tests/fast/test_tiny_models.py holds the in-process path to the same)."""

from __future__ import annotations

import numpy as np
import pytest
import requests

import tiny_models as tiny
from bench.harness.servers import Gunicorn

pytestmark = pytest.mark.integration
TOL = 1e-5


@pytest.fixture(scope="module", params=tiny.KINDS)
def served(request, tiny_model_cache):
    """(kind, model directory, server): one server at a time, each kind's parity model."""
    kind = request.param
    path = tiny_model_cache.get(kind, **tiny.PARITY_CASES[kind])
    env = {"EMBEDDER_MODEL": str(path), "EMBEDDER_BACKEND": "torch", "EMBEDDER_THREADS": "1"}
    with Gunicorn(workers=1, env=env) as server:
        yield kind, path, server


def reference(path, kind: str):
    """sentence-transformers in-process, at the limit the server reports, and the same pipeline
    without its final Normalize (what ``normalize: false`` returns)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device="cpu")
    st.max_seq_length = tiny.token_limit(kind)  # RoBERTa and XLM-R left unset: see test_tiny_models.py
    modules = list(st)
    raw = SentenceTransformer(modules=modules[:-1] if type(modules[-1]).__name__ == "Normalize" else modules,
                              device="cpu", prompts=st.prompts)
    return st, raw


def embed(server, **body) -> np.ndarray:
    r = requests.post(server.url + "/embed", json={"inputs": tiny.TEXTS, **body}, timeout=60)
    assert r.status_code == 200, r.text
    return np.array(r.json(), dtype=np.float32)


def assert_served_as_sentence_transformers(kind: str, path, server) -> None:
    """The server's /embed vectors equal sentence-transformers', normalized and raw, with no prompt
    and with each of the model's prompts, on texts one of which is over the model's limit."""
    st, raw = reference(path, kind)
    prompts = [name for name, text in st.prompts.items() if text]
    assert prompts
    for normalize in (True, False):
        for prompt_name in (None, *prompts):
            kwargs = {"prompt_name": prompt_name} if prompt_name else {}
            want = st.encode(tiny.TEXTS, normalize_embeddings=True, **kwargs) if normalize \
                else raw.encode(tiny.TEXTS, **kwargs)
            got = embed(server, normalize=normalize, truncate=True, **kwargs)
            assert got.shape == want.shape
            assert np.abs(got - want).max() < TOL, (kind, normalize, prompt_name, np.abs(got - want).max())


def test_embed_equals_sentence_transformers(served):
    kind, path, server = served
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["max_input_tokens"] == tiny.token_limit(kind)
    assert_served_as_sentence_transformers(kind, path, server)


def test_info_says_what_is_served(served):
    """/info names the architecture, the tokenizer, the pipeline's modules and the loader."""
    import json

    kind, path, server = served
    info = requests.get(server.url + "/info", timeout=10).json()
    config = json.loads((path / "config.json").read_text())
    assert info["architecture"] == (config.get("architectures") or [config["model_type"]])[0]
    assert info["tokenizer"].split(" ")[0] == tiny.TOKENIZER_KIND[kind].split(" ")[0], info["tokenizer"]
    assert info["loaded_with"] == "sentence-transformers" and info["backend"] == "torch"
    pooling = tiny.PARITY_CASES[kind].get("pooling", tiny.DEFAULT_POOLING[kind])
    pooling = "+".join(pooling) if isinstance(pooling, list) else pooling
    assert info["modules"][:2] == ["Transformer", f"Pooling({pooling})"], info["modules"]
    assert ("Normalize" in info["modules"]) == info["normalized_by_model"]


def test_input_over_the_limit_is_refused_without_truncate(served):
    kind, _, server = served
    r = requests.post(server.url + "/embed", json={"inputs": tiny.TEXTS[-1:], "truncate": False}, timeout=60)
    assert r.status_code == 422, r.text
    assert f"more than the model's {tiny.token_limit(kind)}" in r.json()["error"]
