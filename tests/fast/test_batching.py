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

from embedder.core.batch_plan import PROBE_SHAPES, CostModel, OnlineCost, probe, split
from embedder.core.batching import Batcher
from embedder.core.errors import Overloaded, TimedOut, Unavailable

#: Longest any test waits for another thread; only reached when a test is failing.
WAIT = 5.0


class FakeForward:
    """Vector of a token-id list: [first id, length, sum]; records every batch it ran.

    ``entered`` is set when a forward pass begins; a pass waits for ``gate`` (open unless
    ``held``) before computing; ``delay`` makes each pass slow, as a real model is; pass number
    ``pause_at`` (1 = the first) also waits for ``resume``, so a test can look in between passes.
    """

    def __init__(self, delay: float = 0.0, held: bool = False, pause_at: int = 0):
        self.delay = delay
        self.pause_at = pause_at
        self.resume = threading.Event()
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
        if len(self.batches) == self.pause_at and not self.resume.wait(2 * WAIT):
            raise RuntimeError("paused pass never resumed")
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
        limits = dict(dimension=3, max_batch_size=16, max_batch_tokens=256, max_queued_inputs=1000,
                      max_queued_tokens=100_000)
        limits.update(kw)
        if isinstance(limits.get("cost"), CostModel):  # pinned: no refitting from the fake's timings
            limits["cost"] = OnlineCost(model=limits["cost"], refit_every=0)
        batcher = Batcher(forward, **limits)
        made.append((forward, batcher))
        batcher.start()
        return batcher

    yield build
    for forward, batcher in made:
        if isinstance(forward, FakeForward):
            forward.gate.set()
            forward.resume.set()
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


def test_queued_inputs_are_split_by_length_oldest_first(make):
    forward = FakeForward(held=True)  # hold the first pass so the rest queue up together
    # Padding costs more than a pass's fixed cost here, so inputs of different lengths part.
    batcher = make(forward, max_batch_size=64, cost=CostModel(fixed=1.0, per_token=1.0))
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    short, long = [[2]] * 8, [[3] * 30]
    # The long input is queued first, so it runs next (oldest first), alone; the short ones,
    # though queued after it, run together in the pass after, not padded to 30 tokens.
    long_future = in_thread(batcher.submit, long, WAIT)
    wait_until(lambda: batcher.queued == 1, "the long input is queued")
    short_future = in_thread(batcher.submit, short, WAIT)
    wait_until(lambda: batcher.queued == 9, "the short and long inputs are queued")
    assert batcher.queued == 9 and forward.batches == [[[1]]]
    forward.gate.set()
    assert np.array_equal(first.result(timeout=WAIT).vectors, expected([[1]]))
    assert np.array_equal(short_future.result(timeout=WAIT).vectors, expected(short))
    assert np.array_equal(long_future.result(timeout=WAIT).vectors, expected(long))
    assert forward.batches[1:] == [long, short]


def test_a_pass_costing_more_apart_runs_together(make):
    forward = FakeForward(held=True)
    # A large fixed cost per pass: padding 8 short inputs to 30 tokens is cheaper than 2 passes.
    batcher = make(forward, max_batch_size=64, max_batch_tokens=1024,
                   cost=CostModel(fixed=200.0, per_token=0.1))
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    long_future = in_thread(batcher.submit, [[3] * 30], WAIT)
    wait_until(lambda: batcher.queued == 1, "the long input is queued")
    short_future = in_thread(batcher.submit, [[2]] * 8, WAIT)
    wait_until(lambda: batcher.queued == 9, "all are queued")
    forward.gate.set()
    for future in (first, long_future, short_future):
        future.result(timeout=WAIT)
    assert len(forward.batches) == 2 and sorted(map(len, forward.batches[1])) == [1] * 8 + [30]


def test_the_token_budget_still_splits_a_pass(make):
    forward = FakeForward(held=True)
    batcher = make(forward, max_batch_size=64, max_batch_tokens=64,
                   cost=CostModel(fixed=100.0, per_token=0.001))
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    # 9 inputs of 10 tokens: 90 padded tokens > 64, however cheap one pass would be.
    future = in_thread(batcher.submit, [[2] * 10] * 9, WAIT)
    wait_until(lambda: batcher.queued == 9, "all are queued")
    forward.gate.set()
    first.result(timeout=WAIT)
    assert np.array_equal(future.result(timeout=WAIT).vectors, expected([[2] * 10] * 9))
    assert all(len(batch) * 10 <= 64 for batch in forward.batches[1:])
    assert sum(len(batch) for batch in forward.batches[1:]) == 9


