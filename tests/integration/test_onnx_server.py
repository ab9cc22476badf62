"""The ONNX Runtime backend with real servers and the real model: same vectors as torch over HTTP,
an export cache keyed by the model's files, exports racing into one cache, a shipped ONNX file
preferred, serving forms whose mapped weights the workers share, and no torch in the server's
processes. tests/fast/test_onnx_backend.py has its pooling and atomic cache writes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import requests

from bench.harness.servers import ROOT, Gunicorn
from embedder.backends import onnx_backend as ob
from embedder.backends import onnx_export as ox
from embedder.config import Settings
from embedder.model import pooling
from embedder.model.errors import UnsupportedModel
from embedder.model.source import resolve_model
from served_apps import gunicorn_app
from session_cache import onnx_cache as cache_dir

CLI = "embedder.backends.onnx_export"  # fills the cache ahead of time (the Dockerfile runs it)

pytestmark = pytest.mark.integration
EVERY = 14  # every 14th STS-B pair: ~200 real sentences from all its genres


@pytest.fixture(scope="module")
def onnx_server(server):
    """The default server runs the onnx backend (its cache is tests/support/session_cache.py's)."""
    assert requests.get(server.url + "/info", timeout=10).json()["backend"] == "onnx"
    return server


def _bundled() -> tuple[Path, str]:
    source = resolve_model(Settings())
    return source.path, source.model_id


@pytest.fixture(scope="module")
def loaded():
    """The model as the onnx backend's master loads it: from its files (no torch)."""
    from embedder.model.load import load_model

    return load_model(*_bundled(), "onnx")


@pytest.fixture(scope="module")
def st_loaded():
    """The model as the torch backend loads it: a SentenceTransformer."""
    from embedder.model.st_loader import load_sentence_transformer

    return load_sentence_transformer(*_bundled())


def fp32_files(cache):
    return [f for f in (cache / "onnx").iterdir() if f.suffix == ".onnx" and not f.name.endswith("-int8.onnx")]


def serving_dirs(cache):
    return [f for f in (cache / "onnx").iterdir() if f.name.endswith("-serving")]


def libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


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
    cache = cache_dir(tmp_path_factory)
    files = list((cache / "onnx").iterdir())
    # Graphs and serving forms (a graph and its data file), no temporary leftovers.
    assert all((f.is_file() and f.suffix == ".onnx") or
               (f.is_dir() and f.name.endswith("-serving") and sorted(p.name for p in f.iterdir())
                == [ox.SERVING_GRAPH, ox.SERVING_DATA]) for f in files), files
    assert len(fp32_files(cache)) == 1
    log = onnx_server.log()
    assert log.count("embedder.onnx: exported") + log.count("using cached ONNX export") == 1
    assert log.count("embedder.onnx: prepared") + log.count("using the cached serving form") == 1
    master = onnx_server.pid
    assert f"[{master}] [INFO] embedder.onnx" in log  # in the master, before fork
    assert "could not prepare" not in log


def mapped_file(pid: int, name: str) -> dict[str, int]:
    """kB of Rss, Pss and Anonymous (pages copied on write) over a process's mappings of files
    named ``name``."""
    totals, inside = dict.fromkeys(("Rss", "Pss", "Anonymous"), 0), False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):  # a mapping's header line
            inside = fields[-1].endswith("/" + name)
        elif inside and fields[0][:-1] in totals:
            totals[fields[0][:-1]] += int(fields[1])
    return totals


