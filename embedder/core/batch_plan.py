"""How queued inputs become forward passes: a cost model of the backend and the cheapest split.

A forward pass pads every input to the longest one, so one pass over a mix of short and long
inputs pays the long length for every row. Splitting by length wastes less padding but pays each
pass's fixed cost again. Which wins depends on the backend and the machine, so each worker
times its backend at start (:func:`probe`), keeps refitting the model from its own passes
(:class:`OnlineCost`: under load a pass also pays for waiting on the GIL and on other processes),
and the batcher asks :func:`split` for the cheapest partition of what is queued, by that model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: (inputs, padded length) of the passes timed at worker start: small and large, short and long,
#: so the fit sees the fixed cost, the per-token cost and attention's growth with length.
PROBE_SHAPES = ((1, 8), (1, 32), (4, 16), (8, 64), (16, 32), (4, 128))


@dataclass(frozen=True)
class CostModel:
    """Milliseconds of one forward pass of ``n`` inputs padded to ``length`` tokens:
    ``fixed + n * length * (per_token + per_token_length * length)``."""

    fixed: float = 1.0
    per_token: float = 0.1
    #: Attention's share: each token also costs more the longer its sequence.
    per_token_length: float = 0.0

    def __call__(self, n: int, length: int) -> float:
        return self.fixed + n * length * (self.per_token + self.per_token_length * length)

    def as_dict(self) -> dict:
        return {key: round(value, 6) for key, value in asdict(self).items()}

    @classmethod
    def fit(cls, samples: Sequence[tuple[int, int, float]]) -> CostModel:
        """Least squares on relative error over (n, length, ms) samples; no coefficient below 0."""
        estimate = CostEstimate()
        for n, length, ms in samples:
            estimate.add(n, length, ms)
        return estimate.solve()



def probe(forward: Callable[[list[list[int]]], object], row: Callable[[int], list[int]],
          repeats: int = 3) -> list[tuple[int, int, float]]:
    """Time ``forward`` on :data:`PROBE_SHAPES`, best of ``repeats``: (n, length, ms) samples;
    ``row(length)`` is one input of about that many tokens, as the model's inputs are made.
    Runs in a worker, after fork and warm-up, before it serves."""
    samples = []
    for n, length in PROBE_SHAPES:
        batch = [row(length)] * n
        best = float("inf")
        for _ in range(repeats):
            began = time.perf_counter()
            forward(batch)
            best = min(best, time.perf_counter() - began)
        samples.append((n, len(batch[0]), best * 1000))
    return samples


class CostEstimate:
    """Running least squares for a :class:`CostModel`, from timed passes (normal equations, so each
    pass adds in constant time). ``decay`` below 1 forgets old passes, so the model follows the
    machine: under load a pass also pays for waiting on the GIL and on other processes' cores."""

    def __init__(self, decay: float = 1.0):
        self.decay = decay
        self.gram = np.zeros((3, 3))
        self.moment = np.zeros(3)
        self.count = 0

    def add(self, n: int, length: int, ms: float) -> None:
        tokens = n * length
        row = np.array([1.0, tokens, tokens * length]) / max(ms, 1e-6)  # relative error
        self.gram *= self.decay
        self.moment *= self.decay
        self.gram += np.outer(row, row)
        self.moment += row
        self.count += 1

    def solve(self) -> CostModel:
        keep = np.ones(3, dtype=bool)
        coef = np.zeros(3)
        while keep.any():  # drop the terms noise pushes below zero, then solve for the rest
            sub = np.linalg.lstsq(self.gram[np.ix_(keep, keep)], self.moment[keep], rcond=None)[0]
            if (sub >= 0).all():
                coef = np.zeros(3)
                coef[keep] = sub
                break
            keep[np.flatnonzero(keep)[sub < 0]] = False
        fixed, per_token, per_token_length = (float(c) for c in coef)
        if per_token <= 0 and per_token_length <= 0:  # nothing measurable: keep splits sane
            per_token = 1e-3
        # A pass always costs something; it also makes ties go to fewer passes.
        return CostModel(max(fixed, 1e-3), per_token, per_token_length)


class OnlineCost:
    """The cost model a worker plans with: fitted to the probe at start, then refitted every
    ``refit_every`` passes from its own timed passes (0: never, as tests pin a model)."""

    def __init__(self, samples: Sequence[tuple[int, int, float]] = (), *, model: CostModel | None = None,
                 decay: float = 0.995, refit_every: int = 50):
        self.estimate = CostEstimate(decay)
        for sample in samples:
            self.estimate.add(*sample)
        self.model = model or (self.estimate.solve() if samples else CostModel())
        self.refit_every = refit_every

    def observe(self, n: int, length: int, seconds: float) -> None:
        if not self.refit_every:
            return
        self.estimate.add(n, length, seconds * 1000)
        if self.estimate.count % self.refit_every == 0:
            self.model = self.estimate.solve()


def split(lengths: Sequence[int], cost: CostModel, max_size: int, max_tokens: int,
          max_cost: float = float("inf")) -> list[int]:
    """The cheapest way to run inputs of these lengths, sorted ascending, as consecutive passes.

    Returns the pass boundaries (end index of each pass, the last equal to ``len(lengths)``).
    A pass holds at most ``max_size`` inputs and, unless it holds one, at most ``max_tokens``
    padded tokens and at most ``max_cost`` ms by the model (so one request's many long inputs
    cannot hold the model for long while others wait: they run in several passes). Dynamic
    programming over the sorted lengths: a pass's cost is set by its last (longest) input, so the
    best split of the first ``j`` inputs ends with a pass ``i..j``.
    """
    count = len(lengths)
    best = [0.0] + [float("inf")] * count
    start = [0] * (count + 1)
    fixed, per_token, per_token_length = cost.fixed, cost.per_token, cost.per_token_length
    for j in range(1, count + 1):
        longest = lengths[j - 1]
        row_cost = longest * (per_token + per_token_length * longest)
        lowest = max(0, j - max_size)
        i = j - 1
        while i >= lowest:
            size = j - i
            if size > 1 and (size * longest > max_tokens or fixed + size * row_cost > max_cost):
                break
            total = best[i] + fixed + size * row_cost
            if total < best[j]:
                best[j], start[j] = total, i
            i -= 1
    ends = []
    j = count
    while j > 0:
        ends.append(j)
        j = start[j]
    return ends[::-1]