def test_a_long_input_is_not_starved_by_a_stream_of_short_ones(make):
    forward = FakeForward(held=True)
    batcher = make(forward, max_batch_size=4, cost=CostModel(fixed=1.0, per_token=1.0))
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    shorts = [in_thread(batcher.submit, [[2]], WAIT) for _ in range(6)]
    wait_until(lambda: batcher.queued == 6, "six short inputs are queued")
    long_future = in_thread(batcher.submit, [[3] * 40], WAIT)
    wait_until(lambda: batcher.queued == 7, "the long input is queued behind them")
    later = [in_thread(batcher.submit, [[4]], WAIT) for _ in range(6)]
    wait_until(lambda: batcher.queued == 13, "more short inputs arrived after it")
    forward.gate.set()
    for future in [first, *shorts, long_future, *later]:
        future.result(timeout=WAIT)
    passes = [[ids[0] for ids in batch] for batch in forward.batches[1:]]
    long_pass = next(i for i, ids in enumerate(passes) if 3 in ids)
    # The six shorts queued before it need two passes of at most 4 (later shorts may fill their
    # room); the long one runs right after them, however many shorts keep arriving.
    assert long_pass == 2 and passes[long_pass] == [3]
    assert sum(ids.count(2) for ids in passes[:long_pass]) == 6


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


def test_a_request_over_the_queued_token_limit_is_refused(make):
    forward = FakeForward(held=True)
    batcher = make(forward, max_queued_tokens=10)
    running = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    waiting = in_thread(batcher.submit, [[2] * 3] * 2, WAIT)  # 6 tokens
    wait_until(lambda: batcher.queued == 2, "6 tokens are queued")
    with pytest.raises(Overloaded, match="6 tokens already queued"):
        batcher.submit([[3] * 5], timeout=1)  # 6 + 5 > 10, though only 3 inputs
    assert batcher.queued == 2  # the refused request queued nothing
    fits = in_thread(batcher.submit, [[4] * 4], WAIT)  # 6 + 4 = 10: admitted
    wait_until(lambda: batcher.queued == 3, "the request that fits is queued")
    forward.gate.set()
    for future, ids in ((running, [[1]]), (waiting, [[2] * 3] * 2), (fits, [[4] * 4])):
        assert np.array_equal(future.result(timeout=WAIT).vectors, expected(ids))
    # A lone request is admitted whatever its size.
    assert np.array_equal(batcher.submit([[5] * 20], timeout=WAIT).vectors, expected([[5] * 20]))


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


def test_a_single_sentence_does_not_wait_for_a_request_of_many_inputs(make):
    # Pass 5 pauses: the 256-input request needs 16 passes of 16, so it is still running then.
    forward = FakeForward(held=True, pause_at=5)
    batcher = make(forward, cost=CostModel(fixed=1.0, per_token=1.0))
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    many = [[2, row] + [0] * 8 for row in range(256)]
    big = in_thread(batcher.submit, many, WAIT)
    wait_until(lambda: batcher.queued == 256, "the 256 inputs are queued")
    single = in_thread(batcher.submit, [[3, 3]], WAIT)
    wait_until(lambda: batcher.queued == 257, "the single sentence is queued behind them")
    forward.gate.set()
    assert np.array_equal(single.result(timeout=WAIT).vectors, expected([[3, 3]]))
    assert not big.done()  # answered while the big request still has passes to go
    passes = [{ids[0] for ids in batch} for batch in forward.batches[1:]]
    assert passes.index({3}) <= 1  # in the next pass or the one after
    forward.resume.set()
    assert np.array_equal(big.result(timeout=WAIT).vectors, expected(many))  # rows in order
    first.result(timeout=WAIT)


