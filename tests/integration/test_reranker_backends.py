"""Rerankers on both backends, in process (no server): for each tiny reranker
(tests/support/tiny_models.py's RERANKER_KINDS, a plain transformers directory as older hub
cross-encoders are, an Identity activation), ``model.activate(backend.forward(model.pair_ids(...)))``
is ``CrossEncoder.predict``'s score and the raw logits its logits, on documents with CJK and emoji
and one over the limit (a short query: CrossEncoder cuts the document as serving does). The onnx
backend's model is read from the files alone, its pair ids and template proven against transformers
in a child process (a wrong template is caught), its graph exported in one, int8 too; and loading
it keeps torch and onnxruntime out of the process, as a Gunicorn master needs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import tiny_models as tiny
from bench.harness.servers import ROOT
from embedder.backends import create_backend
from embedder.config import Settings
from embedder.model import tokenizer_proof as tp
from embedder.model.load import load_model
from embedder.model.rerank import PairTemplate

pytestmark = pytest.mark.integration
TOL = 1e-5
QUERY = "Who is playing a guitar?"
#: (kind, build options) of each reranker the backends are held to sentence-transformers on.
CASES = {kind: (kind, {}) for kind in tiny.RERANKER_KINDS} | {
    "bert-uncased-hf": ("bert-uncased", {"style": "hf"}),
    "xlm-roberta-identity": ("xlm-roberta", {"activation": "Identity"}),
}
FALLBACK = "loading it with sentence-transformers instead"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """This module's own export and proof cache (the session's holds the default model's alone)."""
    return tmp_path_factory.mktemp("reranker-cache")


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    """TorchBackend.start sets torch's threads for the process; put them back after this module."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def cross_encoder(path, limit: int):
    """The model as sentence-transformers users load it, at the limit served (RoBERTa's family with
    no limit saved: sentence-transformers' is 2 past the positions the model takes)."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(path), device="cpu")
    assert model.max_seq_length in (limit, limit + 2)
    model.max_seq_length = limit
    return model


def served(path, name: str, backend: str, cache_dir, caplog, quantize: str = ""):
    """The model as the server loads it for ``backend``, and its started backend."""
    with caplog.at_level(logging.WARNING, logger="embedder.model"):
        model = load_model(path, name, backend, cache_dir)
    assert FALLBACK not in caplog.text
    runner = create_backend(Settings(backend=backend, quantize=quantize, cache_dir=str(cache_dir)), model)
    runner.start(1)
    return model, runner


@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("case", CASES)
def test_scores_are_cross_encoder_predicts(tiny_model_cache, cache_dir, caplog, case, backend):
    import torch

    kind, options = CASES[case]
    path = tiny_model_cache.get_reranker(kind, **options)
    model, runner = served(path, case, backend, cache_dir, caplog)
    assert (model.kind, model.dimension, model.max_input_tokens) == ("reranker", 1, tiny.POSITIONS)
    assert model.loaded_with == ("files" if backend == "onnx" else "sentence-transformers")
    assert model.activation == options.get("activation", "Sigmoid")
    pairs = model.pair_ids(QUERY, tiny.TEXTS, truncate=True)
    assert max(len(pair) for pair in pairs) == model.max_input_tokens  # the long document was cut

    reference = cross_encoder(path, model.max_input_tokens)
    encoded = reference.tokenizer([QUERY] * len(tiny.TEXTS), tiny.TEXTS, truncation="longest_first",
                                  max_length=model.max_input_tokens)
    assert [list(pair) for pair in pairs] == encoded["input_ids"]
    assert [pair.type_ids for pair in pairs] == (encoded["token_type_ids"] if model.uses_token_type_ids
                                                 else [None] * len(pairs))

    logits = runner.forward(pairs)
    assert logits.shape == (len(pairs), 1) and logits.dtype == np.float32
    texts = [(QUERY, text) for text in tiny.TEXTS]
    want = reference.predict(texts)
    raw = reference.predict(texts, activation_fn=torch.nn.Identity())
    assert np.abs(model.activate(logits) - want).max() < TOL, np.abs(model.activate(logits) - want).max()
    assert np.abs(logits[:, 0] - raw).max() < TOL
    assert np.ptp(raw) > 0.5  # not a degenerate model: the scores differ
    # batches of one and of several lengths, right-padded
    alone = np.concatenate([runner.forward([pair]) for pair in pairs[:3]])
    assert np.abs(alone[:, 0] - raw[:3]).max() < TOL


def test_int8_scores_follow_float32(tiny_model_cache, cache_dir, caplog):
    """Quantized, the graph still ranks as the model does (tiny random models lose more to int8
    than trained ones)."""
    path = tiny_model_cache.get_reranker("bert-uncased")
    model, runner = served(path, "bert-uncased", "onnx", cache_dir, caplog, quantize="int8")
    assert runner.name == "onnx-int8" and runner.prepared
    want = cross_encoder(path, model.max_input_tokens).predict([(QUERY, text) for text in tiny.TEXTS])
    got = model.activate(runner.forward(model.pair_ids(QUERY, tiny.TEXTS, truncate=True)))
    assert np.abs(got - want).max() < 0.1 and np.corrcoef(got, want)[0, 1] > 0.98


def test_a_pair_template_that_differs_from_transformers_is_caught(tiny_model_cache, tmp_path, caplog, monkeypatch):
    """The proof holds pairs as serving assembles them to transformers' encoding: a template with a
    token too many is caught, and the model loaded with sentence-transformers instead."""
    real = tp.pair_template

    def wrong(tokenizer) -> PairTemplate:
        template = real(tokenizer)
        return PairTemplate(**{**template.__dict__, "middle": template.middle * 2,
                               "middle_types": template.middle_types * 2})

    monkeypatch.setattr(tp, "pair_template", wrong)
    path = tiny_model_cache.get_reranker("bert-uncased")
    with caplog.at_level(logging.WARNING, logger="embedder.model"):
        model = load_model(path, "wrong", "onnx", tmp_path)
    assert FALLBACK in caplog.text and "pair ids of" in caplog.text, caplog.text
    assert model.loaded_with == "sentence-transformers" and model.kind == "reranker"
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / tp.PROOF_DIR).iterdir()]
    assert record["pairs"] == len(tp.PAIRS) and not record["match"]


def test_loading_for_the_onnx_backend_keeps_torch_and_onnxruntime_out(tiny_model_cache, cache_dir):
    """What a Gunicorn master does with a reranker (load, build the backend: files already cached)
    in a fresh process: no torch, transformers or onnxruntime imported."""
    path = tiny_model_cache.get_reranker("xlm-roberta")
    script = (
        "import json, sys\n"
        "from embedder.backends import create_backend\n"
        "from embedder.config import Settings\n"
        "from embedder.model.load import load_model\n"
        f"model = load_model({str(path)!r}, 'xlm-roberta', 'onnx', {str(cache_dir)!r})\n"
        f"create_backend(Settings(backend='onnx', cache_dir={str(cache_dir)!r}), model)\n"
        "print(json.dumps([model.loaded_with, model.kind, sorted(m for m in ('torch', 'transformers', "
        "'sentence_transformers', 'onnxruntime') if m in sys.modules)]))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["files", "reranker", []]
