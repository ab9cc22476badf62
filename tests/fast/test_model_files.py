"""The onnx backend's torch-free model loader (embedder/model/files.py) and its cache keys: the same
token ids and metadata as sentence-transformers' own loading, refusals of what it cannot run, and
export keys computed from the model's files without importing torch.

Fast tier (no servers); the in-process sentence-transformers reference is loaded once."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness.servers import ROOT
from embedder.backends import onnx_export as ox
from embedder.config import Settings
from embedder.model.errors import NotReplicated, UnsupportedModel
from embedder.model.files import load_model_files
from embedder.model.load import load_model
from embedder.model.pipeline import read_pipeline
from embedder.model.source import resolve_model
from embedder.model.st_loader import load_sentence_transformer
from embedder.model.tokenizer import load_tokenizer

FIELDS = ("model_id", "path", "dimension", "max_input_tokens", "vocab_size", "ends_with_normalize", "prompts",
          "prefix_ids", "suffix_ids", "pad_id", "uses_token_type_ids", "pooling_modes")
#: Inputs tokenizers treat specially: case, accents, CJK, emoji, control and zero-width characters,
#: special-token strings, a word over WordPiece's 100 characters, punctuation, empty text.
EDGE_CASES = ["", " ", "\t\n", "Hello WORLD", "Ünïcödé àccents ÅÉÎ", "中文字符和日本語のテキスト",
              "emoji 😀👍🏽 ok",
              "zero\u200bwidth\u00a0space", "[CLS] [SEP] [PAD] [MASK] [UNK] [sep] [Sep]", "x" * 150,
              "don't stop-believing!!! (really?) $3.50 & 10%", "a" * 3000]


def _bundled() -> tuple[Path, str]:
    source = resolve_model(Settings())
    return source.path, source.model_id


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return resolve_model(Settings()).path


def proofs() -> Path:
    """The session's cache directory, where the tokenizer proofs are kept (tests/conftest.py)."""
    return Settings().resolved_cache_dir()


@pytest.fixture(scope="module")
def from_files():
    return load_model_files(*_bundled(), proofs())


@pytest.fixture(scope="module")
def from_st():
    """Today's loading: a SentenceTransformer and its transformers tokenizer (imports torch)."""
    return load_sentence_transformer(*_bundled())


def sentences(stsb) -> list[str]:
    return sorted({s for _, a, b in stsb for s in (a, b)})


def model_copy(model_dir: Path, target: Path, json_files: dict | None = None) -> Path:
    """The model directory as symlinks, with the JSON files named by relative path written instead
    (None removes one)."""
    target.mkdir()
    for entry in model_dir.iterdir():
        (target / entry.name).symlink_to(entry)
    for name, content in (json_files or {}).items():
        path = target / name
        if path.parent != target and path.parent.is_symlink():  # a module folder: copy it to edit it
            real = path.parent.resolve()
            path.parent.unlink()
            shutil.copytree(real, path.parent)
        if path.is_symlink() or path.exists():
            path.unlink()
        if content is not None:
            path.write_text(json.dumps(content))
    return target


def modules_json(model_dir: Path) -> list:
    return json.loads((model_dir / "modules.json").read_text())


# -- same ids, same metadata -------------------------------------------------------------------------
def test_ids_are_transformers_ids_for_every_stsb_sentence(from_files, from_st, stsb):
    texts = sentences(stsb)
    assert len(texts) > 2500
    assert from_files.tokenizer.content_ids(texts) == from_st.tokenizer.content_ids(texts)
    assert from_files.token_ids(texts, truncate=True) == from_st.token_ids(texts, truncate=True)


def test_ids_are_transformers_ids_for_awkward_inputs(from_files, from_st):
    assert from_files.tokenizer.content_ids(EDGE_CASES) == from_st.tokenizer.content_ids(EDGE_CASES)
    for text in EDGE_CASES:
        assert from_files.tokenizer.wrapped_ids(text) == from_st.tokenizer.wrapped_ids(text), text
    assert from_files.token_ids(EDGE_CASES, truncate=True) == from_st.token_ids(EDGE_CASES, truncate=True)


def test_metadata_is_what_sentence_transformers_gives(from_files, from_st):
    assert from_files.st_model is None
    assert {f: getattr(from_files, f) for f in FIELDS} == {f: getattr(from_st, f) for f in FIELDS}
    assert (from_files.dimension, from_files.max_input_tokens, from_files.pooling_modes) == (384, 256, ("mean",))