def test_requests_of_many_inputs_take_turns(make):
    forward = FakeForward(held=True)
    # Padding costs more than a pass here, so inputs of different lengths never share a pass.
    batcher = make(forward, max_batch_size=4, cost=CostModel(fixed=1.0, per_token=1.0))
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    requests = {tag: [[tag, row] + [0] * tag for row in range(8)] for tag in (10, 20, 30)}
    futures = {}
    for tag, ids in requests.items():
        futures[tag] = in_thread(batcher.submit, ids, WAIT)
        wait_until(lambda: batcher.queued == 8 * len(futures), f"request {tag} is queued")
    forward.gate.set()
    for tag, ids in requests.items():
        assert np.array_equal(futures[tag].result(timeout=WAIT).vectors, expected(ids))  # in order
    first.result(timeout=WAIT)
    owners = [{ids[0] for ids in batch} for batch in forward.batches[1:]]
    # Oldest first, each request one pass in turn, rather than all of 10's passes first.
    assert owners[:6] == [{10}, {20}, {30}] * 2
    assert sum(map(len, forward.batches[1:])) == 24


def test_requests_of_one_length_share_passes_in_turn(make):
    forward = FakeForward(held=True)
    batcher = make(forward, max_batch_size=4)
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    a, b = [[2, row] for row in range(8)], [[3, row] for row in range(8)]
    fa = in_thread(batcher.submit, a, WAIT)
    wait_until(lambda: batcher.queued == 8, "the first request is queued")
    fb = in_thread(batcher.submit, b, WAIT)
    wait_until(lambda: batcher.queued == 16, "both are queued")
    forward.gate.set()
    assert np.array_equal(fa.result(timeout=WAIT).vectors, expected(a))
    assert np.array_equal(fb.result(timeout=WAIT).vectors, expected(b))
    first.result(timeout=WAIT)
    # Every pass holds both requests' next inputs, each in its own row order.
    assert forward.batches[1:] == [[a[i], b[i], a[i + 1], b[i + 1]] for i in range(0, 8, 2)]


def test_a_request_that_leaves_midway_drops_only_its_queued_rest(make):
    from embedder.core.errors import ClientGone

    forward = FakeForward(held=True, pause_at=3)
    batcher = make(forward, cost=CostModel(fixed=1.0, per_token=1.0))
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    left = threading.Event()
    leaving = in_thread(batcher.submit, [[2, row] for row in range(64)], WAIT, left.is_set)
    wait_until(lambda: batcher.queued == 64, "its 64 inputs are queued")
    staying = in_thread(batcher.submit, [[3, row] for row in range(20)], WAIT, lambda: False)
    wait_until(lambda: batcher.queued == 84, "both are queued")
    forward.gate.set()
    wait_until(lambda: len(forward.batches) == 3, "two passes ran and a third began")
    left.set()  # the client hangs up while part of its inputs have run
    with pytest.raises(ClientGone):
        leaving.result(timeout=WAIT)
    forward.resume.set()
    assert np.array_equal(staying.result(timeout=WAIT).vectors, expected([[3, row] for row in range(20)]))
    first.result(timeout=WAIT)
    wait_until(lambda: batcher.queued == 0, "nothing is left queued")
    ran = sum(ids[0] == 2 for batch in forward.batches for ids in batch)
    assert 0 < ran < 64 and batcher.submit([[4]], timeout=WAIT).vectors.shape == (1, 3)


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


# -- the split and the cost model ------------------------------------------------------------------
def _cost_of(lengths, ends, cost):
    begin, total = 0, 0.0
    for end in ends:
        total += cost(end - begin, lengths[end - 1])
        begin = end
    return total


def _brute_force(lengths, cost, max_size, max_tokens, max_cost=float("inf")):
    """Cheapest split by trying every set of boundaries (small inputs only)."""
    import itertools

    count, best = len(lengths), None
    for cuts in itertools.product([False, True], repeat=count - 1):
        ends = [i + 1 for i, cut in enumerate(cuts) if cut] + [count]
        begin, fits = 0, True
        for end in ends:
            size = end - begin
            fits &= size <= max_size and (size == 1 or (size * lengths[end - 1] <= max_tokens
                                                        and cost(size, lengths[end - 1]) <= max_cost))
            begin = end
        if fits and (best is None or _cost_of(lengths, ends, cost) < best):
            best = _cost_of(lengths, ends, cost)
    return best


