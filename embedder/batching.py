"""Micro-batching inside one worker: request threads queue token ids, one thread runs the model.

Whenever the model is free the batching thread takes what is queued (oldest first, up to
``max_batch_size`` inputs and ``max_batch_tokens`` tokens), sorts it by length and runs it in
as few padded forward passes as the token budget allows. There is no wait timer: a lone request
pays one forward pass, a crowd shares batches. Each request gets back exactly its own rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from metrics import definitions as m

from .errors import Overloaded, TimedOut, Unavailable

log = logging.getLogger("embedder.batching")


class _Job:
    """One request's inputs and, once computed, its vectors."""

    __slots__ = ("vectors", "remaining", "done", "error", "enqueued", "queue_seconds",
                 "inference_seconds")

    def __init__(self, count: int, dimension: int):
        self.vectors = np.empty((count, dimension), dtype=np.float32)
        self.remaining = count
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.enqueued = time.perf_counter()
        self.queue_seconds = 0.0
        self.inference_seconds = 0.0


class _Item:
    __slots__ = ("job", "row", "ids")

    def __init__(self, job: _Job, row: int, ids: list[int]):
        self.job, self.row, self.ids = job, row, ids


class Result:
    """Raw vectors of one request plus where its time went."""

    __slots__ = ("vectors", "queue_seconds", "inference_seconds")

    def __init__(self, vectors, queue_seconds, inference_seconds):
        self.vectors, self.queue_seconds, self.inference_seconds = vectors, queue_seconds, inference_seconds


class Batcher:
    def __init__(self, forward: Callable[[list[list[int]]], np.ndarray], *, dimension: int,
                 max_batch_size: int, max_batch_tokens: int, max_queued_inputs: int):
        self._forward = forward
        self.dimension = dimension
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_queued_inputs = max_queued_inputs
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        #: perf_counter() when the current forward pass began, None while idle.
        self.busy_since: float | None = None
        #: Jobs of the batch being run now (so a hung pass can be failed from outside).
        self._running: list[_Item] = []
        #: Set once the batcher is given up on; every later submit fails at once.
        self.broken: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the batching thread (in the worker, after fork)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="embedder-batcher", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self.broken is None and self._thread is not None and self._thread.is_alive()

    def fail_all(self, reason: str) -> None:
        """Give up: fail every waiting request now rather than let it hang (watchdog)."""
        with self._cond:
            self.broken = reason
            error = Unavailable(f"worker not serving: {reason}")
            for item in [*self._running, *self._queue]:
                if item.job.remaining > 0:
                    item.job.error, item.job.remaining = error, 0
                    item.job.done.set()
            m.QUEUED_INPUTS.dec(len(self._queue))
            self._queue.clear()

    def stalled_for(self) -> float:
        """Seconds the current forward pass has been running (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.perf_counter() - since

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- request side ----------------------------------------------------------------------
    def submit(self, token_ids: list[list[int]], timeout: float) -> Result:
        """Queue one request's inputs and wait for their raw vectors, in order."""
        if self.broken is not None:
            raise Unavailable(f"worker not serving: {self.broken}")
        if not self.running():
            raise Unavailable("worker not ready: the batching thread is not running")
        job = _Job(len(token_ids), self.dimension)
        items = [_Item(job, row, ids) for row, ids in enumerate(token_ids)]
        with self._cond:
            if self.broken is not None:
                raise Unavailable(f"worker not serving: {self.broken}")
            if self._queue and len(self._queue) + len(items) > self.max_queued_inputs:
                raise Overloaded(f"server busy: {len(self._queue)} inputs already queued in this worker; "
                                 "retry shortly")
            self._queue.extend(items)
            m.QUEUED_INPUTS.inc(len(items))
            self._cond.notify()
        if not job.done.wait(timeout):
            with self._cond:
                if not job.done.is_set():
                    self._drop(job)
                    raise TimedOut(f"request timed out in the queue: no result within {timeout:g} s")
        if job.error is not None:
            raise job.error
        return Result(job.vectors, job.queue_seconds, job.inference_seconds)

    def _drop(self, job: _Job) -> None:
        """Remove a timed-out job's queued inputs (called with the lock held)."""
        kept = [item for item in self._queue if item.job is not job]
        dropped = len(self._queue) - len(kept)
        if dropped:
            self._queue.clear()
            self._queue.extend(kept)
            m.QUEUED_INPUTS.dec(dropped)
        job.remaining = -1  # rows still in a running batch are ignored

    # -- batching thread -------------------------------------------------------------------
    def _take(self) -> list[_Item]:
        """Oldest queued inputs within the batch limits (called with the lock held)."""
        taken: list[_Item] = []
        tokens = 0
        while self._queue and len(taken) < self.max_batch_size:
            size = len(self._queue[0].ids)
            if taken and tokens + size > self.max_batch_tokens:
                break
            taken.append(self._queue.popleft())
            tokens += size
        m.QUEUED_INPUTS.dec(len(taken))
        return taken

    def _chunks(self, items: list[_Item]) -> list[list[_Item]]:
        """Group by length so padding stays within the token budget."""
        items.sort(key=lambda item: len(item.ids))
        chunks: list[list[_Item]] = [[]]
        for item in items:
            chunk = chunks[-1]
            if chunk and (len(chunk) + 1) * len(item.ids) > self.max_batch_tokens:
                chunks.append([item])
            else:
                chunk.append(item)
        return chunks

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                items = self._take()
                self._running = items
            started = time.perf_counter()
            for item in items:
                if item.job.remaining > 0:
                    item.job.queue_seconds = max(item.job.queue_seconds, started - item.job.enqueued)
                    m.QUEUE_SECONDS.observe(started - item.job.enqueued)
            for chunk in self._chunks(items):
                self._run_chunk(chunk)
            with self._cond:
                self._running = []

    def _run_chunk(self, chunk: list[_Item]) -> None:
        batch = [item.ids for item in chunk]
        self.busy_since = began = time.perf_counter()
        try:
            vectors = self._forward(batch)
            error = None
        except Exception as exc:  # the model failed: fail these requests, keep serving
            log.exception("forward pass failed for a batch of %d", len(batch))
            vectors, error = None, exc
        finally:
            self.busy_since = None
        took = time.perf_counter() - began
        m.BATCH_SIZE.observe(len(batch))
        m.BATCH_TOKENS.observe(max(len(ids) for ids in batch) * len(batch))
        m.FORWARD_SECONDS.observe(took)
        with self._cond:
            for job in {item.job for item in chunk}:
                job.inference_seconds += took
            for row, item in enumerate(chunk):
                job = item.job
                if job.remaining <= 0:
                    continue  # timed out or already failed
                if error is not None:
                    job.error, job.remaining = error, 0
                    job.done.set()
                    continue
                job.vectors[item.row] = vectors[row]
                job.remaining -= 1
                if job.remaining == 0:
                    job.done.set()
