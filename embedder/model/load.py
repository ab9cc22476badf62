"""Loading the configured model, once, in the Gunicorn master (``preload_app``).

An embedding model is served as a SentenceTransformer, a reranker as a CrossEncoder (which is which:
``rerank.model_kind``, from the files). The torch backend loads it with sentence-transformers (its
weights then shared by the forked workers); the onnx backend reads only the model directory's files
(``files.py``: no torch in the master or the workers), unless that loader cannot reproduce the
model's set-up exactly (NotReplicated, logged), when sentence-transformers loads it instead.
Tokenizing happens in the request threads, so the batching thread only pads and runs the forward
pass, and so token counts (for limits, usage and metrics) are known before queueing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config import Settings
from .errors import NotReplicated
from .files import load_model_files
from .loaded import LoadedModel
from .pipeline import check_code
from .st_loader import load_with_sentence_transformers

log = logging.getLogger("embedder.model")


def load_model(path: Path, model_id: str, backend: str, cache_dir: Path | None = None,
               trust_remote_code: bool = False) -> LoadedModel:
    """The model in directory ``path`` (never from a hub), named ``model_id``, an embedding model or
    a reranker: from its files alone for the onnx and openvino backends, else (or when the files' loader does not
    reproduce the model's set-up) with sentence-transformers. A pipeline the onnx backend cannot run,
    a reranker rerank does not serve (``rerank.read_reranker``), or a model that runs code of its own
    (unless ``trust_remote_code``), raises UnsupportedModel naming what is not supported.
    ``cache_dir`` holds the files' tokenizer proofs (default: the settings' cache directory)."""
    check_code(path, model_id, trust_remote_code)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if backend != "torch":  # onnx and openvino: the same torch-free files
        if cache_dir is None:
            cache_dir = Settings.from_env().resolved_cache_dir()
        try:
            return load_model_files(Path(path), model_id, Path(cache_dir), trust_remote_code)
        except NotReplicated as why:
            log.warning("model %s: %s; loading it with sentence-transformers instead (torch in the master)",
                        model_id, why)
            model = load_with_sentence_transformers(Path(path), model_id, trust_remote_code)
            model.loader_note = f"the torch-free loader does not reproduce it ({why}): torch in the master"
            return model
    return load_with_sentence_transformers(Path(path), model_id, trust_remote_code)
