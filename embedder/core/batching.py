"""Micro-batching inside one worker: request threads queue token ids in their model's queue (a
:class:`Batcher`), and the worker's one scheduling thread (``scheduler.py``) runs the passes.

When a model's turn comes its queue plans the next forward pass from what is queued, across
requests: it takes queued inputs round-robin by request (each request's next input in
turn), splits them by length into the passes that cost least by the backend's measured cost model
(``batch_plan.py``) and runs the one holding the input of the request whose turn it is; requests
served by that pass go to the back of the line. So a request of 256 inputs cannot hold the model
while a single sentence waits, and nothing starves. There is no wait timer: a lone request pays
one forward pass, a crowd shares batches of similar length. Each request gets back exactly its
own rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice

import numpy as np

from metrics import definitions as m

from .batch_plan import OnlineCost, split
from .errors import ClientGone, Overloaded, TimedOut, Unavailable
from .scheduler import Arrival, Scheduler

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

    __slots__ = ("batcher", "vectors", "remaining", "done", "error", "enqueued", "queue_seconds",
                 "inference_seconds", "pending", "mean_tokens")

    def __init__(self, batcher: Batcher, count: int, dimension: int):
        self.batcher = batcher
        self.vectors = np.empty((count, dimension), dtype=np.float32)
        self.remaining = count
        self.done = _Signal()
        self.error: BaseException | None = None
        self.enqueued = time.perf_counter()
        self.queue_seconds = 0.0
        self.inference_seconds = 0.0
        #: Its inputs still queued, in row order; non-empty exactly while the job is in the line.
        self.pending: list[_Item] = []
        self.mean_tokens = 0.0


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
    """One model's queue in a worker: admission, the line of its requests, and its pass plans.
    Its passes run on the worker's :class:`~.scheduler.Scheduler` (its own one if none is given:
    one model alone)."""

    def __init__(self, forward: Callable[[list[list[int]]], np.ndarray], *, dimension: int,
                 max_batch_size: int, max_batch_tokens: int, max_queued_inputs: int,
                 max_queued_tokens: int, cost: OnlineCost | None = None, scheduler: Scheduler | None = None,
                 model: str = ""):
        self._forward = forward
        #: How the backend's pass time grows with inputs and length; the worker measures it.
        self.cost = cost or OnlineCost()
        #: How many queued inputs each plan looks at (bounds the planning work).
        self.plan_window = 2 * max_batch_size
        self.dimension = dimension
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.scheduler = scheduler or Scheduler(max_queued_inputs, max_queued_tokens)
        self.scheduler.register(self)
        self._cond = self.scheduler.cond
        #: Requests with inputs queued, in turn order: the line each plan serves from its front.
        self._jobs: deque[_Job] = deque()
        self._queued_inputs = 0
        #: Tokens of the queued inputs (what admission counts and estimates run time from).
        self._queued_tokens = 0
        #: Whether this queue is in the scheduler's line of models (kept by the scheduler).
        self.in_line = False
        self._metrics = _Metrics(model)

    # -- lifecycle (the worker's scheduler) ------------------------------------------------------
    def start(self) -> None:
        """Start the worker's scheduling thread (in the worker, after fork)."""
        self.scheduler.start()

    def running(self) -> bool:
        return self.scheduler.running()

    @property
    def broken(self) -> str | None:
        return self.scheduler.broken

    @property
    def busy_since(self) -> float | None:
        return self.scheduler.busy_since

    def stalled_for(self) -> float:
        return self.scheduler.stalled_for()

    def fail_all(self, reason: str) -> None:
        """Give up: fail every waiting request (of every model of the worker) now (watchdog)."""
        self.scheduler.fail_all(reason)

    def fail_queued(self, reason: str, running: list) -> None:
        """The scheduler gives up: fail this queue's waiting requests and its rows in ``running``
        (called with the lock held)."""
        error = Unavailable(f"worker not serving: {reason}")
        for job in [*(item.job for item in running if item.job.batcher is self), *self._jobs]:
            job.pending = []
            if job.remaining > 0:
                job.error, job.remaining = error, 0
                job.done.set()
        self._metrics.queued.dec(self._queued_inputs)
        self._jobs.clear()
        self._queued_inputs = self._queued_tokens = 0

    @property
    def queued(self) -> int:
        """Inputs waiting for a forward pass."""
        return self._queued_inputs

    def has_work(self) -> bool:
        return bool(self._jobs)

    # -- request side ----------------------------------------------------------------------
    def submit(self, token_ids: list[list[int]], timeout: float,
               gone: Callable[[], bool] | None = None, arrival: Arrival | None = None) -> Result:
        """Queue one request's inputs and wait for their raw vectors, in order. ``arrival``, its
        admission before tokenizing (``scheduler.py``), is released as the inputs reach the queue.

        Refused (Overloaded) when the worker's queue is full (inputs or tokens, over all its
        models), or when the work queued ahead plus this request's would not finish within
        ``timeout`` by the cost models; a lone request is always admitted. While it waits,
        ``gone()`` (the client closed its connection?) is asked every :data:`GONE_CHECK` seconds;
        if so its queued inputs are dropped before they reach the model (ClientGone)."""
        scheduler = self.scheduler
        if scheduler.broken is not None:
            raise Unavailable(f"worker not serving: {scheduler.broken}")
        if not scheduler.running():
            raise Unavailable("worker not ready: the batching thread is not running")
        job = _Job(self, len(token_ids), self.dimension)
        if not token_ids:  # nothing to queue (an empty job would never leave the line)
            return Result(job.vectors, 0.0, 0.0)
        items = [_Item(job, row, ids) for row, ids in enumerate(token_ids)]
        tokens = sum(len(ids) for ids in token_ids)
        with self._cond:
            if scheduler.broken is not None:
                raise Unavailable(f"worker not serving: {scheduler.broken}")
            if arrival is not None:
                arrival.release()
            if scheduler.queued_inputs:
                scheduler.admit(len(items), tokens)
                ahead = self._seconds_until_done(len(items), tokens)
                if ahead > timeout:
                    raise Overloaded(f"server busy: about {ahead:.1f} s of work queued in this worker "
                                     f"with this request, more than its {timeout:g} s deadline; retry later")
            job.pending, job.mean_tokens = items, tokens / len(items)
            self._jobs.append(job)
            self._count(len(items), tokens)
            scheduler.wake(self)
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

    def _count(self, inputs: int, tokens: int) -> None:
        """Inputs and tokens joining (positive) or leaving (negative) the queue (lock held)."""
        self._queued_inputs += inputs
        self._queued_tokens += tokens
        self.scheduler.queued_inputs += inputs
        self.scheduler.queued_tokens += tokens
        self._metrics.queued.inc(inputs)

    def estimated_seconds(self, inputs: int, tokens: int) -> float:
        """What the cost model says this many queued inputs and tokens take to run, in seconds."""
        cost = self.cost.model
        passes = -(-inputs // self.max_batch_size)
        mean = tokens / max(inputs, 1)
        return (passes * cost.fixed + tokens * (cost.per_token + cost.per_token_length * mean)) / 1000

    def queued_seconds(self) -> float:
        """What the inputs queued now take to run, by the cost model (lock held)."""
        return self.estimated_seconds(self._queued_inputs, self._queued_tokens)

    def pass_seconds(self) -> float:
        """The longest one planned pass of several inputs may take, in seconds."""
        return MAX_PASS_MS / 1000

    def _seconds_until_done(self, inputs: int, tokens: int) -> float:
        """By the cost models, when a request of ``inputs`` inputs queued now would be done. Turns
        are by request, so it waits for at most ``inputs`` inputs of each request in line (a
        single sentence for one of each, not for all the work queued), each of its request's
        mean length; and each of its passes for at most one pass of each other model with work.
        Called with the lock held."""
        ahead_inputs, ahead_tokens = inputs, tokens
        for job in self._jobs:
            count = min(len(job.pending), inputs)
            ahead_inputs += count
            ahead_tokens += count * job.mean_tokens
        own = self.estimated_seconds(ahead_inputs, ahead_tokens)
        passes = -(-ahead_inputs // self.max_batch_size)
        return own + self.scheduler.others_seconds(self, passes)

    def _drop(self, job: _Job, reason: str) -> None:
        """Remove a timed-out or abandoned job's queued inputs (called with the lock held)."""
        dropped = len(job.pending)
        if dropped:
            self._jobs.remove(job)
            self._count(-dropped, -sum(len(item.ids) for item in job.pending))
            job.pending = []
            self._metrics.dropped[reason].inc(dropped)
        job.remaining = -1  # rows still in a running batch are ignored

    # -- batching thread -------------------------------------------------------------------------
    def plan(self) -> list[_Item]:
        """The next forward pass (called with the lock held).

        Fills a window of ``plan_window`` queued inputs round-robin over the line of requests
        (each one's next input in turn, then each one's second, ...), splits it by length into the
        cheapest passes by the cost model, and takes the pass holding the front request's next
        input. Requests that got rows go to the back of the line, so a request of many inputs
        gets a pass in turn with everyone else instead of holding the model, the front request
        always progresses (nothing starves), and a long input runs with inputs of its own length.
        The rest wait for the next plan, which also sees what arrives meanwhile."""
        jobs, limit = self._jobs, self.plan_window
        front = list(islice(jobs, limit))  # the requests the window reaches: a prefix of the line
        window = [job.pending[0] for job in front]
        # Requests with a next input for the next round (none when every request has one input).
        deep = [job for job in front if len(job.pending) > 1] if self._queued_inputs > len(jobs) else []
        multi, depth = bool(deep), 1
        while deep and len(window) < limit:
            window += [job.pending[depth] for job in deep[:limit - len(window)]]
            depth += 1
            deep = [job for job in deep if len(job.pending) > depth]
        order = sorted(range(len(window)), key=lambda i: len(window[i].ids))
        ends = split([len(window[i].ids) for i in order], self.cost.model,
                     self.max_batch_size, self.max_batch_tokens, MAX_PASS_MS)
        position = order.index(0)
        begin = 0
        for end in ends:
            if position < end:
                break
            begin = end
        taken = [window[i] for i in order[begin:end]]
        served = {item.job for item in taken}
        back = []  # served requests with inputs left: to the back of the line
        if multi:
            chosen = set(taken)
            for job in served:  # the taken rows leave its pending list; the rest keep their order
                pending = job.pending
                job.pending = [item for item in pending[:depth] if item not in chosen] + pending[depth:]
            back = [job for job in front if job in served and job.pending]
        else:  # the common case, one input per request: those served are done
            for job in served:
                job.pending = []
        if len(front) == len(jobs):
            jobs.clear()
        else:
            for _ in front:
                jobs.popleft()
        jobs.extendleft(reversed([job for job in front if job not in served]))  # keep their place
        jobs.extend(back)
        self._count(-len(taken), -sum(len(item.ids) for item in taken))
        self._metrics.plan_passes.observe(len(ends))
        return taken

    def run(self, items: list[_Item], scheduler: Scheduler) -> None:
        """Run one planned pass (on the scheduler's thread) and hand each request its rows."""
        started = time.perf_counter()
        metrics = self._metrics
        for item in items:
            if item.job.remaining > 0:
                item.job.queue_seconds = max(item.job.queue_seconds, started - item.job.enqueued)
                metrics.queue_seconds.observe(started - item.job.enqueued)
        self._run_chunk(items, scheduler)

    def _run_chunk(self, chunk: list[_Item], scheduler: Scheduler) -> None:
        batch = [item.ids for item in chunk]
        scheduler.busy_since = began = time.perf_counter()
        try:
            vectors = self._forward(batch)
            error = None
        except Exception as exc:  # the model failed: fail these requests, keep serving
            log.exception("forward pass failed for a batch of %d", len(batch))
            vectors, error = None, exc
        finally:
            scheduler.busy_since = None
        took = time.perf_counter() - began
        longest = max(len(ids) for ids in batch)
        padded = longest * len(batch)
        if error is None:
            self.cost.observe(len(batch), longest, took)
        metrics = self._metrics
        metrics.batch_size.observe(len(batch))
        metrics.batch_tokens.observe(padded)
        metrics.batch_padding.observe(1 - sum(len(ids) for ids in batch) / padded)
        metrics.forward_seconds.observe(took)
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


class _Metrics:
    """The batching metrics' series of one model, bound once (labels cost a lookup per use)."""

    def __init__(self, model: str):
        self.queued = m.QUEUED_INPUTS.labels(model)
        self.dropped = {reason: m.DROPPED_INPUTS.labels(reason, model) for reason in m.DROP_REASONS}
        self.plan_passes = m.PLAN_PASSES.labels(model)
        self.queue_seconds = m.QUEUE_SECONDS.labels(model)
        self.batch_size = m.BATCH_SIZE.labels(model)
        self.batch_tokens = m.BATCH_TOKENS.labels(model)
        self.batch_padding = m.BATCH_PADDING.labels(model)
        self.forward_seconds = m.FORWARD_SECONDS.labels(model)
