"""Real servers (1 worker, onnx backend) serving the tiny random-weight models of every
architecture (tests/support/tiny_models.py): each kind's transformer exported to ONNX
(embedder/backends/onnx_export.py), pooled and its Dense layers run in NumPy, gives
sentence-transformers' own vectors, normalized and raw, with a prompt and with an input over the
limit truncated; the graph takes batches of any size and length; and no process of the server loads torch.
Qwen3 is served right-padded where sentence-transformers pads it left: causal attention keeps the
padding out of every real token, and last-token pooling takes each input's last real token.
tests/integration/test_architectures.py holds the torch backend to the same, and lends its
reference and request helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests
from test_architectures import TOL, assert_served_as_sentence_transformers, reference

import tiny_models as tiny
from bench.harness.servers import Gunicorn
from embedder.backends.onnx_backend import OnnxBackend
from embedder.model.load import load_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """This module's own export cache: the session's holds the default model's export alone
    (tests/integration/test_onnx_server.py counts its files)."""
    return tmp_path_factory.mktemp("onnx-architectures-cache")


@pytest.fixture(scope="module", params=tiny.KINDS)
def served(request, tiny_model_cache, cache_dir):
    """(kind, model directory, server): one server at a time, each kind's parity model."""
    kind = request.param
    path = tiny_model_cache.get(kind, **tiny.PARITY_CASES[kind])
    env = {"EMBEDDER_MODEL": str(path), "EMBEDDER_BACKEND": "onnx", "EMBEDDER_THREADS": "1",
           "EMBEDDER_CACHE_DIR": str(cache_dir)}
    with Gunicorn(workers=1, env=env) as server:
        yield kind, path, server


def test_embed_equals_sentence_transformers(served):
    kind, path, server = served
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["backend"] == "onnx" and info["loaded_with"] == "files", info
    assert info["max_input_tokens"] == tiny.token_limit(kind)
    assert info["modules"].count("Dense") == (1 if tiny.PARITY_CASES[kind].get("dense") else 0), info["modules"]
    assert_served_as_sentence_transformers(kind, path, server)


def test_graph_batches_of_one_and_three(served, cache_dir):
    """The exported graph's batch and length axes are dynamic: the backend in process (the files
    the server made, from its cache) on one text and on three of different lengths, right-padded,
    gives sentence-transformers' vectors (the server's batcher may split a request by length)."""
    kind, path, _ = served
    model = load_model(path, path.name, "onnx", cache_dir)  # the server's model id: its cached files
    backend = OnnxBackend(model, cache_dir)
    assert backend.prepared  # found in the cache, not exported again
    backend.start(1)
    _, raw = reference(path, kind)
    for texts in (tiny.TEXTS[:1], tiny.TEXTS[-1:], tiny.TEXTS[1:4], [tiny.TEXTS[6], tiny.TEXTS[-1], tiny.TEXTS[0]]):
        got = backend.forward(model.token_ids(texts, truncate=True))
        assert np.abs(got - raw.encode(texts)).max() < TOL, (kind, len(texts))


def test_no_process_of_the_server_loads_torch(served):
    _, _, server = served
    for pid in [server.pid, *server.worker_pids()]:
        assert "libtorch" not in Path(f"/proc/{pid}/maps").read_text(), pid
