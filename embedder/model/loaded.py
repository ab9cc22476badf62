"""A loaded model: what serving needs to know about it, and its inputs as the token ids it reads
(special tokens around them, cut at the model's limit as sentence-transformers cuts them): texts
for an embedding model, (query, document) pairs for a reranker, whose logits it also turns into
scores."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import QueryTooLong, TooManyTokens
from .rerank import EMBEDDING, PairIds, PairTemplate, activate
from .tokenizer import Tokenizer

#: Characters of text tokenized at once (a text longer than this goes alone): bounds the tokens a
#: request holds before they are cut to the model's limit, at no cost to short texts' batching.
TOKENIZE_CHUNK_CHARS = 65536


def chunks(texts: list[str]) -> Iterator[tuple[int, int]]:
    """``(begin, end)`` of consecutive runs of ``texts`` of at most :data:`TOKENIZE_CHUNK_CHARS`
    characters (a longer text alone)."""
    begin = 0
    while begin < len(texts):
        end, chars = begin, 0
        while end < len(texts) and (end == begin or chars + len(texts[end]) <= TOKENIZE_CHUNK_CHARS):
            chars += len(texts[end])
            end += 1
        yield begin, end
        begin = end


@dataclass
class LoadedModel:
    """A sentence-transformers model (a SentenceTransformer or, for a reranker, a CrossEncoder) plus
    what serving needs to know about it."""

    #: The sentence-transformers model (its modules run in the torch backend); None when the model
    #: was read from its files (the onnx backend) or is the fast tests' stand-in.
    st_model: object
    #: A :class:`~embedder.model.tokenizer.Tokenizer`.
    tokenizer: Tokenizer
    model_id: str
    path: str
    #: The width of a forward pass's rows: the vectors' size, or 1 for a reranker (one logit a pair).
    dimension: int
    #: The most tokens the model reads: of a text, or of a reranker's whole pair.
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
    #: "embedding" (texts in, vectors out) or "reranker" (pairs in, one logit each: ``rerank.py``).
    kind: str = EMBEDDING
    #: A reranker's activation, as CrossEncoder.predict applies it (a torch.nn class name: Sigmoid...).
    activation: str = ""
    #: A reranker's pair template (``rerank.pair_template``), derived once at load.
    pair_template: PairTemplate | None = None

    def token_ids(self, texts: list[str], truncate: bool) -> list[list[int]]:
        """Token ids of each text with special tokens, truncated to the model's limit. Tokenized a
        chunk at a time (:func:`chunks`), each cut before the next is read: a request of long
        texts never holds all their tokens at once (256 texts of 16k characters are 2 M tokens, of
        which 64 k are kept), and one over the limit without ``truncate`` stops at its chunk."""
        out: list[list[int]] = []
        for begin, end in chunks(texts):
            try:
                out += self.wrap_ids(self.tokenizer.content_ids(texts[begin:end]), truncate)
            except TooManyTokens as exc:
                raise TooManyTokens(begin + exc.index, exc.tokens, exc.limit) from None
        return out

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

    def pair_ids(self, query: str, documents: list[str], truncate: bool,
                 max_tokens_per_doc: int | None = None) -> list[PairIds]:
        """Each document paired with the query, as the tokenizer encodes the pair (ids and type ids).
        The query is never cut: one that leaves no room for a document token raises QueryTooLong. A
        document is cut at its end to ``max_tokens_per_doc`` content tokens when given, then to the
        room the limit leaves; over that room without ``truncate`` it raises TooManyTokens (its
        index, the whole pair's tokens). For a short query the cut is transformers' "only_second",
        which is what CrossEncoder's "longest_first" does while the query is under half the room."""
        template = self.pair_template
        if template is None:
            raise TypeError(f"{self.model_id} is not a reranker")
        if max_tokens_per_doc is not None and max_tokens_per_doc < 1:
            raise ValueError(f"max_tokens_per_doc {max_tokens_per_doc}: at least 1")
        (query_ids,) = self.tokenizer.content_ids([query])
        fixed = template.special + len(query_ids)
        room = self.max_input_tokens - fixed
        if room < 1:
            raise QueryTooLong(fixed, self.max_input_tokens)
        out = []
        for begin, end in chunks(documents):  # as token_ids: each chunk cut before the next is read
            for index, ids in enumerate(self.tokenizer.content_ids(documents[begin:end]), begin):
                if max_tokens_per_doc is not None:
                    ids = ids[:max_tokens_per_doc]
                if len(ids) > room:
                    if not truncate:
                        raise TooManyTokens(index, fixed + len(ids), self.max_input_tokens)
                    ids = ids[:room]
                out.append(template.assemble(query_ids, ids, self.uses_token_type_ids))
        return out

    def activate(self, logits: np.ndarray) -> np.ndarray:
        """A reranker's scores (n,) float32 from its logits (n, 1) or (n,), as CrossEncoder.predict
        applies its activation."""
        if not self.activation:
            raise TypeError(f"{self.model_id} is not a reranker")
        return activate(self.activation, logits)