def test_split_is_the_cheapest_split():
    rng = random.Random(7)
    for _ in range(200):
        lengths = sorted(rng.choice([rng.randrange(5, 20), rng.randrange(20, 120)])
                         for _ in range(rng.randrange(1, 11)))
        cost = CostModel(rng.uniform(0, 20), rng.uniform(0.01, 1), rng.uniform(0, 0.01))
        max_size, max_tokens = rng.randrange(1, 12), rng.choice([64, 256, 10_000])
        max_cost = rng.choice([float("inf"), 50.0, 200.0])
        ends = split(lengths, cost, max_size, max_tokens, max_cost)
        assert ends[-1] == len(lengths) and ends == sorted(set(ends))
        assert _cost_of(lengths, ends, cost) == pytest.approx(
            _brute_force(lengths, cost, max_size, max_tokens, max_cost))


def test_split_keeps_one_length_together_and_parts_far_lengths():
    cost = CostModel(fixed=2.0, per_token=0.13, per_token_length=0.0005)
    assert split([12] * 32, cost, 64, 8192) == [32]
    assert split([10] * 8 + [120] * 2, cost, 64, 8192) == [8, 10]
    assert split([10] * 8 + [120] * 2, CostModel(fixed=1e6), 64, 8192) == [10]
    # A cost cap: 32 inputs of 256 tokens run in passes of at most 250 ms by the model.
    ends = split([256] * 32, cost, 64, 8192, max_cost=250.0)
    sizes = [b - a for a, b in zip([0, *ends], ends)]
    assert sum(sizes) == 32 and all(cost(n, 256) <= 250.0 for n in sizes) and len(sizes) > 1
    ends = split([10] * 8, cost, 3, 8192)  # at most 3 per pass: 3 passes, none bigger
    assert len(ends) == 3 and max(b - a for a, b in zip([0, *ends], ends)) == 3


def test_cost_model_fit_recovers_known_coefficients():
    truth = CostModel(fixed=1.5, per_token=0.12, per_token_length=0.0004)
    samples = [(n, length, truth(n, length)) for n, length in
               [(1, 8), (1, 32), (4, 16), (8, 64), (16, 32), (4, 128)]]
    fitted = CostModel.fit(samples)
    for key, value in truth.as_dict().items():
        assert fitted.as_dict()[key] == pytest.approx(value, rel=1e-6)


def test_cost_model_fit_never_goes_negative():
    # Noise that a straight fit would answer with a negative per-token cost.
    fitted = CostModel.fit([(1, 8, 5.0), (1, 32, 4.0), (16, 32, 4.5), (4, 128, 4.2)])
    assert min(fitted.as_dict().values()) >= 0
    assert fitted(16, 128) > fitted(1, 8) * 0 and fitted(1, 8) > 0


#: The dropped-inputs series of a batcher of no model name.
GONE = {"reason": "client_gone", "model": ""}


def test_probe_times_the_probe_shapes():
    seen = []
    samples = probe(lambda batch: seen.append((len(batch), len(batch[0]))),
                    lambda length: [101, *([7] * (length - 2)), 102], repeats=2)
    assert sorted(set(seen)) == sorted(set(PROBE_SHAPES)) and len(seen) == 2 * len(PROBE_SHAPES)
    assert [(n, length) for n, length, _ in samples] == list(PROBE_SHAPES)
    assert min(CostModel.fit(samples).as_dict().values()) >= 0


def test_online_cost_follows_the_passes_it_sees():
    start = CostModel(fixed=1.0, per_token=0.1, per_token_length=0.0)
    slower = CostModel(fixed=6.0, per_token=0.3, per_token_length=0.001)  # e.g. the machine got busy
    online = OnlineCost([(n, length, start(n, length)) for n, length in PROBE_SHAPES], refit_every=10)
    assert online.model.as_dict() == pytest.approx(start.as_dict(), abs=1e-6)
    rng = random.Random(3)
    for _ in range(2000):
        n, length = rng.randrange(1, 33), rng.randrange(8, 129)
        online.observe(n, length, slower(n, length) / 1000)
    assert online.model.as_dict() == pytest.approx(slower.as_dict(), rel=0.02)


def test_pinned_cost_never_refits():
    pinned = OnlineCost(model=CostModel(fixed=3.0), refit_every=0)
    for _ in range(100):
        pinned.observe(4, 16, 1.0)
    assert pinned.model == CostModel(fixed=3.0) and pinned.estimate.count == 0


