"""Tiny random-weight models of common architectures (tests/support/tiny_models.py): each kind
builds and runs in sentence-transformers, embedder's torch path (its loader and TorchBackend, in
process) gives sentence-transformers' own vectors, and the torch-free loader either reproduces the
tokenizer's ids (proven against transformers' tokenizer: tests/fast/test_tokenizer_proof.py) or
falls back to sentence-transformers, as recorded per kind below.

Fast tier: no servers (tests/integration/test_architectures.py holds real servers to the same)."""

from __future__ import annotations

import numpy as np
import pytest

import tiny_models as tiny
from embedder.backends.torch_backend import TorchBackend
from embedder.model.load import load_model
from embedder.model.st_loader import load_sentence_transformer

TOL = 1e-5

#: Kinds whose sentence-transformers limit, with max_seq_length unset, is max_position_embeddings
#: although their positions start after padding_idx: sentence-transformers itself fails on an input
#: that long; embedder serves position_embeddings - padding_idx - 1 tokens (st_loader.position_limit).
PADDING_OFFSET = {"roberta", "xlm-roberta", "mpnet"}


def reference(path, kind: str):
    """The model as sentence-transformers users load it, at the limit embedder serves."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device="cpu")
    if st.max_seq_length != tiny.token_limit(kind):
        assert kind in PADDING_OFFSET and "max_seq_length" not in tiny.PARITY_CASES[kind]
        assert st.max_seq_length == tiny.POSITIONS + 2
        st.max_seq_length = tiny.token_limit(kind)
    return st


def without_normalize(st):
    from sentence_transformers import SentenceTransformer

    modules = list(st)
    if type(modules[-1]).__name__ == "Normalize":
        modules = modules[:-1]
    return SentenceTransformer(modules=modules, device="cpu", prompts=st.prompts)


def embedder_vectors(model, backend, texts: list[str], prompt_name: str | None, normalize: bool) -> np.ndarray:
    """What embedder's service does with an /embed request, bar the batcher: prompt, token ids cut at
    the limit, the backend's forward pass, then normalization when asked (embedder/core/service.py)."""
    if prompt_name:
        texts = [model.prompts[prompt_name] + text for text in texts]
    vectors = backend.forward(model.token_ids(texts, truncate=True))
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


@pytest.fixture(scope="module")
def torch_threads():
    """TorchBackend.start sets torch's threads for the process; put them back after this module."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", tiny.KINDS)
def test_each_kind_builds_and_runs(tiny_model_cache, kind):
    from sentence_transformers import SentenceTransformer

    path = tiny_model_cache.get(kind, **tiny.PARITY_CASES[kind])
    assert (path / "modules.json").is_file() and (path / "tokenizer.json").is_file()
    st = SentenceTransformer(str(path), device="cpu")
    vectors = st.encode(tiny.TEXTS[:-1])
    assert vectors.shape[0] == len(tiny.TEXTS) - 1 and np.isfinite(vectors).all()
    assert len({tuple(np.round(v, 6)) for v in vectors}) == len(vectors)  # not all one vector
    if kind == "qwen3":  # as Qwen3-Embedding: EOS after the text, left padding
        assert st.tokenizer("hi")["input_ids"][-1] == st.tokenizer.convert_tokens_to_ids(tiny.QWEN_EOS)
        assert st.tokenizer.padding_side == "left"


def test_builds_are_deterministic(tmp_path, tiny_model_cache):
    from safetensors.numpy import load_file

    again = tiny.build("roberta", tmp_path / "again", **tiny.PARITY_CASES["roberta"])
    first = load_file(tiny_model_cache.get("roberta", **tiny.PARITY_CASES["roberta"]) / "model.safetensors")
    second = load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("kind", tiny.KINDS)
def test_torch_path_equals_sentence_transformers(tiny_model_cache, torch_threads, kind):
    """embedder's loader and TorchBackend give sentence-transformers' vectors: each prompt,
    normalized and raw, on CJK, emoji, spaces and an input over the limit (truncated)."""
    path = tiny_model_cache.get(kind, **tiny.PARITY_CASES[kind])
    model = load_model(path, kind, "torch")
    assert model.max_input_tokens == tiny.token_limit(kind)
    backend = TorchBackend(model)
    backend.start(1)
    st = reference(path, kind)
    raw_st = without_normalize(st)
    assert len(model.tokenizer.content_ids(tiny.TEXTS[-1:])[0]) > model.max_input_tokens  # really cut
    for prompt_name in (None, *sorted(st.prompts)):
        kwargs = {"prompt_name": prompt_name} if prompt_name else {}
        for normalize in (True, False):
            got = embedder_vectors(model, backend, tiny.TEXTS, prompt_name, normalize)
            want = (st.encode(tiny.TEXTS, normalize_embeddings=True, **kwargs) if normalize
                    else raw_st.encode(tiny.TEXTS, **kwargs))
            assert got.shape == want.shape
            assert np.abs(got - want).max() < TOL, (kind, prompt_name, normalize)


@pytest.mark.parametrize("kind", sorted(PADDING_OFFSET))
def test_unset_limit_is_the_usable_positions(tiny_model_cache, kind):
    """With max_seq_length unset, sentence-transformers' limit is max_position_embeddings and it
    fails on an input that long (positions start after padding_idx); embedder serves the positions
    the model takes, and its in-process model truncates there too."""
    from sentence_transformers import SentenceTransformer

    path = tiny_model_cache.get(kind, prompts=tiny.PROMPTS)
    st = SentenceTransformer(str(path), device="cpu")
    assert st.max_seq_length == tiny.POSITIONS + 2
    with pytest.raises((IndexError, RuntimeError)):
        st.encode(tiny.TEXTS[-1:])
    loaded = load_sentence_transformer(path, kind)
    assert loaded.max_input_tokens == tiny.POSITIONS == loaded.st_model.max_seq_length
    assert np.isfinite(loaded.st_model.encode(tiny.TEXTS[-1:])).all()


def test_default_prompt_name_is_applied(tiny_model_cache, torch_threads):
    """A request that names no prompt gets the model's default_prompt_name, as sentence-transformers'
    encode does: through the core's service itself, in-process. Both loaders read the default."""
    from sentence_transformers import SentenceTransformer

    from embedder.config import Settings
    from embedder.core.models import ServedModels
    from embedder.core.service import EmbeddingService, EmbedRequest

    path = tiny_model_cache.get("bert-uncased", prompts=tiny.PROMPTS, default_prompt_name="query")
    assert load_model(path, "default-prompt", "onnx").default_prompt_name == "query"  # from the files
    model = load_model(path, "default-prompt", "torch")
    assert model.default_prompt_name == "query"
    service = EmbeddingService(Settings(), model, TorchBackend(model))
    ServedModels.of(service).start_worker()
    want = SentenceTransformer(str(path), device="cpu").encode(tiny.TEXTS[:3], normalize_embeddings=True)
    got = service.embed(EmbedRequest(texts=tiny.TEXTS[:3])).vectors
    assert np.abs(got - want).max() < TOL