def test_loading_from_files_imports_no_torch():
    """What the master does for the onnx backend, in a fresh interpreter."""
    script = ("import sys; from embedder.config import Settings; from embedder.model.load import load_model; "
              "from embedder.model.source import resolve_model; "
              "s = Settings(); src = resolve_model(s); m = load_model(src.path, src.model_id, s.backend); "
              "m.token_ids(['a test'], True); "
              "print(m.st_model is None, sorted(k for k in ('torch', 'transformers', 'sentence_transformers', "
              "'onnxruntime', 'onnx') if k in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True []", done.stdout


def test_the_model_directorys_settings_are_read_as_sentence_transformers_reads_them(model_dir, tmp_path, stsb):
    """Prompts, max_seq_length and do_lower_case (which adds a Lowercase normalizer) in a copy of
    the model: both loaders agree on metadata and ids."""
    copy = model_copy(model_dir, tmp_path / "model", {
        "config_sentence_transformers.json": {"prompts": {"query": "query: ", "passage": "passage: "}},
        "sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": True}})
    files, st = load_model_files(copy, copy.name, proofs()), load_sentence_transformer(copy, copy.name)
    assert files.prompts == st.prompts == {"query": "query: ", "document": "", "passage": "passage: "}
    assert files.max_input_tokens == st.max_input_tokens == 128
    texts = sentences(stsb)[:300] + EDGE_CASES
    assert files.token_ids(texts, truncate=True) == st.token_ids(texts, truncate=True)
    assert {f: getattr(files, f) for f in FIELDS} == {f: getattr(st, f) for f in FIELDS}


def test_without_max_seq_length_the_limit_is_the_position_embeddings(model_dir, tmp_path):
    copy = model_copy(model_dir, tmp_path / "model", {"sentence_bert_config.json": {"do_lower_case": False}})
    files, st = load_model_files(copy, copy.name, proofs()), load_sentence_transformer(copy, copy.name)
    assert files.max_input_tokens == st.max_input_tokens == 512


