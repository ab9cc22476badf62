"""One worker's embedding service: the core's entry point. It takes domain requests
(:class:`EmbedRequest`), tokenizes, queues for the batcher, post-processes the vectors, and raises
only the core's errors (``errors.py``); it knows nothing of HTTP or of any API's shapes (the HTTP
layer, ``embedder/http/``, turns requests into these and results into its answers).

Built in the Gunicorn master with the loaded model; :meth:`EmbeddingService.start_worker` runs in
each worker after fork (threads, batching thread, warm-up), never in the master.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from metrics import definitions as m

from ..config import Settings
from ..model.errors import TooManyTokens
from .batch_plan import OnlineCost, probe
from .batching import Batcher
from .errors import InputTooLong

log = logging.getLogger("embedder.service")

WARMUP_TEXT = "this is a test"


@dataclass
class EmbedRequest:
    """One embedding request, whichever API it came in, after validation."""

    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    normalize: bool = True
    truncate: bool = True
    dimensions: int | None = None
    prompt_name: str | None = None

    @property
    def count(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids)


@dataclass(frozen=True)
class Limits:
    """What a request may ask of this service: validation checks requests against it."""

    max_inputs: int
    max_input_chars: int
    dimension: int
    vocab_size: int
    max_input_tokens: int
    prompts: dict = field(default_factory=dict)


@dataclass
class Embeddings:
    vectors: np.ndarray
    tokens: int
    tokenize_seconds: float
    queue_seconds: float
    inference_seconds: float


class EmbeddingService:
    def __init__(self, settings: Settings, model, backend):
        self.settings = settings
        self.model = model
        self.backend = backend
        self.model_id: str = model.model_id
        self.limits = Limits(max_inputs=settings.max_inputs, max_input_chars=settings.max_input_chars,
                             dimension=model.dimension, vocab_size=model.vocab_size,
                             max_input_tokens=model.max_input_tokens, prompts=dict(model.prompts))
        #: When this server loaded its model (in the master, so every worker says the same).
        self.created = int(time.time())
        self.batcher = Batcher(backend.forward, dimension=model.dimension,
                               max_batch_size=settings.max_batch_size,
                               max_batch_tokens=settings.max_batch_tokens,
                               max_queued_inputs=settings.max_queued_inputs,
                               max_queued_tokens=settings.max_queued_tokens)
        self.ready = False
        self.started_pid: int | None = None
        #: Token ids of GET /'s sentence, tokenized once.
        self.warmup_ids = model.token_ids([WARMUP_TEXT], truncate=True)
        self.layout = settings.layout()

    def start_worker(self, workers: int | None = None, on_failure=None) -> None:
        """In a worker after fork: size threads, warm up, start batching, then report ready.

        ``workers`` is the count Gunicorn really runs. ``on_failure`` is called once if the
        batching thread dies or hangs (Gunicorn passes a callback that makes the worker exit, so
        the master replaces it).
        """
        if self.started_pid == os.getpid():
            return
        self.layout = self.settings.layout(workers)
        began = time.perf_counter()
        self.backend.start(self.layout.threads)
        for _ in range(2):  # straight to the backend: warm-up is not traffic, so not in the metrics
            self.backend.forward(self.warmup_ids)
        # How this backend's pass time grows with inputs and length, here, with these threads:
        # the batcher splits queued inputs by length with it.
        model = self.model
        self.batcher.cost = OnlineCost(probe(self.backend.forward, model.prefix_ids,
                                             self.warmup_ids[0][len(model.prefix_ids)], model.suffix_ids))
        self.batcher.start()
        self.started_pid = os.getpid()
        self.ready = True
        threading.Thread(target=self._watch, args=(on_failure,), name="embedder-watchdog",
                         daemon=True).start()
        m.WORKERS.set(1)
        m.MODEL_INFO.labels(self.model_id, self.backend.name, str(self.model.dimension)).set(1)
        for reason in m.FAILURE_REASONS:  # zero series, so rate() and alerts see them from the start
            m.FAILURES.labels(reason)
        for reason in m.DROP_REASONS:
            m.DROPPED_INPUTS.labels(reason)
        log.info("worker %d ready: %d threads, warm-up %.0f ms, pass cost (ms) %s", os.getpid(),
                 self.layout.threads, (time.perf_counter() - began) * 1000, self.batcher.cost.model.as_dict())

    def healthy(self) -> bool:
        return (self.ready and self.batcher.running()
                and self.batcher.stalled_for() < self.settings.stall_timeout)

    def _watch(self, on_failure) -> None:
        """Turn a dead or hung batching thread into failed requests and a worker restart."""
        while True:
            time.sleep(min(1.0, self.settings.stall_timeout / 4))
            if self.healthy():
                continue
            if self.batcher.broken is not None:
                reason = f"batcher given up: {self.batcher.broken}"
            elif not self.batcher.running():
                reason = "batching thread died"
            else:
                reason = f"forward pass running for over {self.settings.stall_timeout:g} s"
            log.error("worker %d unhealthy: %s; failing its requests and exiting", os.getpid(), reason)
            self.ready = False
            m.WORKERS.set(0)
            self.batcher.fail_all(reason)
            if on_failure is not None:
                on_failure()
            return

    def tokens(self, texts: list[str], add_special_tokens: bool,
               prompt_name: str | None) -> list[tuple[str, list[tuple[int, str, bool, int, int]]]]:
        """Every token of each text (prompt first, if named), untruncated: pairs of the text as
        tokenized and its tokens, ``(id, token, special, start, stop)`` with character offsets."""
        out = []
        for text in texts:
            if prompt_name:
                text = self.model.prompts[prompt_name] + text
            out.append((text, self.model.tokenizer.tokens(text, add_special_tokens)))
        return out

    def decode(self, ids: list[list[int]], skip_special_tokens: bool) -> list[str]:
        """The text of each list of token ids, as the tokenizer's decoder writes it."""
        return [self.model.tokenizer.decode(row, skip_special_tokens) for row in ids]

    def similarity(self, request: EmbedRequest, gone=None) -> tuple[list[float], Embeddings]:
        """The cosine similarity of the request's first text with each of the others, from one
        embedding request (same batching and limits)."""
        result = self.embed(EmbedRequest(texts=request.texts, truncate=request.truncate,
                                         prompt_name=request.prompt_name, normalize=True), gone)
        vectors = result.vectors
        return (vectors[1:] @ vectors[0]).astype(float).tolist(), result

    def embed(self, request: EmbedRequest, gone=None) -> Embeddings:
        """Vectors of a validated request, in input order. Raises InputTooLong, Overloaded,
        TimedOut, Unavailable or, when ``gone()`` says the client left while it waited,
        ClientGone (``errors.py``)."""
        began = time.perf_counter()
        texts = request.texts
        # A request that names no prompt gets the model's default, as sentence-transformers' encode does.
        prompt_name = request.prompt_name or self.model.default_prompt_name
        if texts is not None and prompt_name:
            prompt = self.model.prompts[prompt_name]
            texts = [prompt + text for text in texts]
        try:
            ids = (self.model.token_ids(texts, request.truncate) if texts is not None
                   else self.model.wrap_ids(request.token_ids, request.truncate))
        except TooManyTokens as exc:
            raise InputTooLong(exc.index, exc.tokens, exc.limit) from None
        tokenized = time.perf_counter()
        result = self.batcher.submit(ids, self.settings.request_timeout, gone)
        vectors = result.vectors
        if request.dimensions:
            vectors = vectors[:, : request.dimensions]
        if request.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        tokens = sum(len(row) for row in ids)
        m.INPUTS.inc(len(ids))
        m.INPUT_TOKENS.inc(tokens)
        return Embeddings(np.ascontiguousarray(vectors, dtype=np.float32), tokens,
                          tokenized - began, result.queue_seconds, result.inference_seconds)