def test_workers_share_the_mapped_weights(onnx_server):
    """Each worker maps the serving form's data file (weights and pre-packed weights) and never
    writes to it: its pages are the page cache's, shared by both workers (no copy on write, and
    each worker's proportional share is well under what it maps); the master maps neither it nor
    ONNX Runtime."""
    workers = onnx_server.worker_pids()
    assert len(workers) == 2
    assert ox.SERVING_DATA not in libraries(onnx_server.pid) and "onnxruntime" not in libraries(onnx_server.pid)
    for pid in workers:
        data = mapped_file(pid, ox.SERVING_DATA)
        assert data["Rss"] > 20_000 and data["Anonymous"] == 0, data  # tens of MB used, none copied
        assert data["Pss"] < 0.75 * data["Rss"], data  # the other worker maps most of them too


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
        assert f"[{srv.pid}] [INFO] embedder.onnx: prepared" in log, log
        assert len(list(Path(f"/proc/{srv.pid}/task").iterdir())) == 1
        # The children exported with torch; the master never loaded it, nor ONNX Runtime.
        assert "libtorch" not in libraries(srv.pid) and "onnxruntime" not in libraries(srv.pid)
        info = requests.get(srv.url + "/info", timeout=30).json()
        assert (info["backend"], info["threads_per_worker"]) == ("onnx-int8" if quantize else "onnx", 2)
        r = requests.post(srv.url + "/embed", json={"inputs": ["a sentence"] * 40}, timeout=60)
        assert r.status_code == 200 and len(r.json()) == 40
        assert srv.stop(timeout=20) == 0, srv.log()[-3000:]
        assert "SIGABRT" not in srv.log() and "terminate called" not in srv.log()


