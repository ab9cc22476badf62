"""The worker's scheduler across models' queues (fast; fake forward passes, no model).

Several models in one worker share one scheduling thread: one forward pass at a time, the models
with queued inputs taking turns. These tests hold the first pass behind a gate, queue work for
the models, open the gate and read the order in which passes ran.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

import numpy as np
import pytest

from embedder.core.batch_plan import CostModel, OnlineCost
from embedder.core.batching import Batcher
from embedder.core.errors import Overloaded, Unavailable
from embedder.core.scheduler import Scheduler

WAIT = 5.0


class Log:
    """Forward passes of every model, in the order they ran; the first one held until ``gate``."""

    def __init__(self):
        self.passes: list[tuple[str, int]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def forward(self, name: str):
        def run(batch):
            self.passes.append((name, len(batch)))
            self.entered.set()
            if not self.gate.wait(2 * WAIT):
                raise RuntimeError("test gate never opened")
            return np.array([[len(ids), sum(ids)] for ids in batch], dtype=np.float32)
        return run


@pytest.fixture()
def world():
    """A scheduler with models "a" and "b" (4 inputs per pass at most), started; torn down open."""
    log = Log()
    scheduler = Scheduler(max_queued_inputs=1000, max_queued_tokens=100_000)
    pinned = CostModel(fixed=1.0, per_token=0.01)
    queues = {name: Batcher(log.forward(name), dimension=2, max_batch_size=4, max_batch_tokens=1024,
                            max_queued_inputs=1000, max_queued_tokens=100_000, scheduler=scheduler,
                            cost=OnlineCost(model=pinned, refit_every=0), model=f"test-{name}")
              for name in ("a", "b")}
    scheduler.start()
    pool = cf.ThreadPoolExecutor(max_workers=64)
    yield log, scheduler, queues, pool
    log.gate.set()
    scheduler.fail_all("test over")
    pool.shutdown(wait=True)


def _queued(scheduler: Scheduler, inputs: int) -> None:
    deadline = threading.Event()
    for _ in range(500):
        if scheduler.queued_inputs >= inputs:
            return
        deadline.wait(0.01)
    raise AssertionError(f"{scheduler.queued_inputs} inputs queued, expected {inputs}")


def test_a_lone_request_for_an_idle_model_waits_only_for_the_pass_in_progress(world):
    log, scheduler, queues, pool = world
    first = pool.submit(queues["a"].submit, [[1, 2]], WAIT)
    assert log.entered.wait(WAIT)
    burst = [pool.submit(queues["a"].submit, [[i, 2]], WAIT) for i in range(40)]  # 10 passes of 4
    _queued(scheduler, 40)
    lone = pool.submit(queues["b"].submit, [[7, 7, 7]], WAIT)
    _queued(scheduler, 41)
    log.gate.set()
    assert lone.result(WAIT).vectors.tolist() == [[3, 21]]
    for future in [first, *burst]:
        future.result(WAIT)
    assert log.passes[:3] == [("a", 1), ("b", 1), ("a", 4)]  # b's pass right after the one in progress


def test_models_with_work_take_turns(world):
    log, scheduler, queues, pool = world
    first = pool.submit(queues["a"].submit, [[1]], WAIT)
    assert log.entered.wait(WAIT)
    futures = [pool.submit(queues[name].submit, [[i]], WAIT) for i in range(12) for name in ("a", "b")]
    _queued(scheduler, 24)
    log.gate.set()
    for future in [first, *futures]:
        future.result(WAIT)
    names = [name for name, _ in log.passes[1:]]
    # 12 of each in passes of 4, alternating; a, whose pass ran, goes behind b.
    assert names == ["b", "a"] * 3, log.passes


def test_a_request_of_many_inputs_shares_turns_with_the_other_model(world):
    log, scheduler, queues, pool = world
    first = pool.submit(queues["b"].submit, [[1]], WAIT)
    assert log.entered.wait(WAIT)
    many = pool.submit(queues["b"].submit, [[i] for i in range(20)], WAIT)
    _queued(scheduler, 20)
    singles = [pool.submit(queues["a"].submit, [[i]], WAIT) for i in range(2)]
    _queued(scheduler, 22)
    log.gate.set()
    assert len(many.result(WAIT).vectors) == 20
    for future in [first, *singles]:
        future.result(WAIT)
    assert log.passes[1:3] == [("a", 2), ("b", 4)]  # b's pass ran: a's turn comes first


def test_queue_limits_are_the_workers_over_all_models(world):
    log, scheduler, queues, pool = world
    scheduler.max_queued_inputs = 10
    first = pool.submit(queues["a"].submit, [[1]], WAIT)
    assert log.entered.wait(WAIT)
    held = pool.submit(queues["a"].submit, [[i] for i in range(8)], WAIT)
    _queued(scheduler, 8)
    with pytest.raises(Overloaded, match="inputs already queued"):
        queues["b"].submit([[1], [2], [3]], WAIT)
    assert queues["b"].submit  # a request that fits is taken
    fits = pool.submit(queues["b"].submit, [[1], [2]], WAIT)
    log.gate.set()
    for future in (first, held, fits):
        future.result(WAIT)


def test_admission_counts_the_other_models_turns(world):
    log, scheduler, queues, pool = world
    slow = CostModel(fixed=400.0, per_token=0.0)  # 0.4 s a pass, by the model
    queues["a"].cost = OnlineCost(model=slow, refit_every=0)
    first = pool.submit(queues["a"].submit, [[1]], WAIT)
    assert log.entered.wait(WAIT)
    held = pool.submit(queues["a"].submit, [[i] for i in range(40)], WAIT)  # 10 passes: 4 s queued
    _queued(scheduler, 40)
    # b's own pass is cheap, but each of its passes waits for one of a's (0.25 s at most, the cap
    # on a pass of several inputs): 3 passes of b cannot finish within 0.5 s.
    with pytest.raises(Overloaded, match="deadline"):
        queues["b"].submit([[i] for i in range(12)], 0.5)
    log.gate.set()
    for future in (first, held):
        future.result(WAIT)


def test_failing_the_worker_fails_every_models_requests(world):
    log, scheduler, queues, pool = world
    first = pool.submit(queues["a"].submit, [[1]], WAIT)
    assert log.entered.wait(WAIT)
    waiting = [pool.submit(queues[name].submit, [[2]], WAIT) for name in ("a", "b")]
    _queued(scheduler, 2)
    scheduler.fail_all("hung")
    for future in [first, *waiting]:
        with pytest.raises(Unavailable, match="hung"):
            future.result(WAIT)
    with pytest.raises(Unavailable):
        queues["b"].submit([[3]], WAIT)


def test_a_request_is_refused_by_its_estimate_before_it_is_tokenized(world):
    log, scheduler, queues, pool = world
    with scheduler.arrivals.pending(1, 10**9):  # alone: always admitted, whatever its estimate
        assert scheduler.arrivals.tokens == 10**9
    assert scheduler.arrivals.inputs == scheduler.arrivals.tokens == 0
    first = pool.submit(queues["a"].submit, [[1]], WAIT)
    assert log.entered.wait(WAIT)
    queued = pool.submit(queues["a"].submit, [[2, 3]], WAIT)
    _queued(scheduler, 1)
    with pytest.raises(Overloaded, match="tokens already queued or being tokenized"):
        with scheduler.arrivals.pending(1, scheduler.max_queued_tokens):
            raise AssertionError("admitted past the worker's token limit")
    with scheduler.arrivals.pending(1, 100):  # a small one is admitted, and holds its estimate
        with pytest.raises(Overloaded, match="inputs already queued or being tokenized"):
            def other():
                with scheduler.arrivals.pending(scheduler.max_queued_inputs - 1, 1):
                    pass
            pool.submit(other).result(WAIT)
    assert scheduler.arrivals.inputs == scheduler.arrivals.tokens == 0
    log.gate.set()
    first.result(WAIT)
    queued.result(WAIT)
