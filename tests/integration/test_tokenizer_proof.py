"""The proof that the torch-free tokenizer gives transformers' ids (embedder/model/tokenizer_proof.py):
recorded in the cache directory and reused, a tokenizer that differs caught (and the model loaded
with sentence-transformers instead), transformers kept out of the loading process.

Fast tier, on the tiny models of tests/support/tiny_models.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

import tiny_models as tiny
from bench.harness.servers import ROOT
from embedder.model import tokenizer as tokenizer_module
from embedder.model import tokenizer_proof as tp
from embedder.model.errors import NotReplicated
from embedder.model.load import load_model

pytestmark = pytest.mark.integration  # proofs run in child processes

FALLBACK = "loading it with sentence-transformers instead"


def hf_ids(path, kind: str, texts: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(path))
    return hf(texts, truncation=True, max_length=tiny.token_limit(kind))["input_ids"]


def copy_with(source, target, tokenizer_json=None, tokenizer_config=None):
    """The model directory as symlinks, tokenizer.json and tokenizer_config.json edited in place by
    the functions given."""
    target.mkdir()
    for entry in source.iterdir():
        (target / entry.name).symlink_to(entry)
    for name, edit in (("tokenizer.json", tokenizer_json), ("tokenizer_config.json", tokenizer_config)):
        if edit is not None:
            raw = json.loads((source / name).read_text(encoding="utf-8"))
            edit(raw)
            (target / name).unlink()
            (target / name).write_text(json.dumps(raw), encoding="utf-8")
    return target


def lowercase(raw: dict) -> None:
    raw["normalizer"] = {"type": "Lowercase"}


@pytest.fixture
def roberta(tiny_model_cache):
    return tiny_model_cache.get("roberta", **tiny.PARITY_CASES["roberta"])


def test_the_proof_is_recorded_once_and_reused(roberta, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_model(roberta, "roberta", "onnx", cache_dir=cache)
    records = list((cache / tp.PROOF_DIR).glob("*.json"))
    assert first.st_model is None and len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["match"] is True and record["difference"] is None
    assert (record["class"], record["transformers_class"]) == ("RobertaTokenizer", "RobertaTokenizer")
    assert record["key"] == records[0].stem == tp.proof_key(roberta, {})
    assert record["texts"] == len(tp.SAMPLE) and set(record["packages"]) == set(tp.PACKAGES)

    def no_child(*args):
        raise AssertionError("the recorded proof was not reused")

    monkeypatch.setattr(tp, "_reference_in_child", no_child)
    again = load_model(roberta, "roberta", "onnx", cache_dir=cache)
    assert again.st_model is None
    assert again.token_ids(tiny.TEXTS, True) == hf_ids(roberta, "roberta", tiny.TEXTS)


def test_the_proof_key_follows_the_tokenizer_files_settings_and_versions(roberta, tmp_path, monkeypatch):
    key = tp.proof_key(roberta, {})
    copy = copy_with(roberta, tmp_path / "copy")
    assert tp.proof_key(copy, {}) == key  # the same files, wherever they are
    (copy / "README.md").write_text("docs do not change the tokenizer")
    assert tp.proof_key(copy, {"max_seq_length": 12}) == key
    assert tp.proof_key(copy, {"do_lower_case": True}) != key
    edited = copy_with(roberta, tmp_path / "edited", lambda raw: raw.update(version="edited"))
    assert tp.proof_key(edited, {}) != key
    real = tp.version
    monkeypatch.setattr(tp, "version", lambda name: "0.0" if name == "tokenizers" else real(name))
    assert tp.proof_key(roberta, {}) != key


@pytest.mark.parametrize("how", ["loader bug", "unknown class"])
def test_a_tokenizer_that_differs_from_transformers_is_caught_and_falls_back(tiny_model_cache, tmp_path,
                                                                              monkeypatch, caplog, how):
    """tokenizer.json's normalizer changed to lowercase. ``loader bug``: RobertaTokenizer drops the
    file's normalizer (transformers rebuilds the backend) and a loader that forgot to drop it is
    caught. ``unknown class``: an XLM-R tokenizer named CamembertTokenizer, whose rebuilding (it too
    keeps only a Precompiled normalizer) the loader does not know, so reads the file as is."""
    kind, want_class = ("roberta", "RobertaTokenizer") if how == "loader bug" else ("xlm-roberta", "CamembertTokenizer")
    source = tiny_model_cache.get(kind, **tiny.PARITY_CASES[kind])
    if how == "loader bug":
        broken = copy_with(source, tmp_path / "broken", lowercase)
        monkeypatch.setattr(tokenizer_module, "_class_components", lambda *args: None)
    else:
        broken = copy_with(source, tmp_path / "broken", lowercase,
                           lambda config: config.update(tokenizer_class="CamembertTokenizer"))
    cache = tmp_path / "cache"
    with pytest.raises(NotReplicated, match=f"differs from transformers' {want_class}: "):
        tp.prove(tokenizer_module.load_tokenizer(broken, {}, json.loads((broken / "config.json").read_text())),
                 broken, {}, cache)
    (record,) = [json.loads(p.read_text()) for p in (cache / tp.PROOF_DIR).glob("*.json")]
    assert record["match"] is False and "in transformers" in record["difference"]
    with caplog.at_level(logging.WARNING, logger="embedder.model"):
        model = load_model(broken, "broken", "onnx", cache_dir=cache)
    assert model.st_model is not None and FALLBACK in caplog.text and "differs from transformers'" in caplog.text
    assert model.token_ids(tiny.TEXTS, True) == hf_ids(broken, kind, tiny.TEXTS)


def test_proving_keeps_transformers_and_torch_out_of_the_loading_process(tiny_model_cache, tmp_path):
    """What the master does for the onnx backend, in a fresh interpreter: the proof's child imports
    transformers (and torch), the master neither."""
    path = tiny_model_cache.get("qwen3", **tiny.PARITY_CASES["qwen3"])
    script = ("import sys; from pathlib import Path; from embedder.model.load import load_model; "
              f"m = load_model(Path({str(path)!r}), 'tiny', 'onnx', cache_dir=Path({str(tmp_path)!r})); "
              "m.token_ids(['a test'], True); "
              "print(m.st_model is None, sorted(k for k in ('torch', 'transformers', 'sentence_transformers') "
              "if k in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True []", done.stdout
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / tp.PROOF_DIR).glob("*.json")]
    assert (record["match"], record["class"]) == (True, "Qwen2Tokenizer")
