"""The ONNX Runtime backend's parts, without a server or the real model: pooling as
sentence-transformers does it, the export cache's files written atomically, and the Dockerfile
filling the cache with the export CLI. tests/integration/test_onnx_server.py has the real servers,
exports and the cache they share; tests/fast/test_config.py the backend's settings."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bench.harness.servers import ROOT
from embedder.backends import onnx_export as ox
from embedder.model import pooling

CLI = "embedder.backends.onnx_export"  # fills the cache ahead of time (the Dockerfile runs it)


# -- pooling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [*pooling.POOLING_MODES, ("cls", "mean", "max")])
def test_pooling_matches_sentence_transformers(mode):
    from sentence_transformers.sentence_transformer.modules import Pooling

    rng = np.random.default_rng(7)
    hidden = rng.normal(size=(4, 9, 16)).astype(np.float32)
    lengths = np.array([9, 1, 5, 3])
    mask = (np.arange(9)[None, :] < lengths[:, None]).astype(np.int64)
    hidden[mask == 0] = 100.0  # padding positions must not leak into any mode
    reference = Pooling(16, pooling_mode=mode)({"token_embeddings": torch.from_numpy(hidden),
                                                 "attention_mask": torch.from_numpy(mask)})
    ours = pooling.pool(hidden, mask, pooling.pooling_modes(Pooling(16, pooling_mode=mode)))
    assert ours.dtype == np.float32 and ours.shape == tuple(reference["sentence_embedding"].shape)
    np.testing.assert_allclose(ours, reference["sentence_embedding"].numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", pooling.POOLING_MODES)
def test_right_padding_pools_as_sentence_transformers_left_padding(mode):
    """The onnx backend pads right; sentence-transformers pads a decoder's (Qwen3's) inputs left. The
    same token vectors pool alike either way: last-token pooling picks each input's last real token."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    rng = np.random.default_rng(3)
    lengths = [6, 1, 4]
    tokens = [rng.normal(size=(n, 8)).astype(np.float32) for n in lengths]
    left = np.full((3, 6, 8), 50.0, dtype=np.float32)
    right = np.full((3, 6, 8), -50.0, dtype=np.float32)
    left_mask, right_mask = np.zeros((3, 6), dtype=np.int64), np.zeros((3, 6), dtype=np.int64)
    for i, vectors in enumerate(tokens):
        left[i, 6 - len(vectors):], left_mask[i, 6 - len(vectors):] = vectors, 1
        right[i, :len(vectors)], right_mask[i, :len(vectors)] = vectors, 1
    reference = Pooling(8, pooling_mode=mode)({"token_embeddings": torch.from_numpy(left),
                                                "attention_mask": torch.from_numpy(left_mask)})
    ours = pooling.pool(right, right_mask, (mode,))
    np.testing.assert_allclose(ours, reference["sentence_embedding"].numpy(), atol=1e-5, rtol=1e-5)
    if mode == "lasttoken":
        np.testing.assert_array_equal(ours, np.stack([v[-1] for v in tokens]))


# -- the export cache's files, written atomically --------------------------------------------
def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def fail(tmp):
        tmp.write_bytes(b"half a model")
        raise OSError("disk full")

    final = tmp_path / "onnx" / "m.onnx"
    with pytest.raises(OSError, match="disk full"):
        ox._atomic_write(final, fail)
    assert list(final.parent.iterdir()) == []
    ox._atomic_write(final, lambda tmp: tmp.write_bytes(b"whole"))
    assert [p.name for p in final.parent.iterdir()] == ["m.onnx"] and final.read_bytes() == b"whole"


def test_a_serving_form_is_written_whole_and_never_replaced(tmp_path):
    def write(tag):
        def fill(directory):
            (directory / ox.SERVING_DATA).write_text(tag)
            (directory / ox.SERVING_GRAPH).write_text(tag)
        return fill

    def fail(directory):
        (directory / ox.SERVING_DATA).write_text("half")
        raise RuntimeError("child failed")

    final = tmp_path / "onnx" / "m-serving"
    with pytest.raises(RuntimeError, match="child failed"):
        ox._atomic_dir(final, fail)
    assert list(final.parent.iterdir()) == []
    ox._atomic_dir(final, write("first"))
    ox._atomic_dir(final, write("second"))  # a racing master lost: the one already served stays
    assert (final / ox.SERVING_DATA).read_text() == (final / ox.SERVING_GRAPH).read_text() == "first"
    assert [p.name for p in final.parent.iterdir()] == ["m-serving"]
    assert oct(final.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- the Dockerfile ---------------------------------------------------------------------------------
def test_the_dockerfile_fills_the_cache_with_this_cli():
    assert f"RUN python -m {CLI}\n" in (ROOT / "deploy" / "Dockerfile").read_text()
