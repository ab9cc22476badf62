"""Loading a model with sentence-transformers itself (imports torch): what the torch backend runs,
what the ONNX export traces, and the fallback when the files alone do not reproduce the model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .dense import from_module
from .errors import UnsupportedModel
from .loaded import LoadedModel
from .pipeline import chain, module_kinds
from .pooling import pooling_modes
from .tokenizer import TransformersTokenizer, special_tokens

log = logging.getLogger("embedder.model")


def _onnx_parts(modules: list, kinds: list[str], model_id: str) -> tuple[tuple, tuple]:
    """The Pooling module's modes and the Dense layers (in NumPy) if the pipeline is the one the
    onnx backend runs (``pipeline.chain``); both empty otherwise (the torch backend runs any
    pipeline), the reason logged."""
    try:
        chain(kinds, model_id)
        dense = tuple(from_module(module, model_id) for kind, module in zip(kinds, modules) if kind == "Dense")
    except UnsupportedModel as why:
        log.info("model %s is not one the onnx backend runs: %s", model_id, why)
        return (), ()
    return pooling_modes(modules[1]), dense


def position_limit(transformer_model) -> int | None:
    """The most tokens the transformer's learned position embeddings take, or None (rotary or no
    positions). RoBERTa-family embeddings (RoBERTa, XLM-R, MPNet, CamemBERT...) number positions from
    ``padding_idx + 1``, so of their ``max_position_embeddings`` (e.g. 514) only that many less are
    usable (512). sentence-transformers caps its limit at ``max_position_embeddings`` alone, so for
    such a model whose ``max_seq_length`` and tokenizer limit are unset, it truncates to 514 and
    crashes on a longer input; serving takes the usable count instead."""
    import torch  # (see load_sentence_transformer)

    limits = []
    for module in transformer_model.modules():
        table = getattr(module, "position_embeddings", None)
        if isinstance(table, torch.nn.Embedding):
            padding_idx = getattr(module, "padding_idx", None)
            offset = padding_idx + 1 if isinstance(padding_idx, int) else 0
            limits.append(table.num_embeddings - offset)
    return min(limits) if limits else None


def load_sentence_transformer(path: Path, model_id: str = "", trust_remote_code: bool = False) -> LoadedModel:
    """The model in directory ``path`` as a SentenceTransformer (imports torch); the model's own code
    runs only with ``trust_remote_code`` (``pipeline.check_code`` refuses it before otherwise)."""
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
    st_model = SentenceTransformer(str(path), device="cpu", local_files_only=True,
                                   trust_remote_code=trust_remote_code)
    st_model.eval()
    modules = list(st_model.children())
    tokenizer = st_model.tokenizer
    prefix, suffix = special_tokens(TransformersTokenizer(tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kinds = module_kinds(modules)
    ends_with_normalize = kinds[-1] == "Normalize"
    hf_config = getattr(getattr(modules[0], "auto_model", None), "config", None)
    architecture = ((getattr(hf_config, "architectures", None) or [getattr(hf_config, "model_type", "")])[0]
                    if hf_config is not None else "")
    backend_tokenizer = getattr(tokenizer, "backend_tokenizer", None)
    tokenizer_kind = (f"{type(backend_tokenizer.model).__name__} ({type(tokenizer).__name__})"
                      if backend_tokenizer is not None else type(tokenizer).__name__)
    max_tokens = int(st_model.max_seq_length)
    usable = position_limit(modules[0])
    if usable is not None and max_tokens > usable:
        log.warning("model %s: max_seq_length %d exceeds the %d positions its position embeddings "
                    "take; serving at most %d tokens", model_id or path.name, max_tokens, usable, usable)
        max_tokens = usable
        st_model.max_seq_length = usable  # so the model in-process truncates as serving does
    dimension = st_model.get_embedding_dimension() if hasattr(st_model, "get_embedding_dimension") \
        else st_model.get_sentence_embedding_dimension()
    loaded = LoadedModel(
        st_model=st_model,
        tokenizer=TransformersTokenizer(tokenizer),
        model_id=model_id or path.name,
        path=str(path),
        dimension=int(dimension),
        max_input_tokens=max_tokens,
        vocab_size=len(tokenizer),
        ends_with_normalize=ends_with_normalize,
        prompts={k: v for k, v in (st_model.prompts or {}).items()},
        default_prompt_name=st_model.default_prompt_name,
        architecture=architecture or "",
        tokenizer_kind=tokenizer_kind,
        modules=tuple(f"Pooling({'+'.join(pooling_modes(module))})" if kind == "Pooling" else kind
                      for kind, module in zip(kinds, modules)),
        loaded_with="sentence-transformers",
        prefix_ids=prefix,
        suffix_ids=suffix,
        pad_id=pad_id,
        uses_token_type_ids="token_type_ids" in getattr(tokenizer, "model_input_names", ()),
    )
    loaded.pooling_modes, loaded.dense = _onnx_parts(modules, kinds, loaded.model_id)
    log.info("model %s loaded: dimension %d, max %d tokens", loaded.model_id, loaded.dimension,
             loaded.max_input_tokens)
    return loaded
