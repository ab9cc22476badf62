"""Loading a model with sentence-transformers itself (imports torch): what the torch backend runs,
what the ONNX export traces, and the fallback when the files alone do not reproduce the model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import UnsupportedModel
from .loaded import LoadedModel
from .pipeline import chain, module_kinds
from .pooling import pooling_modes
from .tokenizer import TransformersTokenizer, special_tokens

log = logging.getLogger("embedder.model")


def _pooling_modes(modules: list, kinds: list[str], model_id: str) -> tuple:
    """The Pooling module's modes if the pipeline is Transformer -> Pooling (-> Normalize), the one
    the onnx backend runs; empty otherwise (the torch backend runs any pipeline)."""
    try:
        chain(kinds, model_id)
    except UnsupportedModel:
        return ()
    return pooling_modes(modules[1])


def load_sentence_transformer(path: Path, model_id: str = "") -> LoadedModel:
    """The model in directory ``path`` as a SentenceTransformer (imports torch)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # torch, transformers and sentence-transformers: only when this loader runs (the onnx backend's
    # master and workers never import them).
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no progress bars in server logs

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    log.info("loading model from %s", path)
    st_model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    st_model.eval()
    modules = list(st_model.children())
    tokenizer = st_model.tokenizer
    prefix, suffix = special_tokens(TransformersTokenizer(tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kinds = module_kinds(modules)
    ends_with_normalize = kinds[-1] == "Normalize"
    dimension = st_model.get_embedding_dimension() if hasattr(st_model, "get_embedding_dimension") \
        else st_model.get_sentence_embedding_dimension()
    loaded = LoadedModel(
        st_model=st_model,
        tokenizer=TransformersTokenizer(tokenizer),
        model_id=model_id or path.name,
        path=str(path),
        dimension=int(dimension),
        max_input_tokens=int(st_model.max_seq_length),
        vocab_size=len(tokenizer),
        ends_with_normalize=ends_with_normalize,
        prompts={k: v for k, v in (st_model.prompts or {}).items()},
        prefix_ids=prefix,
        suffix_ids=suffix,
        pad_id=pad_id,
        uses_token_type_ids="token_type_ids" in getattr(tokenizer, "model_input_names", ()),
        pooling_modes=_pooling_modes(modules, kinds, model_id),
    )
    log.info("model %s loaded: dimension %d, max %d tokens", loaded.model_id, loaded.dimension,
             loaded.max_input_tokens)
    return loaded