# -- refusals -----------------------------------------------------------------------------------------
def test_a_pipeline_with_other_modules_is_refused(model_dir, tmp_path):
    modules = modules_json(model_dir)
    other = {"idx": 2, "name": "2", "path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}
    modules = modules[:2] + [other] + [{**modules[2], "idx": 3, "name": "3"}]
    copy = model_copy(model_dir, tmp_path / "model", {"modules.json": modules})
    with pytest.raises(UnsupportedModel,
                       match="Transformer -> Pooling -> LayerNorm -> Normalize: use EMBEDDER_BACKEND=torch"):
        read_pipeline(copy)
    with pytest.raises(UnsupportedModel, match="EMBEDDER_BACKEND=torch"):
        load_model(copy, copy.name, "onnx")  # refused, not loaded another way


@pytest.mark.parametrize("edit", ["no pooling", "pooling first", "custom module"])
def test_pipelines_that_are_not_transformer_then_pooling_are_refused(model_dir, tmp_path, edit):
    modules = modules_json(model_dir)
    modules = {"no pooling": [modules[0], modules[2]],
               "pooling first": [modules[1], modules[0], modules[2]],
               "custom module": [modules[0], {**modules[1], "type": "my_package.Pooling"}, modules[2]]}[edit]
    modules = [{**module, "idx": index} for index, module in enumerate(modules)]
    copy = model_copy(model_dir, tmp_path / "model", {"modules.json": modules})
    with pytest.raises(UnsupportedModel, match="runs Transformer -> Pooling"):
        read_pipeline(copy)


def test_dense_layers_are_read_from_the_files_as_sentence_transformers_loads_them(model_dir, tmp_path):
    """Transformer -> Pooling -> Dense -> Normalize: both loaders give the same NumPy layer (weights
    from model.safetensors without torch), the Dense's output size and the module list."""
    import numpy as np
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    torch.manual_seed(0)
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    modules = modules_json(model_dir)
    copy = model_copy(model_dir, tmp_path / "model",
                      {"modules.json": modules[:2] + [dense] + [{**modules[2], "idx": 3, "name": "3"}]})
    (copy / "2_Dense").mkdir()
    Dense(384, 12, activation_function=torch.nn.GELU()).save(str(copy / "2_Dense"))
    files, st = load_model_files(copy, copy.name, proofs()), load_sentence_transformer(copy, copy.name)
    assert files.dimension == st.dimension == 12 and files.modules == st.modules
    assert files.modules == ("Transformer", "Pooling(mean)", "Dense", "Normalize")
    x = np.random.default_rng(0).normal(size=(2, 384)).astype(np.float32)
    assert len(files.dense) == len(st.dense) == 1 and np.abs(files.dense[0](x) - st.dense[0](x)).max() < 1e-6
    with open(copy / "2_Dense" / "config.json") as fh:  # a Dense whose input is not what pooling gives
        config = json.load(fh)
    (copy / "2_Dense" / "config.json").write_text(json.dumps({**config, "in_features": 768}))
    with pytest.raises(UnsupportedModel, match="takes 768 features where 384 come in"):
        read_pipeline(copy)


def test_a_transformer_that_does_not_output_token_vectors_is_refused(model_dir, tmp_path):
    copy = model_copy(model_dir, tmp_path / "model", {"sentence_bert_config.json": {
        "max_seq_length": 256, "transformer_task": "sequence-classification"}})
    with pytest.raises(UnsupportedModel, match="last_hidden_state"):
        read_pipeline(copy)


def test_legacy_and_new_pooling_configs(model_dir, tmp_path):
    assert read_pipeline(model_dir).pooling_modes == ("mean",)
    copy = model_copy(model_dir, tmp_path / "model",
                      {"1_Pooling/config.json": {"embedding_dimension": 384, "pooling_mode": ["cls", "max"]}})
    pipeline = read_pipeline(copy)
    assert (pipeline.pooling_modes, pipeline.dimension, pipeline.ends_with_normalize) == (("cls", "max"), 768, True)


@pytest.mark.parametrize("edit,reason", [
    ({"tokenizer_config.json": {"tokenizer_class": "RobertaTokenizer"}}, "tokenizer class RobertaTokenizer"),
    ({"tokenizer_config.json": {"tokenizer_class": "BertTokenizer", "auto_map": {"AutoTokenizer": ["x.T", None]}}},
     "auto_map"),
    ({"tokenizer.json": None}, "no tokenizer.json"),
    ({"sentence_bert_config.json": {"max_seq_length": 256, "tokenizer_name_or_path": "elsewhere"}},
     "tokenizer_name_or_path"),
    ({"sentence_bert_config.json": {"max_seq_length": 256, "tokenizer_args": {"add_prefix_space": True}}},
     "add_prefix_space"),
])
def test_tokenizer_set_ups_it_does_not_reproduce_are_named(model_dir, tmp_path, edit, reason):
    copy = model_copy(model_dir, tmp_path / "model", edit)
    config = json.loads((copy / "sentence_bert_config.json").read_text())
    model_config = json.loads((copy / "config.json").read_text())
    with pytest.raises(NotReplicated, match=reason):
        load_tokenizer(copy, config, model_config)


def test_a_tokenizer_it_does_not_reproduce_is_loaded_with_sentence_transformers(model_dir, tmp_path, caplog,
                                                                               from_st):
    settings = {**json.loads((model_dir / "tokenizer_config.json").read_text()),
                "tokenizer_class": "BertTokenizerFast", "auto_map": {"AutoTokenizer": ["BertTokenizer", None]}}
    copy = model_copy(model_dir, tmp_path / "model", {"tokenizer_config.json": settings})
    with caplog.at_level(logging.WARNING, logger="embedder.model"):
        model = load_model(copy, copy.name, "onnx")
    assert model.st_model is not None and "loading it with sentence-transformers instead" in caplog.text
    assert model.pooling_modes == ("mean",)
    assert model.token_ids(["A test."], True) == from_st.token_ids(["A test."], True)


# -- the export's cache key, from files ---------------------------------------------------------------
def test_the_export_key_hashes_the_files_and_the_exporter_versions(model_dir, tmp_path, monkeypatch):
    key = ox.export_key(model_dir)
    copy = model_copy(model_dir, tmp_path / "model")
    assert ox.export_key(copy) == key  # the same files, wherever they are
    (copy / "README.md").unlink()
    (copy / "README.md").write_text("docs do not change the graph")
    (copy / "onnx").mkdir()
    (copy / "onnx" / "model.onnx").write_bytes(b"another backend's copy")
    assert ox.export_key(copy) == key
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    weights.unlink()
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert ox.export_key(copy) != key
    real = ox.version
    monkeypatch.setattr(ox, "version", lambda name: "0.0" if name == "transformers" else real(name))
    assert ox.export_key(model_dir) != key


def test_computing_the_keys_imports_no_exporter():
    script = ("import sys; from embedder.backends import onnx_export as ox; from embedder.config import Settings; "
              "from embedder.model.source import resolve_model; "
              "ox.export_key(resolve_model(Settings()).path); ox.serving_key('k'); "
              "print(sorted(k for k in ('torch', 'transformers', 'sentence_transformers', 'onnxruntime', 'onnx') "
              "if k in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_the_serving_key_follows_the_source_the_runtime_and_the_cpu(monkeypatch):
    key = ox.serving_key("source")
    assert ox.serving_key("source") == key and ox.serving_key("other source") != key
    monkeypatch.setattr(ox, "cpu_fingerprint", lambda: "another cpu")
    assert ox.serving_key("source") != key
    monkeypatch.undo()
    real = ox.version
    monkeypatch.setattr(ox, "version", lambda name: "9.9" if name == "onnxruntime" else real(name))
    assert ox.serving_key("source") != key


def test_texts_are_tokenized_a_chunk_at_a_time_with_the_same_ids(from_files, monkeypatch):
    """Long texts are tokenized a few at a time and cut at once (a request never holds all of a
    max-size request's 2 M tokens): same ids as one call, and a refusal names the right input."""
    from embedder.model import loaded

    texts = ["a short one", "word " * 400, *EDGE_CASES, "another " * 50]
    whole = from_files.wrap_ids(from_files.tokenizer.content_ids(texts), True)
    calls = []
    content_ids = from_files.tokenizer.content_ids
    monkeypatch.setattr(from_files.tokenizer, "content_ids",
                        lambda chunk: calls.append(len(chunk)) or content_ids(chunk))
    monkeypatch.setattr(loaded, "TOKENIZE_CHUNK_CHARS", 1000)
    assert from_files.token_ids(texts, truncate=True) == whole
    assert len(calls) > 3 and sum(calls) == len(texts)
    with pytest.raises(Exception) as refused:
        from_files.token_ids(["fine", "fine", "word " * 400], truncate=False)
    assert refused.value.index == 2
