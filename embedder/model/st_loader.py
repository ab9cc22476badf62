"""Loading a model with sentence-transformers itself (imports torch): what the torch backend runs,
what the ONNX export traces, and the fallback when the files alone do not reproduce the model. An
embedding model loads as a SentenceTransformer, a reranker as a CrossEncoder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .dense import from_module
from .errors import UnsupportedModel
from .loaded import LoadedModel
from .pipeline import chain, module_kinds
from .pooling import pooling_modes
from .rerank import RERANKER, activation_name, check_labels, check_prompts, model_kind, pair_template, read_reranker
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


def _prepare() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers: only when a loader here runs (the onnx backend's master and workers never do).
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no progress bars in server logs


def _architecture(modules: list) -> str:
    hf_config = getattr(getattr(modules[0], "auto_model", None), "config", None)
    if hf_config is None:
        return ""
    return (getattr(hf_config, "architectures", None) or [getattr(hf_config, "model_type", "")])[0] or ""


def _tokenizer_kind(tokenizer) -> str:
    backend_tokenizer = getattr(tokenizer, "backend_tokenizer", None)
    return (f"{type(backend_tokenizer.model).__name__} ({type(tokenizer).__name__})"
            if backend_tokenizer is not None else type(tokenizer).__name__)


def _token_limit(st_model, modules: list, name: str) -> int:
    """The model's max_seq_length capped at what its position embeddings take (and set so on the
    model, so that it truncates in-process as serving does)."""
    max_tokens = int(st_model.max_seq_length)
    usable = position_limit(modules[0])
    if usable is not None and max_tokens > usable:
        log.warning("model %s: max_seq_length %d exceeds the %d positions its position embeddings "
                    "take; serving at most %d tokens", name, max_tokens, usable, usable)
        max_tokens = usable
        st_model.max_seq_length = usable
    return max_tokens


def load_sentence_transformer(path: Path, model_id: str = "", trust_remote_code: bool = False) -> LoadedModel:
    """The model in directory ``path`` as a SentenceTransformer (imports torch); the model's own code
    runs only with ``trust_remote_code`` (``pipeline.check_code`` refuses it before otherwise)."""
    _prepare()
    # torch and sentence-transformers: only when this loader runs (see _prepare).
    from sentence_transformers import SentenceTransformer

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
    max_tokens = _token_limit(st_model, modules, model_id or path.name)
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
        architecture=_architecture(modules),
        tokenizer_kind=_tokenizer_kind(tokenizer),
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


def load_cross_encoder(path: Path, model_id: str = "", trust_remote_code: bool = False) -> LoadedModel:
    """The reranker in directory ``path`` as a CrossEncoder (imports torch), held to
    ``rerank.read_reranker`` before loading and to the same rules on what sentence-transformers
    loaded (its modules, labels, prompts and activation) after."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    model_id = model_id or path.name
    read_reranker(path, model_id, trust_remote_code)  # its refusals, before loading anything
    _prepare()
    # torch and sentence-transformers: only when this loader runs (see _prepare).
    from sentence_transformers import CrossEncoder
    from sentence_transformers.util import fullname

    log.info("loading reranker from %s", path)
    st_model = CrossEncoder(str(path), device="cpu", local_files_only=True, trust_remote_code=trust_remote_code)
    st_model.eval()
    modules = list(st_model.children())
    kinds = module_kinds(modules)
    if kinds != ["Transformer"] or modules[0].transformer_task != "sequence-classification":
        raise UnsupportedModel(f"sentence-transformers loads {model_id} as {' -> '.join(kinds)} "
                               f"({getattr(modules[0], 'transformer_task', '?')}); rerank serves one Transformer "
                               "module for sequence classification")
    check_labels(st_model.num_labels, model_id)
    check_prompts(st_model.prompts or {}, st_model.default_prompt_name, model_id)
    tokenizer = st_model.tokenizer
    wrapped = TransformersTokenizer(tokenizer)
    template = pair_template(wrapped)
    if template is None:
        raise UnsupportedModel(f"{model_id}'s tokenizer does not encode a pair as prefix + query + middle + "
                               "document + suffix, the form rerank cuts documents in")
    prefix, suffix = special_tokens(wrapped)
    loaded = LoadedModel(
        st_model=st_model,
        tokenizer=wrapped,
        model_id=model_id,
        path=str(path),
        dimension=1,
        max_input_tokens=_token_limit(st_model, modules, model_id),
        vocab_size=len(tokenizer),
        ends_with_normalize=False,
        architecture=_architecture(modules),
        tokenizer_kind=_tokenizer_kind(tokenizer),
        modules=("Transformer",),
        loaded_with="sentence-transformers",
        prefix_ids=prefix,
        suffix_ids=suffix,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        uses_token_type_ids="token_type_ids" in getattr(tokenizer, "model_input_names", ()),
        kind=RERANKER,
        activation=activation_name(fullname(st_model.activation_fn), model_id),
        pair_template=template,
    )
    log.info("reranker %s loaded: activation %s, max %d tokens a pair", model_id, loaded.activation,
             loaded.max_input_tokens)
    return loaded


def load_with_sentence_transformers(path: Path, model_id: str = "", trust_remote_code: bool = False) -> LoadedModel:
    """The model in ``path`` with sentence-transformers' class for its kind (``rerank.model_kind``)."""
    loader = load_cross_encoder if model_kind(path) == RERANKER else load_sentence_transformer
    return loader(path, model_id, trust_remote_code)
