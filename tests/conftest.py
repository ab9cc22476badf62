"""Fixtures both tiers use. Two tiers: tests/fast/ (``make test-fast``: validation, routes, error
shapes, the batcher, settings, on the stand-in model of tests/support/fakes.py through Flask's test
client; no process started) and tests/integration/ (marked ``integration`` by its conftest.py): real
``gunicorn`` servers with the real model, Prometheus and the deploy validators, for what only
processes show. tests/support/ holds the helpers both import (it is on pytest's ``pythonpath``)."""

from __future__ import annotations

import os

import pytest

import full_tmpfs as tmpfs
import tiny_models as tiny
from bench.harness import stsb as stsb_data
from session_cache import onnx_cache

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def stsb():
    """(gold score, sentence1, sentence2) of the STS-B test split shipped in bench/data/."""
    return stsb_data.read_pairs()


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Every server a test starts exports into the session's cache, never the user's ~/.cache."""
    os.environ["EMBEDDER_CACHE_DIR"] = str(onnx_cache(tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_model_cache(tmp_path_factory) -> tiny.Cache:
    """Tiny random-weight models of common architectures (tests/support/tiny_models.py), each kind
    and set of options built once per session: ``tiny_model_cache.get("roberta", pooling="cls")``."""
    return tiny.Cache(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 4 MiB tmpfs, mounted and filled to the last block; yields (its path, the filler file).
    Root on Linux only, else the test skips (tests/support/full_tmpfs.py)."""
    yield from tmpfs.mounted(tmp_path)
