"""A real server serves a hub model id from a Hugging Face cache made on disk (offline, as
huggingface_hub lays it out: tests/support/hub_cache.py), with the bundled model's vectors; and
with the model not in the cache the master refuses to start, saying how to fetch it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests

from bench.harness.servers import Gunicorn
from hub_cache import COMMIT, add_snapshot

pytestmark = pytest.mark.integration
TOL = 1e-5


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hf-hub")
    add_snapshot(cache, "org/name")
    return cache


@pytest.fixture(scope="module")
def sentences(stsb):
    return [s for _, s1, s2 in stsb[:10] for s in (s1, s2)]


def test_a_hub_id_is_served_from_the_cache(hub_cache, reference_model, sentences, tmp_path):
    # Its own ONNX cache: the session's must hold only the default model's export (test_onnx_server).
    env = {"EMBEDDER_MODEL": "org/name", "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1",
           "EMBEDDER_CACHE_DIR": str(tmp_path / "embedder-cache")}
    with Gunicorn(workers=1, env=env) as srv:
        info = requests.get(srv.url + "/info", timeout=30).json()
        r = requests.post(srv.url + "/embed", json={"inputs": sentences}, timeout=60)
        log = srv.log()
    assert info["model_id"] == "org/name"
    assert r.status_code == 200, r.text
    got = np.array(r.json(), dtype=np.float32)
    expected = reference_model.encode(sentences, normalize_embeddings=True)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < TOL
    assert f"hub model org/name at revision main (commit {COMMIT})" in log


def test_a_hub_id_not_in_the_cache_stops_the_server(tmp_path):
    env = {"EMBEDDER_MODEL": "org/name", "EMBEDDER_REVISION": "v2", "HF_HUB_CACHE": str(tmp_path),
           "HF_HUB_OFFLINE": "1"}
    srv = Gunicorn(workers=1, env=env)
    try:
        with pytest.raises(RuntimeError, match="gunicorn exited with"):
            srv.start(timeout=120)
        assert srv.proc.returncode not in (0, None)
        assert ("embedder cannot start: model org/name (revision v2) is not in the Hugging Face cache "
                f"{tmp_path}, and HF_HUB_OFFLINE is set, so it is not downloaded. To fetch it, run "
                "`hf download org/name --revision v2` with HF_HUB_OFFLINE unset") in srv.log()
        assert "Traceback" not in srv.log()
    finally:
        srv.stop(timeout=10)
        Path(srv._log.name).unlink(missing_ok=True)