def test_the_batcher_reports_padding_and_refits_from_its_passes(make):
    from prometheus_client import REGISTRY

    def sample(name):
        return REGISTRY.get_sample_value(name, {"model": ""}) or 0.0

    forward = FakeForward(held=True)
    cost = OnlineCost(model=CostModel(fixed=200.0, per_token=0.1), refit_every=2)
    batcher = make(forward, max_batch_size=64, max_batch_tokens=1024, cost=cost)
    padding, plans = sample("embedder_batch_padding_ratio_sum"), sample("embedder_batch_plan_passes_count")
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    mixed = in_thread(batcher.submit, [[2] * 10, [2] * 30], WAIT)
    wait_until(lambda: batcher.queued == 2, "both inputs are queued")
    forward.gate.set()
    first.result(timeout=WAIT)
    mixed.result(timeout=WAIT)
    # One pass of 10 and 30 tokens (one pass is cheap here): a third of its 60 slots are padding.
    assert forward.batches[1] == [[2] * 10, [2] * 30]
    assert sample("embedder_batch_padding_ratio_sum") - padding == pytest.approx(1 / 3)
    assert sample("embedder_batch_plan_passes_count") - plans == 2
    assert cost.estimate.count == 2 and cost.model != CostModel(fixed=200.0, per_token=0.1)


# -- admission by cost and clients that leave ---------------------------------------------------------
def test_a_client_that_leaves_has_its_inputs_dropped_before_the_model(make):
    from prometheus_client import REGISTRY

    from embedder.core.errors import ClientGone

    forward = FakeForward(held=True)
    batcher = make(forward)
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    left = threading.Event()
    dropped = REGISTRY.get_sample_value("embedder_dropped_inputs_total", GONE) or 0
    leaving = in_thread(batcher.submit, [[2] * 5] * 40, WAIT, left.is_set)
    staying = in_thread(batcher.submit, [[3]], WAIT, lambda: False)
    wait_until(lambda: batcher.queued == 41, "both requests are queued")
    left.set()  # the client hangs up while its 40 inputs wait
    with pytest.raises(ClientGone):
        leaving.result(timeout=WAIT)
    assert batcher.queued == 1
    assert REGISTRY.get_sample_value("embedder_dropped_inputs_total", GONE) - dropped == 40
    forward.gate.set()
    first.result(timeout=WAIT)
    assert np.array_equal(staying.result(timeout=WAIT).vectors, expected([[3]]))
    assert all(ids[0] != 2 for batch in forward.batches for ids in batch)  # never reached the model


def test_work_that_cannot_finish_before_the_deadline_is_refused(make):
    forward = FakeForward(held=True)
    # 1 ms per token: 600 queued tokens are 0.6 s of work, over a 0.5 s deadline.
    batcher = make(forward, cost=CostModel(fixed=0.0, per_token=1.0))
    first = in_thread(batcher.submit, [[1]], WAIT)
    assert forward.entered.wait(WAIT), "the first pass never began"
    waiting = in_thread(batcher.submit, [[2] * 100] * 4, WAIT)  # 400 tokens: 0.4 s, admitted
    wait_until(lambda: batcher.queued == 4, "the first 400 tokens are queued")
    with pytest.raises(Overloaded, match="more than its 0.5 s deadline"):
        batcher.submit([[3] * 100] * 4, timeout=0.5)  # 400 + 400 tokens by turns: 0.8 s > 0.5 s
    assert batcher.queued == 4 and batcher.estimated_seconds(4, 400) == pytest.approx(0.4)
    # Turns are by request: a single sentence waits for one input of the queued request, not all
    # four (0.11 s, not 0.41 s), so a 0.3 s deadline admits it.
    single = in_thread(batcher.submit, [[4] * 10], 0.3)
    wait_until(lambda: batcher.queued == 5, "the single sentence is admitted")
    forward.gate.set()
    assert np.array_equal(single.result(timeout=WAIT).vectors, expected([[4] * 10]))
    first.result(timeout=WAIT)
    waiting.result(timeout=WAIT)
    # An empty queue admits anything the other limits allow: a lone request is never refused.
    assert np.array_equal(batcher.submit([[3] * 100] * 8, timeout=0.5).vectors, expected([[3] * 100] * 8))
