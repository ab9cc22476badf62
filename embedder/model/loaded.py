"""A loaded model: what serving needs to know about it, and its inputs as the token ids it reads
(special tokens around them, cut at the model's limit as sentence-transformers cuts them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import TooManyTokens
from .tokenizer import Tokenizer


@dataclass
class LoadedModel:
    """A sentence-transformers model plus what serving needs to know about it."""

    #: The sentence-transformers model (its modules run in the torch backend); None when the model
    #: was read from its files (the onnx backend) or is the fast tests' stand-in.
    st_model: object
    #: A :class:`~embedder.model.tokenizer.Tokenizer`.
    tokenizer: Tokenizer
    model_id: str
    path: str
    dimension: int
    max_input_tokens: int
    vocab_size: int
    #: Whether the model's own pipeline ends with a Normalize module (the backend stops before it).
    ends_with_normalize: bool
    prompts: dict = field(default_factory=dict)
    #: The prompt sentence-transformers applies when a request names none (``default_prompt_name``).
    default_prompt_name: str | None = None
    #: Special tokens the tokenizer wraps every input in, e.g. [CLS] ... [SEP].
    prefix_ids: list = field(default_factory=list)
    suffix_ids: list = field(default_factory=list)
    pad_id: int = 0
    #: Whether the transformer takes token_type_ids (BERT does; many others do not).
    uses_token_type_ids: bool = True
    #: The Pooling module's modes, in its concatenation order, when the pipeline is Transformer ->
    #: Pooling -> Dense* (-> Normalize) (what the onnx backend runs); empty otherwise.
    pooling_modes: tuple = ()
    #: The Dense layers after pooling, in order (``dense.DenseLayer``: NumPy weights), that the onnx
    #: backend runs; empty when there are none or the pipeline is not the one it runs.
    dense: tuple = ()
    #: What is served, for /info and the log: the transformer's architecture (config.json's
    #: ``architectures``, else its ``model_type``), the tokenizer's model and class, the pipeline's
    #: modules (``Pooling(mean)``...), and which loader read it ("files": torch-free;
    #: "sentence-transformers") and why.
    architecture: str = ""
    tokenizer_kind: str = ""
    modules: tuple = ()
    loaded_with: str = ""
    loader_note: str = ""

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
                    raise TooManyTokens(index, len(ids) + len(self.prefix_ids) + len(self.suffix_ids),
                                        self.max_input_tokens)
                ids = ids[:room]
            out.append(self.prefix_ids + list(ids) + self.suffix_ids)
        return out
