"""The tuner for real, at the smallest scale: ``python -m bench.tools.tune`` with one candidate (onnx
float32, 1 worker x 1 thread, not the default layout) and 2 s of load writes a valid env file;
``make serve`` started with that file serves with its settings; the Kubernetes overlay
deploy/k8s/tuned turns the same file into the ConfigMap the Deployment reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import requests
import yaml

from bench.harness.servers import ROOT, Process, free_port
from bench.tools.tune import ENV_NAMES, read_env
from embedder.config import Settings, available_cpus

K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.32.0"  # as tests/integration/test_deploy.py validates the manifests


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The tuner's env file, JSON and stdout from one tiny run, in an ONNX cache of this module's
    own (make serve's server below reuses it)."""
    tmp = tmp_path_factory.mktemp("tune")
    env_file, json_file = tmp / "embedder.env", tmp / "tune.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.tools.tune", "--backends", "onnx", "--layouts", "1x1", "--no-default",
         "--duration", "2", "--warmup", "1", "--env-file", str(env_file), "--json", str(json_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**_clean_environ(), "EMBEDDER_CACHE_DIR": str(tmp / "cache")})
    assert done.returncode == 0, done.stdout + done.stderr
    return env_file, json.loads(json_file.read_text()), done, tmp / "cache"


def _clean_environ() -> dict[str, str]:
    """os.environ without the tuned settings (set ones would win over the file in make serve) and
    without an outer make's flags."""
    tuned = set(ENV_NAMES.values()) | {"EMBEDDER_QUANTIZE"}
    return {k: v for k, v in os.environ.items() if k not in tuned and not k.startswith(("MAKE", "MFLAGS"))}


def test_the_tuner_writes_a_valid_env_file_of_what_it_measured(tuned):
    env_file, result, done, _ = tuned
    values = read_env(env_file)
    assert values == {"EMBEDDER_BACKEND": "onnx", "EMBEDDER_PRECISION": "float32", "EMBEDDER_WORKERS": "1",
                      "EMBEDDER_THREADS": "1"}
    Settings.from_env(values)
    (row,) = result["results"]
    assert row["error"] is None and row["failed_requests"] == 0 and row["sentences_per_s"] > 0
    assert row["pss_mib"] > 0 and row["p99_ms"] > 0
    assert row["fidelity"]["worst_cosine"] == 1.0 and row["fidelity"]["passed"]  # it is its own reference
    assert result["pick"] == result["exact"] == {"backend": "onnx", "workers": 1, "threads": 1, "default": False}
    assert f"figure: onnx float32, 1 x 1: {row['sentences_per_s']:,.1f} sentences/s" in env_file.read_text()
    assert "| onnx | float32 | 1 × 1 |" in done.stdout and f"wrote {env_file}" in done.stdout
    assert "the default configuration was not measured" in done.stdout
    assert "server/s" in done.stderr or "s/server" in done.stderr  # tqdm's progress bar, on stderr


def test_make_serve_serves_with_the_tuned_settings(tuned, monkeypatch):
    if available_cpus() < 2:
        pytest.skip("one core: the file's 1 x 1 is also the default layout, nothing to tell apart")
    env_file, _, _, cache = tuned
    for name in set(os.environ) - set(_clean_environ()):
        monkeypatch.delenv(name)
    port = free_port()
    server = Process(f"make-serve-{port}", ["make", "serve", f"ENV_FILE={env_file}"],
                     env={"EMBEDDER_BIND": f"127.0.0.1:{port}", "EMBEDDER_CACHE_DIR": str(cache)})
    try:
        url = f"http://127.0.0.1:{port}"
        server.wait_http(url + "/health", timeout=120)
        info = requests.get(url + "/info", timeout=10).json()
        # The default here would be 2 workers x 1 thread: 1 x 1 can only have come from the file.
        assert (info["backend"], info["workers"], info["threads_per_worker"]) == ("onnx", 1, 1)
        answer = requests.post(url + "/embed", json={"inputs": ["tuned", "and serving"]}, timeout=30)
        assert answer.status_code == 200 and [len(v) for v in answer.json()] == [384, 384]
        assert f"settings from {env_file}" in server.log()
    finally:
        server.stop(grace=30)


def kustomize(directory) -> list[dict]:
    done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def configmap_and_its_reader(docs: list[dict]) -> tuple[dict, dict]:
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    for doc in (configmap, deployment):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    (source,) = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    return configmap, source["configMapRef"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: `kubectl kustomize` builds it")
def test_the_kubernetes_overlay_turns_the_file_into_the_deployments_configmap(tuned, tmp_path):
    env_file = tuned[0]
    # As shipped: the overlay builds, its ConfigMap sets nothing.
    configmap, ref = configmap_and_its_reader(kustomize(K8S / "tuned"))
    assert not configmap.get("data") and ref == {"name": configmap["metadata"]["name"], "optional": True}
    # With the tuner's file in place (a copy of deploy/k8s, so the repository's file stays as it is).
    shutil.copytree(K8S, tmp_path / "k8s")
    shutil.copy(env_file, tmp_path / "k8s" / "tuned" / "embedder.env")
    configmap, ref = configmap_and_its_reader(kustomize(tmp_path / "k8s" / "tuned"))
    assert configmap["data"] == read_env(env_file)
    assert ref["name"] == configmap["metadata"]["name"] and configmap["metadata"]["name"].startswith("embedder-tuned-")
    # The base alone still refers to it, optionally, and has no ConfigMap.
    base = kustomize(K8S / "base")
    assert not [d for d in base if d["kind"] == "ConfigMap"]
