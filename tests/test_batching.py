"""Unit tests of the micro-batcher with a fake forward pass (fast; no model).

No test sleeps to wait for another thread: the fake forward pass signals with events when a pass
begins and holds passes behind a gate, and "N inputs are queued" is a bounded wait on
``batcher.queued``. Teardown opens every gate and fails every batcher, so a failing test leaves
no request or batching thread blocked.
"""

from __future__ import annotations

import concurrent.futures as cf
import random
import threading
import time

import numpy as np
import pytest

from embedder.batching import Batcher
from embedder.errors import Overloaded, TimedOut, Unavailable

#: Longest any test waits for another thread; only reached when a test is failing.
WAIT = 5.0


class FakeForward:
    """Vector of a token-id list: [first id, length, sum]; records every batch it ran.

    ``entered`` is set when a forward pass begins; a pass waits for ``gate`` (open unless
    ``held``) before computing; ``delay`` makes each pass slow, as a real model is.
    """

    def __init__(self, delay: float = 0.0, held: bool = False):
        self.delay = delay
        self.batches: list[list[list[int]]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not held:
            self.gate.set()

    def __call__(self, batch):
        self.batches.append([list(ids) for ids in batch])
        self.entered.set()
        if not self.gate.wait(2 * WAIT):  # backstop: teardown opens the gate anyway
            raise RuntimeError("test gate never opened")
        if self.delay:
            time.sleep(self.delay)  # a slow forward pass inside the batching thread, not a wait
        return expected(batch)


def expected(ids_list):
    return np.array([[ids[0], len(ids), sum(ids)] for ids in ids_list], dtype=np.float32)


def wait_until(predicate, what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting until {what}")
        tick.wait(0.005)


def in_thread(fn, *args) -> cf.Future:
    """Run ``fn(*args)`` in a daemon thread; its outcome lands in the returned future."""
    future: cf.Future = cf.Future()

    def run():
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the test through the future
            future.set_exception(exc)

    threading.Thread(target=run, name="test-submit", daemon=True).start()
    return future


@pytest.fixture
def make():
    """Build and start batchers; at teardown open every fake's gate and fail every batcher."""
    made: list[tuple[object, Batcher]] = []

    def build(forward, **kw) -> Batcher:
        limits = dict(dimension=3, max_batch_size=16, max_batch_tokens=256, max_queued_inputs=1000)
        limits.update(kw)
        batcher = Batcher(forward, **limits)
        made.append((forward, batcher))
        batcher.start()
        return batcher

    yield build
    for forward, batcher in made:
        if isinstance(forward, FakeForward):
            forward.gate.set()
        batcher.fail_all("test over")


def test_lone_request_runs_at_once_and_gets_its_rows_in_order(make):
    forward = FakeForward()
    batcher = make(forward)
    ids = [[5, 1, 2], [7], [9, 9]]
    result = batcher.submit(ids, timeout=WAIT)
    assert np.array_equal(result.vectors, expected(ids))
    assert len(forward.batches) == 1 and result.inference_seconds >= 0


def test_concurrent_requests_share_batches_and_get_their_own_vectors(make):
    forward = FakeForward(delay=0.002, held=True)  # hold the first pass so a crowd queues up
    batcher = make(forward)
    rng = random.Random(1)
    requests = [[[i * 100 + j] + [rng.randrange(1, 50)] * rng.randrange(0, 30) for j in range(rng.randrange(1, 5))]
                for i in range(200)]
    with cf.ThreadPoolExecutor(max_workers=64) as pool:
        try:
            futures = [pool.submit(batcher.submit, ids, 30) for ids in requests]
            assert forward.entered.wait(WAIT), "no forward pass began"
            wait_until(lambda: batcher.queued >= 32, "32 inputs are queued behind the held pass")
        finally:
            forward.gate.set()
        results = [future.result(timeout=30) for future in futures]
    for ids, result in zip(requests, results):
        assert np.array_equal(result.vectors, expected(ids))
    # Batched across requests: some pass ran inputs of more than one request (id // 100).
    assert len(forward.batches) < 200
    assert any(len({ids[0] // 100 for ids in batch}) > 1 for batch in forward.batches)
    for batch in forward.batches:
        assert len(batch) <= 16
        assert len(batch) * max(len(ids) for ids in batch) <= 256 or len(batch) == 1


def test_a_batch_is_grouped_by_length(make):
    forward = FakeForward(held=True)  # hold the first pass so the rest queue up together
    batcher = make(forward, max_batch_tokens=64, max_batch_size=64)
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    short, long = [[2]] * 8, [[3] * 30]
    # The long input is queued first, so only sorting by length puts the short ones together.
    long_future = in_thread(batcher.submit, long, WAIT)
    wait_until(lambda: batcher.queued == 1, "the long input is queued")
    short_future = in_thread(batcher.submit, short, WAIT)
    wait_until(lambda: batcher.queued == 9, "the short and long inputs are queued")
    assert batcher.queued == 9 and forward.batches == [[[1]]]
    forward.gate.set()
    assert np.array_equal(first.result(timeout=WAIT).vectors, expected([[1]]))
    assert np.array_equal(short_future.result(timeout=WAIT).vectors, expected(short))
    assert np.array_equal(long_future.result(timeout=WAIT).vectors, expected(long))
    # 8 one-token inputs and one 30-token input: one pass would pad to 9 x 30 = 270 > 64 tokens,
    # so the queued nine run as two passes, shortest first.
    assert forward.batches[1:] == [short, long]


def test_full_queue_is_refused(make):
    forward = FakeForward(held=True)
    batcher = make(forward, max_queued_inputs=4)
    running = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"  # taken by the held thread
    assert batcher.queued == 0
    waiting = in_thread(batcher.submit, [[1]] * 3, WAIT)
    wait_until(lambda: batcher.queued == 3, "3 inputs are queued")
    with pytest.raises(Overloaded):
        batcher.submit([[1]] * 2, timeout=1)  # 3 + 2 > 4
    assert batcher.queued == 3  # the refused request queued nothing
    forward.gate.set()
    assert np.array_equal(running.result(timeout=WAIT).vectors, expected([[1]]))
    assert np.array_equal(waiting.result(timeout=WAIT).vectors, expected([[1]] * 3))


def test_deadline_drops_the_queued_inputs(make):
    forward = FakeForward(held=True)
    batcher = make(forward)
    running = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    with pytest.raises(TimedOut):
        batcher.submit([[2], [3]], timeout=0.1)
    assert batcher.queued == 0
    forward.gate.set()
    assert np.array_equal(running.result(timeout=WAIT).vectors, expected([[1]]))
    # The dropped inputs never reach the model: the next pass runs only the next request.
    assert np.array_equal(batcher.submit([[4]], timeout=WAIT).vectors, expected([[4]]))
    assert forward.batches == [[[1]], [[4]]]


def test_forward_error_fails_only_that_batch(make):
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return expected(batch)

    batcher = make(flaky)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit([[1]], timeout=WAIT)
    assert np.array_equal(batcher.submit([[4, 4]], timeout=WAIT).vectors, expected([[4, 4]]))
    assert batcher.running()


def test_fail_all_releases_waiting_requests(make):
    forward = FakeForward(held=True)
    batcher = make(forward)
    # One request inside the held forward pass, two still queued: fail_all must release all.
    futures = [in_thread(batcher.submit, [[0]], 30)]
    assert forward.entered.wait(WAIT), "the first pass never began"
    futures += [in_thread(batcher.submit, [[i]], 30) for i in (1, 2)]
    wait_until(lambda: batcher.queued == 2, "2 inputs are queued")
    batcher.fail_all("hung")
    for future in futures:
        with pytest.raises(Unavailable, match="hung"):
            future.result(timeout=WAIT)
    assert batcher.queued == 0
    with pytest.raises(Unavailable):
        batcher.submit([[1]], timeout=1)
    assert not batcher.running()
