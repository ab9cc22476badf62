"""Unit tests of the micro-batcher with a fake forward pass (fast; no model)."""

from __future__ import annotations

import concurrent.futures as cf
import random
import threading
import time

import numpy as np
import pytest

from embedder.batching import Batcher, BatcherUnavailable, Overloaded, TimedOut


class FakeForward:
    """Vector of a token-id list: [first id, length, sum]; records every batch it ran."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.batches: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch):
        self.gate.wait()
        self.batches.append(batch)
        time.sleep(self.delay)
        return np.array([[ids[0], len(ids), sum(ids)] for ids in batch], dtype=np.float32)


def expected(ids_list):
    return np.array([[ids[0], len(ids), sum(ids)] for ids in ids_list], dtype=np.float32)


def make(forward, **kw):
    limits = dict(dimension=3, max_batch_size=16, max_batch_tokens=256, max_queued_inputs=1000)
    limits.update(kw)
    batcher = Batcher(forward, **limits)
    batcher.start()
    return batcher


def test_lone_request_runs_at_once_and_gets_its_rows_in_order():
    forward = FakeForward()
    batcher = make(forward)
    ids = [[5, 1, 2], [7], [9, 9]]
    result = batcher.submit(ids, timeout=5)
    assert np.array_equal(result.vectors, expected(ids))
    assert len(forward.batches) == 1 and result.inference_seconds >= 0


def test_concurrent_requests_share_batches_and_get_their_own_vectors():
    forward = FakeForward(delay=0.01)
    batcher = make(forward)
    rng = random.Random(1)
    requests = [[[i * 100 + j] + [rng.randrange(1, 50)] * rng.randrange(0, 30) for j in range(rng.randrange(1, 5))]
                for i in range(200)]
    with cf.ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(lambda ids: batcher.submit(ids, timeout=30), requests))
    for ids, result in zip(requests, results):
        assert np.array_equal(result.vectors, expected(ids))
    assert len(forward.batches) < 200  # batched across requests
    for batch in forward.batches:
        assert len(batch) <= 16
        assert len(batch) * max(len(ids) for ids in batch) <= 256 or len(batch) == 1


def test_a_batch_is_grouped_by_length():
    forward = FakeForward()
    forward.gate.clear()  # hold the first batch so the rest queue up together
    batcher = make(forward, max_batch_tokens=64, max_batch_size=64)
    first = threading.Thread(target=batcher.submit, args=([[1]], 5))
    first.start()
    time.sleep(0.1)
    short, long = [[2]] * 8, [[3] * 30]
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(batcher.submit, short, 5), pool.submit(batcher.submit, long, 5)]
        time.sleep(0.1)
        forward.gate.set()
        results = [f.result() for f in futures]
    first.join()
    assert np.array_equal(results[0].vectors, expected(short))
    # 8 one-token inputs and one 30-token input: one pass would pad to 9 x 30 = 270 > 64 tokens.
    sizes = sorted(len(b) for b in forward.batches[1:])
    assert sizes == [1, 8]


def test_full_queue_is_refused():
    forward = FakeForward()
    forward.gate.clear()
    batcher = make(forward, max_queued_inputs=4)
    threading.Thread(target=batcher.submit, args=([[1]], 5), daemon=True).start()
    time.sleep(0.1)  # taken by the (held) batching thread
    threading.Thread(target=batcher.submit, args=([[1]] * 3, 5), daemon=True).start()
    time.sleep(0.1)
    with pytest.raises(Overloaded):
        batcher.submit([[1]] * 2, timeout=5)
    forward.gate.set()


def test_deadline_drops_the_queued_inputs():
    forward = FakeForward()
    forward.gate.clear()
    batcher = make(forward)
    threading.Thread(target=batcher.submit, args=([[1]], 5), daemon=True).start()
    time.sleep(0.1)
    with pytest.raises(TimedOut):
        batcher.submit([[2], [3]], timeout=0.2)
    assert batcher.queued == 0
    forward.gate.set()


def test_forward_error_fails_only_that_batch():
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return expected(batch)

    batcher = make(flaky)
    with pytest.raises(RuntimeError):
        batcher.submit([[1]], timeout=5)
    assert np.array_equal(batcher.submit([[4, 4]], timeout=5).vectors, expected([[4, 4]]))


def test_fail_all_releases_waiting_requests():
    forward = FakeForward()
    forward.gate.clear()
    batcher = make(forward)
    with cf.ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(batcher.submit, [[i]], 30) for i in range(3)]
        time.sleep(0.2)
        batcher.fail_all("hung")
        for future in futures:
            with pytest.raises(BatcherUnavailable):
                future.result(timeout=5)
    with pytest.raises(BatcherUnavailable):
        batcher.submit([[1]], timeout=1)
    assert not batcher.running()
    forward.gate.set()
