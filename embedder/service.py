"""One worker's embedding service: tokenize, queue for the batcher, post-process the vectors.

Built in the Gunicorn master with the loaded model; :meth:`EmbeddingService.start_worker` runs in
each worker after fork (threads, batching thread, warm-up), never in the master.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from metrics import definitions as m

from .batching import Batcher, BatcherUnavailable, Overloaded, TimedOut
from .config import Settings
from .errors import ApiError
from .model import InputTooLong
from .validation import EmbedRequest

log = logging.getLogger("embedder.service")

WARMUP_TEXT = "this is a test"


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
        self.batcher = Batcher(backend.forward, dimension=model.dimension,
                               max_batch_size=settings.max_batch_size,
                               max_batch_tokens=settings.max_batch_tokens,
                               max_queued_inputs=settings.max_queued_inputs)
        self.ready = False
        self.started_pid: int | None = None
        #: Token ids of GET /'s sentence, tokenized once.
        self.warmup_ids = model.token_ids([WARMUP_TEXT], truncate=True)
        self.workers = settings.default_workers()
        self.torch_threads = settings.threads_for(self.workers)

    def start_worker(self, workers: int | None = None, on_failure=None) -> None:
        """In a worker after fork: size threads, warm up, start batching, then report ready.

        ``on_failure`` is called once if the batching thread dies or hangs (Gunicorn passes a
        callback that makes the worker exit, so the master replaces it).
        """
        if self.started_pid == os.getpid():
            return
        if workers:
            self.workers = workers
        self.torch_threads = self.settings.threads_for(self.workers)
        began = time.perf_counter()
        self.backend.start(self.torch_threads)
        for _ in range(2):  # straight to the backend: warm-up is not traffic, so not in the metrics
            self.backend.forward(self.warmup_ids)
        self.batcher.start()
        self.started_pid = os.getpid()
        self.ready = True
        threading.Thread(target=self._watch, args=(on_failure,), name="embedder-watchdog",
                         daemon=True).start()
        m.WORKERS.set(1)
        m.MODEL_INFO.labels(self.model.model_id, self.backend.name, str(self.model.dimension)).set(1)
        for reason in m.FAILURE_REASONS:  # zero series, so rate() and alerts see them from the start
            m.FAILURES.labels(reason)
        log.info("worker %d ready: %d torch threads, warm-up %.0f ms", os.getpid(),
                 self.torch_threads, (time.perf_counter() - began) * 1000)

    def healthy(self) -> bool:
        return (self.ready and self.batcher.running()
                and self.batcher.stalled_for() < self.settings.stall_timeout)

    def _watch(self, on_failure) -> None:
        """Turn a dead or hung batching thread into failed requests and a worker restart."""
        while True:
            time.sleep(min(1.0, self.settings.stall_timeout / 4))
            if self.healthy():
                continue
            reason = ("batching thread died" if self.batcher.broken is None and not self.batcher.running()
                      else f"forward pass running for over {self.settings.stall_timeout:g} s")
            log.error("worker %d unhealthy: %s; failing its requests and exiting", os.getpid(), reason)
            self.ready = False
            m.WORKERS.set(0)
            self.batcher.fail_all(reason)
            if on_failure is not None:
                on_failure()
            return

    def info(self) -> dict:
        from . import __version__

        return {
            "model_id": self.model.model_id,
            "dimension": self.model.dimension,
            "max_input_tokens": self.model.max_input_tokens,
            "normalized_by_model": self.model.ends_with_normalize,
            "prompts": sorted(self.model.prompts),
            "backend": self.backend.name,
            "workers": self.workers,
            "torch_threads_per_worker": self.torch_threads,
            "pid": os.getpid(),
            "max_batch_size": self.settings.max_batch_size,
            "max_batch_tokens": self.settings.max_batch_tokens,
            "max_queued_inputs": self.settings.max_queued_inputs,
            "max_inputs": self.settings.max_inputs,
            "max_input_chars": self.settings.max_input_chars,
            "max_body_bytes": self.settings.max_body_bytes,
            "request_timeout": self.settings.request_timeout,
            "version": __version__,
        }

    def embed(self, request: EmbedRequest) -> Embeddings:
        began = time.perf_counter()
        try:
            if request.texts is not None:
                texts = request.texts
                if request.prompt_name:
                    prompt = self.model.prompts[request.prompt_name]
                    texts = [prompt + text for text in texts]
                ids = self.model.token_ids(texts, request.truncate)
            else:
                ids = self.model.wrap_ids(request.token_ids, request.truncate)
        except InputTooLong as exc:
            raise ApiError(422, f"'inputs[{exc.index}]' has {exc.tokens} tokens, more than the model's "
                           f"{exc.limit}; send truncate=true to cut it", param="inputs") from None
        tokenized = time.perf_counter()
        try:
            result = self.batcher.submit(ids, self.settings.request_timeout)
        except Overloaded as exc:
            raise ApiError(429, f"server busy: {exc}; retry shortly", "overloaded",
                           headers={"Retry-After": "1"}) from None
        except TimedOut as exc:
            raise ApiError(503, f"request timed out in the queue: {exc}", "timeout") from None
        except BatcherUnavailable as exc:
            raise ApiError(503, f"worker not ready: {exc}", "unavailable") from None
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
