"""Loading a sentence-transformers model from its directory's files alone, for the onnx backend.

No torch, transformers or sentence-transformers in the process: the pipeline comes from
``modules.json`` and the modules' configs (``pipeline.py``), prompts from
``config_sentence_transformers.json`` and the tokenizer from ``tokenizer.json`` (``tokenizer.py``).
The result is the LoadedModel that sentence-transformers' path (``st_loader.py``) would give, bar
``st_model``; the tests hold the two to the same ids and metadata.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .loaded import LoadedModel
from .pipeline import read_json, read_pipeline
from .tokenizer import load_tokenizer, special_tokens

log = logging.getLogger("embedder.model")


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


def load_model_files(path: Path, model_id: str) -> LoadedModel:
    """The model in directory ``path`` as a LoadedModel (``st_model`` None) from its files alone."""
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    log.info("loading model from %s (its files: tokenizer and settings; the onnx backend maps the weights)", path)
    pipeline = read_pipeline(path, model_id)
    model_config = read_json(pipeline.transformer_dir / "config.json", {}) or {}
    setup = load_tokenizer(pipeline.transformer_dir, pipeline.transformer_config, model_config)
    prefix, suffix = special_tokens(setup.tokenizer)
    loaded = LoadedModel(
        st_model=None,
        tokenizer=setup.tokenizer,
        model_id=model_id,
        path=str(path),
        dimension=pipeline.dimension,
        max_input_tokens=setup.model_max_length,
        vocab_size=setup.vocab_size,
        ends_with_normalize=pipeline.ends_with_normalize,
        prompts=prompts_of(path),
        default_prompt_name=default_prompt_name_of(path),
        prefix_ids=prefix,
        suffix_ids=suffix,
        pad_id=setup.pad_id,
        uses_token_type_ids=setup.uses_token_type_ids,
        pooling_modes=pipeline.pooling_modes,
    )
    log.info("model %s read from its files (no torch): dimension %d, max %d tokens", model_id,
             loaded.dimension, loaded.max_input_tokens)
    return loaded
