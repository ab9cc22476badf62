"""Micro-batching inside one worker: request threads queue token ids, one thread runs the model.

Whenever the model is free the batching thread plans the next forward pass from what is queued,
across requests: it splits the oldest inputs by length into the passes that cost least by the
backend's measured cost model (``batch_plan.py``) and runs the one holding the oldest input. There
is no wait timer: a lone request pays one forward pass, a crowd shares batches of similar length.
Each request gets back exactly its own rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from metrics import definitions as m

from .batch_plan import OnlineCost, split
from .errors import ClientGone, Overloaded, TimedOut, Unavailable

log = logging.getLogger("embedder.batching")

#: How often (seconds) a waiting request asks whether its client is still there.
GONE_CHECK = 0.1
#: Longest a pass of more than one input may take by the cost model (ms): bounds how long a
#: request's many long inputs hold the model while a single sentence waits for its turn.
MAX_PASS_MS = 250.0


class _Signal:
    """A one-shot event for exactly one waiter: a lock held from birth, released once by ``set``.
    Cheaper than threading.Event (no Condition, no Python-level waiter list) on the batching
    thread's path, which wakes every request of every pass."""

    __slots__ = ("_lock", "_set")

    def __init__(self):
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:  # always called with the batcher's lock held: never twice at once
        if not self._set:
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        return self._lock.acquire(timeout=max(timeout, 0)) or self._set


