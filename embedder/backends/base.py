"""What every inference backend is, and the padding they all share.

A backend is built in the Gunicorn master from the loaded model (weights only, never run there)
and started in each worker after fork, where it sizes its thread pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Backend(Protocol):
    #: The label /info, metrics and the benchmark report: ``torch``, ``onnx`` or ``onnx-int8``.
    name: str

    def start(self, threads: int) -> None:
        """In a worker, after fork: set up intra-op ``threads`` (never call it in the master)."""

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled float32 vectors (inputs x dimension) of token-id lists, special tokens included,
        before any final Normalize (the service normalizes when asked). For a reranker the lists
        are ``rerank.PairIds`` and the rows its raw logits (pairs x 1), before the activation."""


def pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token-id lists to the longest: (input_ids, attention_mask), both int64."""
    longest = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), longest), dtype=np.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask


def pad_type_ids(batch: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """Each pair's token type ids (``rerank.PairIds.type_ids``), right-padded with 0 to ``width``;
    zeros for a row without them (a single text is all segment 0)."""
    types = np.zeros((len(batch), width), dtype=np.int64)
    for row, ids in enumerate(batch):
        found = getattr(ids, "type_ids", None)
        if found:
            types[row, : len(found)] = found
    return types
