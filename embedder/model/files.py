"""Loading a sentence-transformers model from its directory's files alone, for the onnx backend.

No torch, transformers or sentence-transformers in the process: the pipeline comes from
``modules.json`` and the modules' configs (``pipeline.py``), prompts from
``config_sentence_transformers.json`` and the tokenizer from ``tokenizer.json`` (``tokenizer.py``),
proven once per model to give transformers' ids (``tokenizer_proof.py``, in a child process).
The result is the LoadedModel that sentence-transformers' path (``st_loader.py``) would give, bar
``st_model``; the tests hold the two to the same ids and metadata. A reranker (``rerank.py``) is read
the same way, its pair template derived from the files' tokenizer and proven with it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .dense import read_dense
from .errors import NotReplicated
from .loaded import LoadedModel
from .pipeline import read_json, read_pipeline
from .rerank import RERANKER, model_kind, pair_template, read_reranker
from .tokenizer import TokenizerSetup, load_tokenizer, special_tokens
from .tokenizer_proof import prove

log = logging.getLogger("embedder.model")

#: Model types whose learned position embeddings number positions from ``padding_idx + 1``
#: (RoBERTa's family): of max_position_embeddings that many fewer are usable (see
#: ``st_loader.position_limit``, which finds the same from the loaded modules); MPNet's padding_idx
#: is fixed at 1, the others' is config.json's pad_token_id.
PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "ibert",
                            "longformer", "roberta-prelayernorm", "xmod", "mpnet"}
#: Model types whose learned position embeddings take max_position_embeddings tokens.
PLAIN_POSITIONS = {"bert", "distilbert", "electra", "albert"}
#: Model types without learned position embeddings (rotary): no cap from them.
ROTARY = {"modernbert", "qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3_text", "nomic_bert"}


def default_prompt_name_of(model_dir: Path) -> str | None:
    """config_sentence_transformers.json's ``default_prompt_name``: the prompt applied when none is named."""
    return (read_json(model_dir / "config_sentence_transformers.json", {}) or {}).get("default_prompt_name")


def prompts_of(model_dir: Path) -> dict[str, str]:
    """SentenceTransformer's prompts: query and document (empty unless the model names them) and
    whatever config_sentence_transformers.json adds."""
    prompts: dict[str, str | None] = {"query": None, "document": None}
    saved = (read_json(model_dir / "config_sentence_transformers.json", {}) or {}).get("prompts") or {}
    for name, text in saved.items():
        if prompts.get(name) is None:
            prompts[name] = text
    return {name: "" if text is None else text for name, text in prompts.items()}


def position_limit(model_config: dict, max_length: int) -> int:
    """``max_length`` capped at the tokens the model's position embeddings take, from config.json
    alone, as the sentence-transformers loader caps it (``st_loader.position_limit``)."""
    model_type = model_config.get("model_type")
    positions = model_config.get("max_position_embeddings")
    if model_type in ROTARY or positions is None or positions == -1:
        return max_length
    if model_type in PADDING_OFFSET_POSITIONS:
        padding_idx = 1 if model_type == "mpnet" else model_config.get("pad_token_id", 1)
        usable = int(positions) - (padding_idx + 1 if isinstance(padding_idx, int) else 0)
    elif model_type in PLAIN_POSITIONS:
        usable = int(positions)
    elif max_length > int(positions):
        raise NotReplicated(f"a {model_type} model's limit {max_length} exceeds its {positions} positions, "
                            "and whether its position embeddings take them is not known here")
    else:
        return max_length
    if max_length > usable:
        log.warning("max_seq_length %d exceeds the %d positions the %s model's position embeddings take; "
                    "serving at most %d tokens", max_length, usable, model_type, usable)
    return min(max_length, usable)


def _tokenizer_kind(setup: TokenizerSetup) -> str:
    return f"{type(setup.tokenizer.backend.model).__name__} ({setup.class_name or 'tokenizer.json'})"


def _architecture(model_config: dict) -> str:
    return (model_config.get("architectures") or [model_config.get("model_type", "")])[0]


