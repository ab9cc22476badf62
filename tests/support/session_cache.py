"""The ONNX export cache of a pytest session (tests/conftest.py points EMBEDDER_CACHE_DIR at it)."""

from __future__ import annotations

from pathlib import Path


def onnx_cache(tmp_path_factory) -> Path:
    """One ONNX export cache for the whole pytest session, empty at its start (as in CI)."""
    path = tmp_path_factory.getbasetemp() / "embedder-cache"
    path.mkdir(exist_ok=True)
    return path
