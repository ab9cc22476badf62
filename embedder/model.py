"""Loading a sentence-transformers model and turning inputs into the token ids it reads.

Loading happens once, in the Gunicorn master (``preload_app``), so workers share the weights'
pages. Tokenizing happens in the request threads, so the batching thread only pads and runs
the forward pass, and so token counts (for limits, usage and metrics) are known before queueing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .config import Settings
from .errors import InputTooLong

log = logging.getLogger("embedder.model")


@dataclass
class LoadedModel:
    """A sentence-transformers model plus what serving needs to know about it."""

    #: The sentence-transformers model (its modules run in the torch backend, the ONNX export
    #: traces it); None for a model that only tokenizes, as the fast tests' stand-in does.
    st_model: object
    #: A Hugging Face tokenizer (called as ``tokenizer(texts, ...)["input_ids"]``).
    tokenizer: object
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

    def token_ids(self, texts: list[str], truncate: bool) -> list[list[int]]:
        """Token ids of each text with special tokens, truncated to the model's limit."""
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=False,
                                 return_attention_mask=False, return_token_type_ids=False,
                                 verbose=False)["input_ids"]
        return self.wrap_ids(encoded, truncate)

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


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """Find the ids a tokenizer puts before and after a single sequence."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    return [], []


def load_model(settings: Settings) -> LoadedModel:
    """Load the configured model from a local directory (never from a hub)."""
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
    prefix, suffix = _special_tokens(st_model.tokenizer)
    tokenizer = st_model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dimension = st_model.get_embedding_dimension() if hasattr(st_model, "get_embedding_dimension") \
        else st_model.get_sentence_embedding_dimension()
    loaded = LoadedModel(
        st_model=st_model,
        tokenizer=tokenizer,
        model_id=settings.resolved_model_id(),
        path=str(path),
        dimension=int(dimension),
        max_input_tokens=int(st_model.max_seq_length),
        vocab_size=len(tokenizer),
        ends_with_normalize=isinstance(modules[-1], Normalize),
        prompts={k: v for k, v in (st_model.prompts or {}).items()},
        prefix_ids=prefix,
        suffix_ids=suffix,
        pad_id=pad_id,
        uses_token_type_ids="token_type_ids" in getattr(tokenizer, "model_input_names", ()),
    )
    log.info("model %s loaded: dimension %d, max %d tokens", loaded.model_id, loaded.dimension,
             loaded.max_input_tokens)
    return loaded