class _Job:
    """One request's inputs and, once computed, its vectors."""

    __slots__ = ("vectors", "remaining", "done", "error", "enqueued", "queue_seconds",
                 "inference_seconds")

    def __init__(self, count: int, dimension: int):
        self.vectors = np.empty((count, dimension), dtype=np.float32)
        self.remaining = count
        self.done = _Signal()
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
                 max_batch_size: int, max_batch_tokens: int, max_queued_inputs: int,
                 cost: OnlineCost | None = None):
        self._forward = forward
        #: How the backend's pass time grows with inputs and length; the worker measures it.
        self.cost = cost or OnlineCost()
        #: How many of the oldest queued inputs each plan looks at (bounds the planning work).
        self.plan_window = 2 * max_batch_size
        self.dimension = dimension
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_queued_inputs = max_queued_inputs
        self._queue: deque[_Item] = deque()
        #: Tokens of the queued inputs (what admission estimates the queue's run time from).
        self._queued_tokens = 0
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
            self._queued_tokens = 0

    def stalled_for(self) -> float:
        """Seconds the current forward pass has been running (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.perf_counter() - since

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- request side ----------------------------------------------------------------------
    def submit(self, token_ids: list[list[int]], timeout: float,
               gone: Callable[[], bool] | None = None) -> Result:
        """Queue one request's inputs and wait for their raw vectors, in order.

        Refused (Overloaded) when the queue is full, or when the work queued ahead plus this
        request's would not finish within ``timeout`` by the cost model. While it waits,
        ``gone()`` (the client closed its connection?) is asked every :data:`GONE_CHECK` seconds;
        if so its queued inputs are dropped before they reach the model (ClientGone)."""
        if self.broken is not None:
            raise Unavailable(f"worker not serving: {self.broken}")
        if not self.running():
            raise Unavailable("worker not ready: the batching thread is not running")
        job = _Job(len(token_ids), self.dimension)
        items = [_Item(job, row, ids) for row, ids in enumerate(token_ids)]
        tokens = sum(len(ids) for ids in token_ids)
        with self._cond:
            if self.broken is not None:
                raise Unavailable(f"worker not serving: {self.broken}")
            if self._queue and len(self._queue) + len(items) > self.max_queued_inputs:
                raise Overloaded(f"server busy: {len(self._queue)} inputs already queued in this worker; "
                                 "retry shortly")
            if self._queue:
                ahead = self.estimated_seconds(len(self._queue) + len(items), self._queued_tokens + tokens)
                if ahead > timeout:
                    raise Overloaded(f"server busy: about {ahead:.1f} s of work queued in this worker "
                                     f"with this request, more than its {timeout:g} s deadline; retry later")
            self._queue.extend(items)
            self._queued_tokens += tokens
            m.QUEUED_INPUTS.inc(len(items))
            self._cond.notify()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if job.done.wait(min(left, GONE_CHECK) if gone is not None else left):
                break
            if time.monotonic() >= deadline:
                with self._cond:
                    if not job.done.is_set():
                        self._drop(job, "timeout")
                        raise TimedOut(f"request timed out in the queue: no result within {timeout:g} s")
                break
            if gone():
                with self._cond:
                    if not job.done.is_set():
                        self._drop(job, "client_gone")
                        raise ClientGone("the client closed its connection; its inputs were dropped")
                break
        if job.error is not None:
            raise job.error
        return Result(job.vectors, job.queue_seconds, job.inference_seconds)

    def estimated_seconds(self, inputs: int, tokens: int) -> float:
        """What the cost model says this many queued inputs and tokens take to run, in seconds."""
        cost = self.cost.model
        passes = -(-inputs // self.max_batch_size)
        mean = tokens / max(inputs, 1)
        return (passes * cost.fixed + tokens * (cost.per_token + cost.per_token_length * mean)) / 1000

    def _drop(self, job: _Job, reason: str) -> None:
        """Remove a timed-out or abandoned job's queued inputs (called with the lock held)."""
        kept = [item for item in self._queue if item.job is not job]
        dropped = len(self._queue) - len(kept)
        if dropped:
            self._queued_tokens -= sum(len(item.ids) for item in self._queue if item.job is job)
            self._queue.clear()
            self._queue.extend(kept)
            m.QUEUED_INPUTS.dec(dropped)
            m.DROPPED_INPUTS.labels(reason).inc(dropped)
        job.remaining = -1  # rows still in a running batch are ignored

    # -- batching thread -------------------------------------------------------------------------
    def _plan(self) -> list[_Item]:
        """The next forward pass (called with the lock held): split the oldest queued inputs (up
        to ``plan_window``) by length into the cheapest passes by the cost model, and take the pass
        that holds the oldest input. Its rows leave the queue; the rest wait for the next plan,
        which also sees what arrives meanwhile. The oldest input always goes next, so nothing
        starves, and a long input runs with inputs of its own length, not with the short ones."""
        window = [self._queue[i] for i in range(min(len(self._queue), self.plan_window))]
        order = sorted(range(len(window)), key=lambda i: len(window[i].ids))
        ends = split([len(window[i].ids) for i in order], self.cost.model,
                     self.max_batch_size, self.max_batch_tokens, MAX_PASS_MS)
        position = order.index(0)
        begin = 0
        for end in ends:
            if position < end:
                break
            begin = end
        chosen = set(order[begin:end])
        taken = [window[i] for i in order[begin:end]]
        rest = [item for i, item in enumerate(window) if i not in chosen]
        for _ in range(len(window)):
            self._queue.popleft()
        self._queue.extendleft(reversed(rest))
        self._queued_tokens -= sum(len(item.ids) for item in taken)
        m.QUEUED_INPUTS.dec(len(taken))
        m.PLAN_PASSES.observe(len(ends))
        return taken

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                items = self._plan()
                self._running = items
            started = time.perf_counter()
            for item in items:
                if item.job.remaining > 0:
                    item.job.queue_seconds = max(item.job.queue_seconds, started - item.job.enqueued)
                    m.QUEUE_SECONDS.observe(started - item.job.enqueued)
            self._run_chunk(items)
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
        longest = max(len(ids) for ids in batch)
        padded = longest * len(batch)
        if error is None:
            self.cost.observe(len(batch), longest, took)
        m.BATCH_SIZE.observe(len(batch))
        m.BATCH_TOKENS.observe(padded)
        m.BATCH_PADDING.observe(1 - sum(len(ids) for ids in batch) / padded)
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
