"""One worker's forward passes, one at a time, across every model's queue.

A worker runs one forward pass at a time (so workers x threads still equals the cores, whatever
the number of models). The scheduler's thread chooses each pass: the models with queued inputs
take turns, in a line like the one requests form inside a model's queue (``batching.py``): the
model at the front plans and runs its next pass, then goes to the back if it has more. So a burst
for one model cannot starve another, and a lone request for an idle model waits at most for the
pass in progress. Queue limits (inputs, tokens) are the worker's, over all its models.

:class:`Arrivals` counts the requests being tokenized (accepted, inputs not queued yet) and what
they were admitted with, so that admission, before tokenizing, sees them with what is queued.
(Waiting for them when a pass ends, to make the next pass bigger, was measured and left out: no
gain, see docs/benchmarks.md.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Overloaded


class Arrival:
    """One request's place among the arrivals: the inputs and estimated tokens it was admitted with,
    held until its inputs are queued (its queue's submit releases it) or it gives up."""

    __slots__ = ("arrivals", "inputs", "tokens")

    def __init__(self, arrivals: Arrivals, inputs: int, tokens: int):
        self.arrivals, self.inputs, self.tokens = arrivals, inputs, tokens

    def release(self) -> None:
        """Give back what it holds, once (lock held)."""
        arrivals = self.arrivals
        if arrivals is not None:
            arrivals.inputs -= self.inputs
            arrivals.tokens -= self.tokens
            self.arrivals = None


class Arrivals:
    """Requests of this worker whose inputs are being tokenized: accepted, not queued yet. Each
    holds the inputs and tokens it was admitted with, an estimate made before tokenizing, so a
    full worker refuses a request before it spends time and memory on its text."""

    def __init__(self, scheduler: Scheduler):
        self._scheduler = scheduler
        #: What the requests being tokenized were admitted with (inputs, estimated tokens).
        self.inputs = 0
        self.tokens = 0

    @contextmanager
    def pending(self, inputs: int, tokens: int) -> Iterator[Arrival]:
        """Admit a request of ``inputs`` inputs of about ``tokens`` tokens (Overloaded when, with
        what is queued and arriving, they would take the worker past its queue limits; a request
        alone is always admitted) and hold them until its :class:`Arrival` is released."""
        cond = self._scheduler.cond
        with cond:
            self._scheduler.admit(inputs, tokens, estimate=True)
            self.inputs += inputs
            self.tokens += tokens
        arrival = Arrival(self, inputs, tokens)
        try:
            yield arrival
        finally:
            with cond:
                arrival.release()


class Scheduler:
    def __init__(self, max_queued_inputs: int, max_queued_tokens: int):
        self.max_queued_inputs = max_queued_inputs
        self.max_queued_tokens = max_queued_tokens
        #: The one lock of the worker's queues (each model's queue waits on it too).
        self.cond = threading.Condition()
        #: Requests being tokenized: admitted, their inputs not queued yet.
        self.arrivals = Arrivals(self)
        #: Every model's queue, in the order they were registered.
        self.queues: list = []
        #: Queues with inputs waiting, in turn order (not the one whose pass runs now).
        self._line: deque = deque()
        self._current = None
        #: Inputs and tokens queued over all models (what the worker's limits count).
        self.queued_inputs = 0
        self.queued_tokens = 0
        #: perf_counter() when the current forward pass began, None while idle.
        self.busy_since: float | None = None
        #: Items of the pass being run now (so a hung pass can be failed from outside).
        self.running_items: list = []
        #: Set once the worker is given up on; every later submit fails at once.
        self.broken: str | None = None
        self._thread: threading.Thread | None = None

    def register(self, queue) -> None:
        self.queues.append(queue)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduling thread (in the worker, after fork)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="embedder-batcher", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self.broken is None and self._thread is not None and self._thread.is_alive()

    def stalled_for(self) -> float:
        """Seconds the current forward pass has been running (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.perf_counter() - since

    def fail_all(self, reason: str) -> None:
        """Give up: fail every waiting request of every model now rather than let it hang."""
        with self.cond:
            self.broken = reason
            for queue in self.queues:
                queue.fail_queued(reason, self.running_items)
            self._line.clear()
            self.queued_inputs = self.queued_tokens = 0

    # -- the queues' side (called with the lock held) ------------------------------------------------
    def admit(self, inputs: int, tokens: int, estimate: bool = False) -> None:
        """Overloaded when ``inputs`` more inputs of ``tokens`` tokens would take the worker past
        its queue limits; always admitted when nothing is held (lock held). What is queued counts;
        with ``estimate`` (before tokenizing) the requests being tokenized count too."""
        held_inputs, held_tokens, where, about = self.queued_inputs, self.queued_tokens, "queued", ""
        if estimate:
            held_inputs += self.arrivals.inputs
            held_tokens += self.arrivals.tokens
            where, about = "queued or being tokenized", "about "
        if not held_inputs:
            return
        if held_inputs + inputs > self.max_queued_inputs:
            raise Overloaded(f"server busy: {held_inputs} inputs already {where} in this worker; retry shortly")
        if held_tokens + tokens > self.max_queued_tokens:
            raise Overloaded(f"server busy: {about}{held_tokens} tokens already {where} in this worker, "
                             f"{about}{tokens} more with this request; retry shortly")

    def wake(self, queue) -> None:
        """``queue`` has inputs waiting: put it in line if it is not (the queue whose pass runs
        now joins the line when its pass ends, behind whoever came meanwhile), and wake the thread."""
        if not queue.in_line and queue is not self._current:
            queue.in_line = True
            self._line.append(queue)
        self.cond.notify()

    def others_seconds(self, queue, passes: int) -> float:
        """By their cost models, how long the other models' turns delay ``passes`` passes of
        ``queue``: each of its passes waits for at most one pass of each other busy model."""
        others = [other for other in self.queues if other is not queue and other.has_work()]
        return sum(min(other.queued_seconds(), passes * other.pass_seconds()) for other in others)

    # -- the thread ----------------------------------------------------------------------------------
    def _next(self):
        """The queue whose turn it is and its planned pass (called with the lock held)."""
        line = self._line
        while True:
            while line and not line[0].has_work():  # its requests left (timed out, gone)
                line.popleft().in_line = False
            if line:
                break
            self.cond.wait()
        queue = line.popleft()
        queue.in_line = False
        self._current = queue
        return queue, queue.plan()

    def _run(self) -> None:
        while True:
            with self.cond:
                queue, items = self._next()
                self.running_items = items
            queue.run(items, self)
            with self.cond:
                self.running_items = []
                self._current = None
                if queue.has_work() and not queue.in_line:  # to the back: the others' turns first
                    queue.in_line = True
                    self._line.append(queue)
