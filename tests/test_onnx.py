"""The ONNX Runtime backend: same vectors as torch over HTTP, pooling as sentence-transformers does
it, an export cache keyed by the weights, written atomically, and a shipped ONNX file preferred."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from bench.servers import ROOT, Gunicorn
from conftest import onnx_cache as cache_dir
from embedder.backends import onnx_backend as ob
from embedder.backends import onnx_export as ox
from embedder.config import Settings

CLI = "embedder.backends.onnx_export"  # fills the cache ahead of time (the Dockerfile runs it)

pytestmark = pytest.mark.integration
EVERY = 14  # every 14th STS-B pair: ~200 real sentences from all its genres


@pytest.fixture(scope="module")
def onnx_server(server):
    """The default server runs the onnx backend (its cache is conftest's onnx_cache)."""
    assert requests.get(server.url + "/info", timeout=10).json()["backend"] == "onnx"
    return server


@pytest.fixture(scope="module")
def loaded():
    from embedder.model import load_model

    return load_model(Settings())


def fp32_files(cache):
    return [f for f in (cache / "onnx").iterdir() if not f.name.endswith("-int8.onnx")]


def embed(server, texts, normalize):
    vectors = []
    for i in range(0, len(texts), 50):
        r = requests.post(server.url + "/embed", json={"inputs": texts[i:i + 50], "normalize": normalize},
                          timeout=120)
        assert r.status_code == 200, r.text
        vectors += r.json()
    return np.asarray(vectors, dtype=np.float32)


# -- over HTTP --------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [True, False])
def test_onnx_vectors_match_torch_over_http(torch_server, onnx_server, stsb, normalize):
    texts = sorted({s for _, a, b in stsb[::EVERY] for s in (a, b)})
    assert len(texts) >= 190
    ours, torchs = embed(onnx_server, texts, normalize), embed(torch_server, texts, normalize)
    assert ours.shape == torchs.shape == (len(texts), 384)
    assert np.abs(ours - torchs).max() < 1e-4
    if not normalize:  # raw pooled vectors, not unit length: the model's Normalize was left to us
        assert np.abs(np.linalg.norm(ours, axis=1) - 1).max() > 0.1


def test_info_and_metrics_report_the_backend(onnx_server):
    assert requests.get(onnx_server.url + "/info", timeout=10).json()["backend"] == "onnx"
    metrics = requests.get(onnx_server.url + "/metrics", timeout=10).text
    assert any(line.startswith("embedder_model_info{") and 'backend="onnx"' in line and line.endswith(" 1.0")
               for line in metrics.splitlines())


def test_master_exported_once_into_the_cache(onnx_server, tmp_path_factory):
    files = list((cache_dir(tmp_path_factory) / "onnx").iterdir())
    assert all(f.is_file() and f.suffix == ".onnx" for f in files), files  # no temporary leftovers
    assert len(fp32_files(cache_dir(tmp_path_factory))) == 1
    log = onnx_server.log()
    assert log.count("embedder.onnx: exported") + log.count("using cached ONNX export") == 1
    master = onnx_server.pid
    assert f"[{master}] [INFO] embedder.onnx" in log  # in the master, before fork


@pytest.mark.parametrize("quantize", ["", "int8"])
def test_cold_export_never_runs_the_model_in_the_master(tmp_path, quantize):
    """Exporting traces (runs) the model and quantizing imports onnxruntime (which starts a thread),
    so both happen in a child process: the master keeps a single thread (no pool started before
    fork), a worker with 2 threads answers, and it exits promptly on SIGTERM (an int8 worker forked
    from a master that had imported onnxruntime hung until graceful_timeout, 30 s, then aborted)."""
    env = {"EMBEDDER_CACHE_DIR": str(tmp_path), "EMBEDDER_THREADS": "2", "EMBEDDER_QUANTIZE": quantize}
    with Gunicorn(workers=1, env=env) as srv:
        log = srv.log()
        assert f"[{srv.pid}] [INFO] embedder.onnx: exported" in log, log
        if quantize:
            assert f"[{srv.pid}] [INFO] embedder.onnx: quantized" in log, log
        assert len(list(Path(f"/proc/{srv.pid}/task").iterdir())) == 1
        info = requests.get(srv.url + "/info", timeout=30).json()
        assert (info["backend"], info["threads_per_worker"]) == ("onnx-int8" if quantize else "onnx", 2)
        r = requests.post(srv.url + "/embed", json={"inputs": ["a sentence"] * 40}, timeout=60)
        assert r.status_code == 200 and len(r.json()) == 40
        assert srv.stop(timeout=20) == 0, srv.log()[-3000:]
        assert "SIGABRT" not in srv.log() and "terminate called" not in srv.log()


def test_building_the_backend_never_imports_onnxruntime(tmp_path_factory):
    """What the master does, in a fresh interpreter: load the model and build the float32 and int8
    backends (from the session's cache, exporting and quantizing in children if it is cold). Importing
    onnxruntime would start a thread that forked workers inherit without it (see the test above)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        from embedder.backends import create_backend
        from embedder.config import Settings
        from embedder.model import load_model

        model = load_model(Settings())
        names = [create_backend(Settings(quantize=q, cache_dir=sys.argv[1]), model).name for q in ("", "int8")]
        print(names, "onnxruntime" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script, str(cache_dir(tmp_path_factory))], cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['onnx', 'onnx-int8'] False", done.stdout


# -- in process -------------------------------------------------------------------------------------
def test_cache_is_reused_and_keyed_by_the_weights(onnx_server, loaded, tmp_path_factory):
    cache = cache_dir(tmp_path_factory)
    (cached,) = fp32_files(cache)
    stamp = cached.stat().st_mtime_ns
    assert ox.onnx_file(loaded, cache) == cached and cached.stat().st_mtime_ns == stamp
    key = ox.export_key(loaded)
    assert key[:20] in cached.name
    weight = loaded.st_model[0].auto_model.embeddings.word_embeddings.weight
    with torch.no_grad():
        weight[5, 0] += 0.01
        try:
            assert ox.export_key(loaded) != key
        finally:
            weight[5, 0] -= 0.01
    assert ox.export_key(loaded) == key


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


def test_shipped_onnx_file_is_used_instead_of_exporting(onnx_server, loaded, tmp_path, tmp_path_factory):
    import onnx

    from embedder.backends.torch_backend import TorchBackend

    (cached,) = fp32_files(cache_dir(tmp_path_factory))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for entry in os.scandir(loaded.path):
        (model_dir / entry.name).symlink_to(entry.path)
    (model_dir / "onnx").mkdir()
    # As large models ship theirs: the weights in a separate file next to the graph.
    onnx.save_model(onnx.load(str(cached)), str(model_dir / "onnx" / "model.onnx"),
                    save_as_external_data=True, location="model.onnx_data")
    shipped = dataclasses.replace(loaded, path=str(model_dir))
    empty_cache = tmp_path / "cache"
    backend = ob.OnnxBackend(shipped, empty_cache)
    assert backend.path == model_dir / "onnx" / "model.onnx"
    assert (model_dir / "onnx" / "model.onnx_data").is_file()
    assert not empty_cache.exists()
    with pytest.raises(RuntimeError, match="start"):
        backend.forward([[101, 102]])
    backend.start(1)
    ids = loaded.token_ids(["A shipped graph.", "It should give the same vectors as torch does."], True)
    assert np.abs(backend.forward(ids) - TorchBackend(loaded).forward(ids)).max() < 1e-4


def test_unsupported_pipelines_are_refused(loaded):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    transformer, pooling = ox.pipeline_parts(loaded)
    dense = SentenceTransformer(modules=[transformer, pooling, Dense(384, 8)], device="cpu")
    with pytest.raises(ox.UnsupportedModel, match="Transformer -> Pooling -> Dense"):
        ox.pipeline_parts(dataclasses.replace(loaded, st_model=dense, ends_with_normalize=False))
    with pytest.raises(ox.UnsupportedModel, match="pooling mode median"):
        ob.pooling_modes(type("FakePooling", (), {"pooling_mode": ("mean", "median")})())


# -- pooling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [*ob.POOLING_MODES, ("cls", "mean", "max")])
def test_pooling_matches_sentence_transformers(mode):
    from sentence_transformers.sentence_transformer.modules import Pooling

    rng = np.random.default_rng(7)
    hidden = rng.normal(size=(4, 9, 16)).astype(np.float32)
    lengths = np.array([9, 1, 5, 3])
    mask = (np.arange(9)[None, :] < lengths[:, None]).astype(np.int64)
    hidden[mask == 0] = 100.0  # padding positions must not leak into any mode
    reference = Pooling(16, pooling_mode=mode)({"token_embeddings": torch.from_numpy(hidden),
                                                 "attention_mask": torch.from_numpy(mask)})
    ours = ob.pool(hidden, mask, ob.pooling_modes(Pooling(16, pooling_mode=mode)))
    assert ours.dtype == np.float32 and ours.shape == tuple(reference["sentence_embedding"].shape)
    np.testing.assert_allclose(ours, reference["sentence_embedding"].numpy(), atol=1e-5, rtol=1e-5)


# -- settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("env,error", [({"BACKEND": "onnx"}, None),
                                       ({"BACKEND": "onnx", "QUANTIZE": "int8"}, None),
                                       ({"BACKEND": "onnx", "QUANTIZE": "int4"}, "EMBEDDER_QUANTIZE"),
                                       ({"QUANTIZE": "int8"}, None),  # onnx is the default
                                       ({"BACKEND": "torch", "QUANTIZE": "int8"},
                                        "needs EMBEDDER_BACKEND=onnx")])
def test_backend_settings(env, error):
    environ = {"EMBEDDER_" + name: value for name, value in env.items()}
    if error:
        with pytest.raises(ValueError, match=error):
            Settings.from_env(environ)
    else:
        settings = Settings.from_env(environ)
        assert (settings.backend, settings.quantize) == (env.get("BACKEND", "onnx"), env.get("QUANTIZE", ""))


def test_cache_dir_default_and_override(tmp_path):
    assert Settings.from_env({}).resolved_cache_dir() == Settings().resolved_cache_dir()
    assert str(Settings().resolved_cache_dir()).endswith(os.path.join(".cache", "embedder"))
    assert Settings.from_env({"EMBEDDER_CACHE_DIR": str(tmp_path)}).resolved_cache_dir() == tmp_path


def test_two_exports_racing_into_one_cache_leave_one_good_file(tmp_path):
    """``python -m embedder.backends.onnx_export`` (fills the cache ahead of time), twice at once."""
    import subprocess
    import sys

    import onnxruntime

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDDER_BACKEND": "onnx",
           "EMBEDDER_CACHE_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-m", CLI], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1 and [str(p) for p in (tmp_path / "onnx").iterdir()] == list(paths)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(paths.pop(), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]


def test_the_dockerfile_fills_the_cache_with_this_cli():
    assert f"RUN python -m {CLI}\n" in (ROOT / "deploy" / "Dockerfile").read_text()