def load_model_files(path: Path, model_id: str, cache_dir: Path | None = None,
                     trust_remote_code: bool = False) -> LoadedModel:
    """The model in directory ``path`` as a LoadedModel (``st_model`` None) from its files alone.
    Its tokenizer is served only once proven to give transformers' ids (``tokenizer_proof.py``; the
    verdict recorded under ``cache_dir`` when given, else proven at every load); NotReplicated when
    it does not. ``trust_remote_code`` decides, as for sentence-transformers, whether a reranker's
    activation may be a class outside torch (it is then refused: ``rerank.activation_of``)."""
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    log.info("loading model from %s (its files: tokenizer and settings; the onnx backend maps the weights)", path)
    if model_kind(path) == RERANKER:
        return _load_reranker_files(path, model_id, cache_dir, trust_remote_code)
    pipeline = read_pipeline(path, model_id)
    dense = tuple(read_dense(folder, model_id) for folder in pipeline.dense_dirs)  # NumPy weights, no torch
    model_config = read_json(pipeline.transformer_dir / "config.json", {}) or {}
    setup = load_tokenizer(pipeline.transformer_dir, pipeline.transformer_config, model_config)
    prove(setup, pipeline.transformer_dir, pipeline.transformer_config, cache_dir)
    prefix, suffix = special_tokens(setup.tokenizer)
    loaded = LoadedModel(
        st_model=None,
        tokenizer=setup.tokenizer,
        model_id=model_id,
        path=str(path),
        dimension=pipeline.dimension,
        max_input_tokens=position_limit(model_config, setup.model_max_length),
        vocab_size=setup.vocab_size,
        ends_with_normalize=pipeline.ends_with_normalize,
        prompts=prompts_of(path),
        default_prompt_name=default_prompt_name_of(path),
        prefix_ids=prefix,
        suffix_ids=suffix,
        pad_id=setup.pad_id,
        uses_token_type_ids=setup.uses_token_type_ids,
        pooling_modes=pipeline.pooling_modes,
        dense=dense,
        architecture=_architecture(model_config),
        tokenizer_kind=_tokenizer_kind(setup),
        modules=("Transformer", f"Pooling({'+'.join(pipeline.pooling_modes)})")
        + ("Dense",) * len(dense) + (("Normalize",) if pipeline.ends_with_normalize else ()),
        loaded_with="files",
    )
    log.info("model %s read from its files (no torch): dimension %d, max %d tokens", model_id,
             loaded.dimension, loaded.max_input_tokens)
    return loaded


def _load_reranker_files(path: Path, model_id: str, cache_dir: Path | None, trust_remote_code: bool) -> LoadedModel:
    """A reranker from its files: held to ``rerank.read_reranker``, its tokenizer and pair template
    proven against transformers' (pairs included)."""
    reranker = read_reranker(path, model_id, trust_remote_code)
    setup = load_tokenizer(reranker.transformer_dir, reranker.transformer_config, reranker.model_config)
    template = pair_template(setup.tokenizer)
    if template is None:
        raise NotReplicated("its tokenizer.json does not encode a pair as prefix + query + middle + document + suffix")
    prove(setup, reranker.transformer_dir, reranker.transformer_config, cache_dir, pairs=True)
    prefix, suffix = special_tokens(setup.tokenizer)
    loaded = LoadedModel(
        st_model=None,
        tokenizer=setup.tokenizer,
        model_id=model_id,
        path=str(path),
        dimension=1,
        max_input_tokens=position_limit(reranker.model_config, setup.model_max_length),
        vocab_size=setup.vocab_size,
        ends_with_normalize=False,
        prefix_ids=prefix,
        suffix_ids=suffix,
        pad_id=setup.pad_id,
        uses_token_type_ids=setup.uses_token_type_ids,
        architecture=_architecture(reranker.model_config),
        tokenizer_kind=_tokenizer_kind(setup),
        modules=("Transformer",),
        loaded_with="files",
        kind=RERANKER,
        activation=reranker.activation,
        pair_template=template,
    )
    log.info("reranker %s read from its files (no torch): activation %s, max %d tokens a pair", model_id,
             loaded.activation, loaded.max_input_tokens)
    return loaded
