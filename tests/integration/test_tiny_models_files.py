"""The onnx backend's loader on tiny models of every kind (tests/support/tiny_models.py): token ids
from the model's own files equal transformers' tokenizer's, proved once per tokenizer in a child
process (embedder/model/tokenizer_proof.py) — processes, hence this tier."""

from __future__ import annotations

import logging

import pytest

import tiny_models as tiny
from embedder.model.load import load_model

pytestmark = pytest.mark.integration

#: What the onnx backend's loader does with each kind today: "files" (its torch-free tokenizer
#: from tokenizer.json, proven to give transformers' ids) or "fallback" (NotReplicated, logged:
#: loaded with sentence-transformers). A change either way must be noticed here.
ONNX_LOADER = {"bert-uncased": "files", "bert-cased": "files", "distilbert": "files", "roberta": "files",
               "xlm-roberta": "files", "mpnet": "files", "modernbert": "files", "qwen3": "files"}


@pytest.mark.parametrize("kind", tiny.KINDS)
def test_torch_free_loader_ids_or_fallback(tiny_model_cache, caplog, kind):
    """The onnx backend's loader: the transformers tokenizer's ids from the files alone, or (for
    the kinds it does not reproduce) a logged fallback to sentence-transformers."""
    from transformers import AutoTokenizer

    options = tiny.PARITY_CASES[kind]
    path = tiny_model_cache.get(kind, **options)
    with caplog.at_level(logging.WARNING, logger="embedder.model"):
        model = load_model(path, kind, "onnx")
    assert len(model.dense) == (1 if options.get("dense") else 0)  # read in NumPy (embedder/model/dense.py)
    fell_back = "loading it with sentence-transformers instead" in caplog.text
    assert ("fallback" if fell_back else "files") == ONNX_LOADER[kind], caplog.text
    assert (model.st_model is not None) == fell_back
    assert model.max_input_tokens == tiny.token_limit(kind)
    hf = AutoTokenizer.from_pretrained(str(path))
    want = hf(tiny.TEXTS, truncation=True, max_length=tiny.token_limit(kind))["input_ids"]
    assert model.token_ids(tiny.TEXTS, True) == want
