"""What every backend shares: padding a batch of token-id lists (base.pad)."""

from __future__ import annotations

import numpy as np

from embedder.backends.base import pad


def test_pad_right_pads_to_the_longest_with_the_pad_id_and_masks_the_padding():
    input_ids, mask = pad([[101, 7, 102], [101, 102], [101, 5, 6, 9, 102]], pad_id=3)
    assert input_ids.dtype == mask.dtype == np.int64 and input_ids.shape == mask.shape == (3, 5)
    assert input_ids.tolist() == [[101, 7, 102, 3, 3], [101, 102, 3, 3, 3], [101, 5, 6, 9, 102]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_pad_keeps_an_equal_length_batch_unpadded():
    input_ids, mask = pad(((1, 2), (3, 4)), pad_id=0)  # any sequences of ints, not only lists
    assert input_ids.tolist() == [[1, 2], [3, 4]] and mask.all()
