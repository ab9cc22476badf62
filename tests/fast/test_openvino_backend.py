"""The openvino backend in process, on tiny random-weight models (tests/support/tiny_models.py):
fed the onnx backend's exported graph, float32 gives ONNX Runtime's vectors within 1e-5 (an
embedding model with a Dense layer, and a reranker's logits), bfloat16 within cosine 0.999 where
the CPU runs it natively; bfloat16 is refused at start on a CPU without it, and int8 is onnx's.
Building a backend never imports openvino: only ``start()``, in a worker, does.
tests/integration/test_accuracy.py holds each precision to the STS-B fidelity gate through real
servers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tiny_models as tiny
from bench.harness.servers import ROOT
from embedder.backends import onnx_export as ox
from embedder.backends import openvino_backend as ovb
from embedder.backends.onnx_backend import OnnxBackend
from embedder.backends.openvino_backend import OpenVinoBackend
from embedder.model.errors import UnsupportedModel
from embedder.model.load import load_model

QUERY = "what is the capital of Japan?"
needs_bf16 = pytest.mark.skipif(not ovb.native_bf16(), reason="this CPU has no native bfloat16")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """This module's own export cache (the session's holds the default model's export alone)."""
    return tmp_path_factory.mktemp("openvino-cache")


def _loaded(path, cache_dir):
    model = load_model(path, path.name, "openvino", cache_dir)
    ox.onnx_files(model, cache_dir, in_process=True)  # exported and prepared here, no child process
    return model


@pytest.fixture(scope="module")
def embedding(tiny_model_cache, cache_dir):
    """A DistilBERT with a Dense layer: pooling and Dense run after the graph, as in the onnx backend."""
    path = tiny_model_cache.get("distilbert", **tiny.PARITY_CASES["distilbert"])
    model = _loaded(path, cache_dir)
    return model, model.token_ids(tiny.TEXTS, truncate=True)


@pytest.fixture(scope="module")
def reranker(tiny_model_cache, cache_dir):
    model = _loaded(tiny_model_cache.get_reranker("bert-uncased"), cache_dir)
    return model, model.pair_ids(QUERY, tiny.TEXTS, truncate=True)


def _onnx(model, batch, cache_dir):
    backend = OnnxBackend(model, cache_dir)  # its files from the cache: ONNX Runtime's own vectors
    backend.start(1)
    return backend.forward(batch)


def _cosines(a, b):
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("which", ["embedding", "reranker"])
def test_float32_gives_onnx_runtimes_vectors(which, request, cache_dir):
    model, batch = request.getfixturevalue(which)
    expected = _onnx(model, batch, cache_dir)
    backend = OpenVinoBackend(model, cache_dir)
    assert backend.name == "openvino" and backend.path.suffix == ".onnx"
    backend.start(1)
    # the same graph: batches of any size and length (dynamic axes), one by one and all together
    got = backend.forward(batch)
    alone = np.concatenate([backend.forward(batch[i:i + 1]) for i in range(len(batch))])
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(batch), 1 if which == "reranker" else 16)
    assert np.abs(got - expected).max() < 1e-5 and np.abs(alone - expected).max() < 1e-5
    if which == "reranker":
        assert np.ptp(expected) > 0.1  # logits that differ, so the parity means something


@needs_bf16
@pytest.mark.parametrize("which", ["embedding", "reranker"])
def test_bfloat16_stays_within_cosine_0_999(which, request, cache_dir):
    model, batch = request.getfixturevalue(which)
    expected = _onnx(model, batch, cache_dir)
    backend = OpenVinoBackend(model, cache_dir, precision="bfloat16")
    assert backend.name == "openvino-bf16"
    backend.start(1)
    got = backend.forward(batch)
    if which == "reranker":  # one logit per pair, no cosine: the pairs' logits as one vector, and each
        # within 5 % of their spread. The tiny reranker differs from run to run (its tokenizer's
        # training breaks ties differently in each process), and bf16 moved its logits by 0.9-2.4 %
        # of their spread (0.015-0.058 absolute) over such runs.
        assert _cosines(got.T, expected.T).min() >= 0.995
        assert np.abs(got - expected).max() <= 0.05 * np.ptp(expected)
    else:
        assert _cosines(got, expected).min() >= 0.999
    assert not np.array_equal(got, expected)  # bf16 arithmetic really ran


def test_bfloat16_is_refused_without_native_support():
    with pytest.raises(UnsupportedModel, match="native bfloat16.*EMBEDDER_PRECISION=float32"):
        ovb.refuse_unsupported_precision("bfloat16", flags={"avx2", "avx512f", "avx512_vnni"})
    with pytest.raises(UnsupportedModel, match="int8 is EMBEDDER_BACKEND=onnx's"):
        ovb.refuse_unsupported_precision("int8")
    for flags in ({"avx512_bf16"}, {"amx_bf16", "amx_tile"}):
        ovb.refuse_unsupported_precision("bfloat16", flags=flags)  # no refusal
    ovb.refuse_unsupported_precision("float32", flags=set())
    assert ovb.native_bf16(set()) is False and ovb.native_bf16({"amx_bf16"}) is True


def test_unknown_cpu_flags_refuse_bfloat16(monkeypatch, embedding, cache_dir):
    """Off Linux (no /proc/cpuinfo) the CPU's bf16 support is unknown: refused, not guessed."""
    monkeypatch.setattr(ovb.platform, "system", lambda: "Darwin")
    assert ovb.cpu_flags() is None and ovb.native_bf16() is None
    with pytest.raises(UnsupportedModel, match="cannot be read here"):
        OpenVinoBackend(embedding[0], cache_dir, precision="bfloat16")


def test_building_the_backend_never_imports_openvino(embedding, cache_dir):
    """What the master does, in a fresh interpreter: load the model and build the backend (the graph
    from this module's cache). openvino's runtime would start threads that forked workers inherit
    without them; it is imported by start() alone."""
    model, _ = embedding
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from embedder.backends import create_backend
        from embedder.config import Settings
        from embedder.model.load import load_model

        model = load_model(Path(sys.argv[2]), Path(sys.argv[2]).name, "openvino", Path(sys.argv[1]))
        names = [create_backend(Settings(backend="openvino", cache_dir=sys.argv[1]), model).name]
        print(names, sorted(m for m in ("openvino", "onnxruntime", "torch", "transformers",
                                        "sentence_transformers") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(cache_dir), str(model.path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['openvino'] []", done.stdout