def test_building_the_backend_never_imports_onnxruntime(tmp_path_factory):
    """What the master does, in a fresh interpreter: load the model and build the float32 and int8
    backends (from the session's cache, exporting, quantizing and preparing in children if it is
    cold). Importing onnxruntime would start a thread that forked workers inherit without it (see the
    test above); torch, transformers and sentence-transformers are not needed at all."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        from embedder.backends import create_backend
        from embedder.config import Settings
        from embedder.model.load import load_model
        from embedder.model.source import resolve_model

        source = resolve_model(Settings())
        model = load_model(source.path, source.model_id, "onnx")
        names = [create_backend(Settings(quantize=q, cache_dir=sys.argv[1]), model).name for q in ("", "int8")]
        print(names, sorted(m for m in ("onnxruntime", "torch", "transformers", "sentence_transformers")
                            if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(cache_dir(tmp_path_factory))], cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['onnx', 'onnx-int8'] []", done.stdout


def test_a_running_onnx_server_has_no_torch_and_the_models_vectors(reference_model, stsb):
    """Master and workers of an onnx server (tests/support/modules_wsgi.py reports each process's imported
    packages; /proc/<pid>/maps shows its shared libraries): no torch, transformers or
    sentence-transformers anywhere, ONNX Runtime in the workers only, and still sentence-transformers'
    own vectors."""
    texts = sorted({s for _, a, b in stsb[::EVERY] for s in (a, b)})[:64]
    with Gunicorn(workers=2, **gunicorn_app("modules_wsgi")) as srv:
        pids = [srv.pid, *srv.worker_pids()]
        reports = [requests.get(srv.url + "/_test/modules", timeout=30).json() for _ in range(20)]
        ours = embed(srv, texts, normalize=True)
        maps = {pid: libraries(pid) for pid in pids}
    # The master's report: taken after loading the model and building the backend, before fork.
    assert {r["master"]["pid"] for r in reports} == {pids[0]}
    assert all(r["master"]["modules"] == [] for r in reports)
    workers = {r["worker"]["pid"]: r["worker"]["modules"] for r in reports}
    assert set(workers) <= set(pids[1:]) and workers and all(m == ["onnxruntime"] for m in workers.values())
    for pid, text in maps.items():
        assert "libtorch" not in text, pid
    assert "onnxruntime" not in maps[pids[0]] and all("onnxruntime" in maps[pid] for pid in pids[1:])
    theirs = reference_model.encode(texts, normalize_embeddings=True)
    assert np.abs(ours - theirs).max() < 1e-5


# -- in process -------------------------------------------------------------------------------------
def test_cache_is_reused_and_keyed_by_the_model_files(onnx_server, loaded, tmp_path_factory):
    """The export key is computed from the model's files (tests/fast/test_model_files.py checks what it
    hashes); the cached graph and serving form are found again, not rewritten."""
    cache = cache_dir(tmp_path_factory)
    (cached,) = fp32_files(cache)
    stamp = cached.stat().st_mtime_ns
    files = ox.onnx_files(loaded, cache)
    assert files.source == cached and cached.stat().st_mtime_ns == stamp
    assert ox.export_key(loaded.path)[:20] in cached.name
    assert files.prepared and files.serving.parent in serving_dirs(cache)
    assert ox.serving_key(ox.export_key(loaded.path))[:20] in files.serving.parent.name


def shipped_model(loaded, tmp_path, tmp_path_factory):
    """A copy of the model (symlinks) that ships onnx/model.onnx with its weights in a separate file,
    as large models ship theirs."""
    import onnx

    (cached,) = fp32_files(cache_dir(tmp_path_factory))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for entry in os.scandir(loaded.path):
        (model_dir / entry.name).symlink_to(entry.path)
    (model_dir / "onnx").mkdir()
    onnx.save_model(onnx.load(str(cached)), str(model_dir / "onnx" / "model.onnx"),
                    save_as_external_data=True, location="model.onnx_data")
    return dataclasses.replace(loaded, path=str(model_dir))


def test_shipped_onnx_file_is_used_instead_of_exporting(onnx_server, loaded, st_loaded, tmp_path,
                                                          tmp_path_factory):
    from embedder.backends.torch_backend import TorchBackend

    shipped = shipped_model(loaded, tmp_path, tmp_path_factory)
    model_dir = Path(shipped.path)
    empty_cache = tmp_path / "cache"
    backend = ob.OnnxBackend(shipped, empty_cache)
    assert backend.path == model_dir / "onnx" / "model.onnx"
    assert (model_dir / "onnx" / "model.onnx_data").is_file()
    assert fp32_files(empty_cache) == []  # nothing exported; only its serving form was made
    assert backend.prepared and backend.serving.parent in serving_dirs(empty_cache)
    with pytest.raises(RuntimeError, match="start"):
        backend.forward([[101, 102]])
    backend.start(1)
    ids = loaded.token_ids(["A shipped graph.", "It should give the same vectors as torch does."], True)
    assert np.abs(backend.forward(ids) - TorchBackend(st_loaded).forward(ids)).max() < 1e-4


def test_without_a_writable_cache_workers_open_the_source_graph(onnx_server, loaded, st_loaded, tmp_path,
                                                                 tmp_path_factory, caplog):
    """A serving form that cannot be written (a read-only cache made on another CPU, say) is not
    fatal: workers open the shipped graph by path, optimizing it themselves, with a warning."""
    import logging

    from embedder.backends.torch_backend import TorchBackend

    shipped = shipped_model(loaded, tmp_path, tmp_path_factory)
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING, logger="embedder.onnx"):
        backend = ob.OnnxBackend(shipped, not_a_dir)
    assert "could not prepare model.onnx for serving" in caplog.text
    assert (backend.serving, backend.prepared) == (backend.path, False)
    backend.start(1)
    ids = loaded.token_ids(["Served as shipped."], True)
    assert np.abs(backend.forward(ids) - TorchBackend(st_loaded).forward(ids)).max() < 1e-4


def test_unsupported_pipelines_are_refused(st_loaded, tmp_path):
    """By the exporter (a SentenceTransformer) and by the backend (a model without pooling modes);
    tests/fast/test_model_files.py has the refusals of the files' loader."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    transformer, pooling_module = ox.pipeline_parts(st_loaded)  # not `pooling`: that is the module under test
    dense_last = SentenceTransformer(modules=[transformer, pooling_module, Normalize(), Dense(384, 8)], device="cpu")
    with pytest.raises(UnsupportedModel, match="Transformer -> Pooling -> Normalize -> Dense"):
        ox.pipeline_parts(dataclasses.replace(st_loaded, st_model=dense_last, ends_with_normalize=False))
    with pytest.raises(UnsupportedModel, match="EMBEDDER_BACKEND=torch"):
        ob.OnnxBackend(dataclasses.replace(st_loaded, pooling_modes=()), tmp_path)
    assert not (tmp_path / "onnx").exists()  # refused before any file is made
    with pytest.raises(UnsupportedModel, match="pooling mode median"):
        pooling.implemented(pooling.pooling_modes(type("FakePooling", (), {"pooling_mode": ("mean", "median")})()))
    with pytest.raises(UnsupportedModel, match="pooling mode median"):
        pooling.implemented(("mean", "median"))


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
    assert len(paths) == 1, paths  # the serving form's graph, which workers open
    (serving,) = serving_dirs(tmp_path)
    assert paths == {str(serving / ox.SERVING_GRAPH)}
    assert len(fp32_files(tmp_path)) == 1 and len(list((tmp_path / "onnx").iterdir())) == 2  # no leftovers
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(paths.pop(), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
