"""Loading a sentence-transformers model and turning inputs into the token ids it reads.

Loading happens once, in the Gunicorn master (``preload_app``). The torch backend loads the
SentenceTransformer (its weights then shared by the forked workers); the onnx backend reads only
the model directory's files (``model_files.py``: no torch in the master or the workers), unless
that loader cannot reproduce the model's tokenizer exactly. Tokenizing happens in the request
threads, so the batching thread only pads and runs the forward pass, and so token counts (for
limits, usage and metrics) are known before queueing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Protocol

from .config import Settings
from .errors import InputTooLong

log = logging.getLogger("embedder.model")


class Tokenizer(Protocol):
    """What serving needs of a tokenizer (model_files.FileTokenizer, TransformersTokenizer, the fast
    tests' stand-in)."""

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text without special tokens, untruncated."""

    def wrapped_ids(self, text: str) -> list[int]:
        """Token ids of one text with the special tokens the tokenizer adds."""

    def tokens(self, text: str, add_special_tokens: bool) -> list[tuple[int, str, bool, int, int]]:
        """``(id, token, special, start, stop)`` of each token of one text, untruncated; start and
        stop are character offsets into ``text``."""

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        """The text of token ids, as the tokenizer's decoder writes it."""


class TransformersTokenizer:
    """A Hugging Face (transformers) tokenizer behind the :class:`Tokenizer` methods."""

    def __init__(self, hf):
        self.hf = hf

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        return self.hf(texts, add_special_tokens=False, truncation=False, return_attention_mask=False,
                       return_token_type_ids=False, verbose=False)["input_ids"]

    def wrapped_ids(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=True)["input_ids"]

    def tokens(self, text: str, add_special_tokens: bool) -> list[tuple[int, str, bool, int, int]]:
        out = self.hf(text, add_special_tokens=add_special_tokens, truncation=False, verbose=False,
                      return_offsets_mapping=True, return_special_tokens_mask=True)
        ids = out["input_ids"]
        return [(i, token, bool(special), start, stop) for i, token, special, (start, stop)
                in zip(ids, self.hf.convert_ids_to_tokens(ids), out["special_tokens_mask"],
                       out["offset_mapping"])]

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)


@dataclass
class LoadedModel:
    """A sentence-transformers model plus what serving needs to know about it."""

    #: The sentence-transformers model (its modules run in the torch backend); None when the model
    #: was read from its files (the onnx backend) or is the fast tests' stand-in.
    st_model: object
    #: A :class:`Tokenizer`: ``content_ids(texts)`` and ``wrapped_ids(text)``.
    tokenizer: Tokenizer
    model_id: str
    path: str
    dimension: int
    max_input_tokens: int
    vocab_size: int
    #: Whether the model's own pipeline ends with a Normalize module (the backend stops before it).
    ends_with_normalize: bool
    prompts: dict = field(default_factory=dict)
    #: Special tokens the tokenizer wraps every input in, e.g. [CLS] ... [SEP].
    prefix_ids: list = field(default_factory=list)
    suffix_ids: list = field(default_factory=list)
    pad_id: int = 0
    #: Whether the transformer takes token_type_ids (BERT does; many others do not).
    uses_token_type_ids: bool = True
    #: The Pooling module's modes, in its concatenation order, when the pipeline is Transformer ->
    #: Pooling (-> Normalize) (what the onnx backend runs); empty otherwise.
    pooling_modes: tuple = ()

    def token_ids(self, texts: list[str], truncate: bool) -> list[list[int]]:
        """Token ids of each text with special tokens, truncated to the model's limit."""
        return self.wrap_ids(self.tokenizer.content_ids(texts), truncate)

    def wrap_ids(self, content: list[list[int]], truncate: bool) -> list[list[int]]:
        """Add special tokens around content ids; cut (or refuse) what exceeds the limit."""
        room = self.max_input_tokens - len(self.prefix_ids) - len(self.suffix_ids)
        out = []
        for index, ids in enumerate(content):
            if len(ids) > room:
                if not truncate:
                    raise InputTooLong(index, len(ids) + len(self.prefix_ids) + len(self.suffix_ids),
                                       self.max_input_tokens)
                ids = ids[:room]
            out.append(self.prefix_ids + list(ids) + self.suffix_ids)
        return out


def special_tokens(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """Find the ids a tokenizer puts before and after a single sequence."""
    plain = tokenizer.content_ids(["a"])[0]
    full = tokenizer.wrapped_ids("a")
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    return [], []


def load_model(settings: Settings) -> LoadedModel:
    """Load the configured model from a local directory (never from a hub): from its files alone
    for the onnx backend (no torch), as a SentenceTransformer for the torch backend, or when the
    files' loader does not reproduce the model's set-up (logged). A pipeline the onnx backend
    cannot run raises model_files.UnsupportedModel."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if settings.backend == "onnx":
        from .model_files import NotReplicated, load_model_files

        try:
            return load_model_files(settings)
        except NotReplicated as why:
            log.warning("model %s: %s; loading it with sentence-transformers instead (torch in the master)",
                        settings.resolved_model_id(), why)
    return load_sentence_transformer(settings)


def _pooling_modes(modules: list, ends_with_normalize: bool) -> tuple:
    """A SentenceTransformer's pooling modes if it is Transformer -> Pooling (-> Normalize)."""
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    core = modules[:-1] if ends_with_normalize else modules
    if len(core) != 2 or not isinstance(core[0], Transformer) or not isinstance(core[1], Pooling):
        return ()
    mode = core[1].pooling_mode
    return (mode,) if isinstance(mode, str) else tuple(mode)


def load_sentence_transformer(settings: Settings) -> LoadedModel:
    """The configured model as a SentenceTransformer (imports torch)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.normalize import Normalize
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no progress bars in server logs

    path = settings.model_path()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    log.info("loading model from %s", path)
    st_model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    st_model.eval()
    modules = list(st_model.children())
    tokenizer = st_model.tokenizer
    prefix, suffix = special_tokens(TransformersTokenizer(tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ends_with_normalize = isinstance(modules[-1], Normalize)
    dimension = st_model.get_embedding_dimension() if hasattr(st_model, "get_embedding_dimension") \
        else st_model.get_sentence_embedding_dimension()
    loaded = LoadedModel(
        st_model=st_model,
        tokenizer=TransformersTokenizer(tokenizer),
        model_id=settings.resolved_model_id(),
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
        pooling_modes=_pooling_modes(modules, ends_with_normalize),
    )
    log.info("model %s loaded: dimension %d, max %d tokens", loaded.model_id, loaded.dimension,
             loaded.max_input_tokens)
    return loaded
