"""A reranker (a cross-encoder) in a worker: scores each document against a query.

Each query-document pair is one input to the model's queue, batched by length with other
requests' pairs like embedding inputs, so a request of many documents shares the model's turns
like any other. The score is what sentence-transformers' ``CrossEncoder.predict`` gives: the
model's logit through its activation (``raw`` leaves the activation out). Documents are cut,
never the query (``model.pair_ids``). Ordering, ``top_n`` and returning texts are here too, so the
three HTTP shapes (TEI, Jina/Cohere v1, Cohere v2) rank the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..model.errors import QueryTooLong as QueryTooLongForModel
from ..model.errors import TooManyTokens
from .errors import InputTooLong, QueryTooLong
from .service import WARMUP_TEXT, ModelService, estimated_tokens


@dataclass
class RerankRequest:
    """One rerank request, whichever API it came in, after validation."""

    query: str
    documents: list[str]
    truncate: bool = True
    #: Cut each document to this many tokens first (Cohere's ``max_tokens_per_doc``).
    max_tokens_per_doc: int | None = None
    #: The model's logits, without the activation sentence-transformers applies.
    raw_scores: bool = False
    #: Keep only the best ``top_n`` (all when None).
    top_n: int | None = None


@dataclass
class Ranking:
    """Documents by descending score (ties in input order): their indexes and scores."""

    order: list[int]
    scores: list[float]
    tokens: int
    tokenize_seconds: float
    queue_seconds: float
    inference_seconds: float


class RerankService(ModelService):
    kind = "reranker"

    def warmup_batch(self) -> list:
        return self.model.pair_ids(WARMUP_TEXT, [WARMUP_TEXT], True)

    def probe_row(self, length: int) -> list:
        """A pair of about ``length`` tokens: the warm-up query and a document of repeated words,
        cut to the content tokens that make up that length."""
        overhead = len(self.model.pair_ids(WARMUP_TEXT, ["test"], True, max_tokens_per_doc=1)[0]) - 1
        document = " ".join(["test"] * length)
        return self.model.pair_ids(WARMUP_TEXT, [document], True,
                                   max_tokens_per_doc=max(1, length - overhead))[0]

    def rerank(self, request: RerankRequest, gone=None) -> Ranking:
        """The documents ranked by their score against the query. Raises InputTooLong (a document,
        when truncation is off), QueryTooLong, Overloaded, TimedOut, Unavailable or ClientGone."""
        began = time.perf_counter()
        # As an embedding request: admitted by its characters before tokenizing (embedder.core.service).
        limit, query = self.model.max_input_tokens, len(request.query)
        special = self.model.pair_template.special
        estimate = sum(min(estimated_tokens(query + len(document)) + special, limit)
                       for document in request.documents)
        with self.batcher.scheduler.arrivals.pending(len(request.documents), estimate) as arrival:
            try:
                pairs = self.model.pair_ids(request.query, request.documents, request.truncate,
                                            request.max_tokens_per_doc)
            except TooManyTokens as exc:
                raise InputTooLong(exc.index, exc.tokens, exc.limit) from None
            except QueryTooLongForModel as exc:
                raise QueryTooLong(exc.tokens, exc.limit) from None
            tokenized = time.perf_counter()
            result = self.batcher.submit(pairs, self.settings.request_timeout, gone, arrival)
        logits = result.vectors[:, 0]
        scores = logits if request.raw_scores else self.model.activate(logits)
        scores = np.asarray(scores, dtype=np.float32)
        order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # stable: ties keep input order
        if request.top_n is not None:
            order = order[: request.top_n]
        tokens = self._counted(pairs)
        return Ranking(order, scores.astype(float).tolist(), tokens, tokenized - began,
                       result.queue_seconds, result.inference_seconds)
