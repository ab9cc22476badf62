"""Settings come from EMBEDDER_* variables, each declared once in embedder/config.py; the CPU
budget honours affinity and cgroup quotas; worker and thread defaults fill the cores; the backend,
its quantization and its export cache's folder."""

from __future__ import annotations

import os

import pytest

from embedder import config
from embedder.config import Settings, specs, worker_layout


def test_defaults_and_overrides():
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env({"EMBEDDER_MAX_BATCH_SIZE": "7", "EMBEDDER_REQUEST_TIMEOUT": "2.5",
                           "EMBEDDER_METRICS_REQUIRE_KEY": "yes", "EMBEDDER_API_KEY": "s3cr3t-value",
                           "EMBEDDER_BIND": " 0.0.0.0:9000 ", "EMBEDDER_LOG_LEVEL": "", "UNRELATED": "x"})
    assert (s.max_batch_size, s.request_timeout, s.metrics_require_key, s.api_key, s.bind, s.log_level) == (
        7, 2.5, True, "s3cr3t-value", "0.0.0.0:9000", "info")
    assert "s3cr3t-value" not in repr(s)  # the key never reaches a log line through repr
    assert "EMBEDDER_API_KEY" not in s.environment() and s.environment()["EMBEDDER_MAX_BATCH_SIZE"] == "7"


def test_every_setting_is_read_from_its_variable():
    """Each declared variable reaches its field (a typo in a declaration would show here)."""
    samples = {str: "/some/where", int: "5", float: "1.5", bool: "true"}
    choices = {"backend": "torch", "quantize": "", "precision": "float32", "log_level": "debug",
               "tls_cert": __file__, "tls_key": __file__}  # readable files, and only as a pair:
    partners = {"tls_cert": {"EMBEDDER_TLS_KEY": __file__}, "tls_key": {"EMBEDDER_TLS_CERT": __file__}}
    for spec in specs():
        raw = choices.get(spec.name, samples[spec.type])
        environ = {spec.env: raw, **partners.get(spec.name, {})}
        assert getattr(Settings.from_env(environ), spec.name) == config.parse(spec, raw), spec.env


def test_the_old_threads_variable_still_works():
    assert Settings.from_env({"EMBEDDER_TORCH_THREADS": "3"}).threads == 3
    assert Settings.from_env({"EMBEDDER_TORCH_THREADS": "3", "EMBEDDER_THREADS": "2"}).threads == 2


@pytest.mark.parametrize("name,value,error", [
    ("MAX_BATCH_SIZE", "many", "not an integer"), ("MAX_BATCH_SIZE", "0", "at least 1"),
    ("METRICS_REQUIRE_KEY", "maybe", "not a boolean"), ("BACKEND", "tensorflow", "expected one of"),
    ("REQUEST_TIMEOUT", "-1", "more than 0"), ("REQUEST_TIMEOUT", "0", "more than 0"),
    ("WORKERS", "-2", "at least 0"), ("TORCH_THREADS", "x", "TORCH_THREADS"),
    ("LOG_LEVEL", "loud", "expected one of"), ("QUANTIZE", "int4", "expected one of"),
    ("PRECISION", "float16", "expected one of")])
def test_bad_values_are_refused_with_the_variable_name(name, value, error):
    with pytest.raises(ValueError, match="EMBEDDER_") as info:
        Settings.from_env({"EMBEDDER_" + name: value})
    assert error in str(info.value)


def test_rules_hold_for_settings_built_in_code_too():
    with pytest.raises(ValueError, match="EMBEDDER_HTTP_THREADS"):
        Settings(http_threads=0)
    with pytest.raises(ValueError, match="needs EMBEDDER_BACKEND=onnx"):
        Settings(backend="torch", quantize="int8")
    with pytest.raises(ValueError, match="expected int"):
        Settings(workers="2")
    assert Settings(request_timeout=2).request_timeout == 2.0


def test_backend_labels():
    assert config.BACKEND_LABELS == {"onnx": ("onnx", "float32"), "onnx-int8": ("onnx", "int8"),
                                     "torch": ("torch", "float32"), "openvino": ("openvino", "float32"),
                                     "openvino-bf16": ("openvino", "bfloat16")}
    assert Settings().backend_label == "onnx" and Settings(quantize="int8").backend_label == "onnx-int8"
    assert Settings(precision="int8").backend_label == "onnx-int8"
    assert Settings(backend="openvino").backend_label == "openvino"
    assert Settings(backend="openvino", precision="bfloat16").backend_label == "openvino-bf16"
    assert config.backend_label("onnx", "") == "onnx" and config.backend_label("onnx", "int8") == "onnx-int8"


def fake_cgroup(monkeypatch, files: dict):
    monkeypatch.setattr(config, "_read_first_line", lambda path: files.get(path))


def test_cgroup_v2_quota_caps_cores(monkeypatch):
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    fake_cgroup(monkeypatch, {"/sys/fs/cgroup/cpu.max": "250000 100000"})
    assert config.available_cpus() == 3  # 2.5 CPUs round up
    fake_cgroup(monkeypatch, {"/sys/fs/cgroup/cpu.max": "max 100000"})
    assert config.available_cpus() == 16


def test_cgroup_v1_quota_caps_cores(monkeypatch):
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    fake_cgroup(monkeypatch, {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "200000",
                              "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"})
    assert config.available_cpus() == 2
    fake_cgroup(monkeypatch, {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
                              "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"})
    assert config.available_cpus() == 8


def test_without_an_affinity_api_the_cpu_count_is_used(monkeypatch):
    """macOS has no sched_getaffinity."""
    monkeypatch.delattr(config.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(config.os, "cpu_count", lambda: 10)
    fake_cgroup(monkeypatch, {})
    assert config.available_cpus() == 10


def test_workers_times_threads_fit_the_cores():
    assert worker_layout(cpus=8) == config.WorkerLayout(8, 1)
    assert worker_layout(workers=2, cpus=8) == config.WorkerLayout(2, 4)
    assert worker_layout(threads=4, cpus=8) == config.WorkerLayout(2, 4)
    assert worker_layout(workers=3, cpus=8).threads == 2  # 8 // 3: never oversubscribe
    assert worker_layout(workers=16, cpus=8).threads == 1
    assert worker_layout(threads=16, cpus=8) == config.WorkerLayout(1, 16)


def test_layout_follows_the_running_worker_count(monkeypatch):
    monkeypatch.setattr(config, "available_cpus", lambda: 8)
    assert Settings().layout() == config.WorkerLayout(8, 1)
    assert Settings(workers=2).layout(workers=4) == config.WorkerLayout(4, 2)  # gunicorn -w 4 wins
    assert Settings(threads=2).layout(workers=1) == config.WorkerLayout(1, 2)


def test_tls_needs_both_readable_files(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("y")
    ok = Settings.from_env({"EMBEDDER_TLS_CERT": str(cert), "EMBEDDER_TLS_KEY": str(key)})
    assert (ok.tls_cert, ok.tls_key) == (str(cert), str(key))
    with pytest.raises(ValueError, match="EMBEDDER_TLS_CERT and EMBEDDER_TLS_KEY go together"):
        Settings.from_env({"EMBEDDER_TLS_CERT": str(cert)})
    with pytest.raises(ValueError, match="EMBEDDER_TLS_KEY=.*no readable file"):
        Settings.from_env({"EMBEDDER_TLS_CERT": str(cert), "EMBEDDER_TLS_KEY": str(tmp_path / "nope.pem")})


# -- the backend's settings -------------------------------------------------------------------------
@pytest.mark.parametrize("env,error", [({"BACKEND": "onnx"}, None),
                                       ({"BACKEND": "onnx", "QUANTIZE": "int8"}, None),
                                       ({"BACKEND": "onnx", "QUANTIZE": "int4"}, "EMBEDDER_QUANTIZE"),
                                       ({"QUANTIZE": "int8"}, None),  # onnx is the default
                                       ({"BACKEND": "torch", "QUANTIZE": "int8"},
                                        "needs EMBEDDER_BACKEND=onnx"),
                                       ({"PRECISION": "int8"}, None),
                                       ({"PRECISION": "int8", "QUANTIZE": "int8"}, None),
                                       ({"BACKEND": "openvino"}, None),
                                       ({"BACKEND": "openvino", "PRECISION": "float32"}, None),
                                       ({"BACKEND": "openvino", "PRECISION": "bfloat16"}, None),
                                       ({"BACKEND": "openvino", "PRECISION": "int8"},
                                        "EMBEDDER_PRECISION='int8' needs EMBEDDER_BACKEND=onnx"),
                                       ({"BACKEND": "openvino", "QUANTIZE": "int8"},
                                        "EMBEDDER_QUANTIZE='int8' needs EMBEDDER_BACKEND=onnx"),
                                       ({"PRECISION": "bfloat16"}, "needs EMBEDDER_BACKEND=openvino"),
                                       ({"BACKEND": "torch", "PRECISION": "bfloat16"},
                                        "needs EMBEDDER_BACKEND=openvino"),
                                       ({"PRECISION": "bfloat16", "QUANTIZE": "int8"}, "disagree"),
                                       ({"BACKEND": "tensorflow"}, "expected one of")])
def test_backend_settings(env, error):
    """EMBEDDER_PRECISION picks the precision each backend runs; EMBEDDER_QUANTIZE=int8, its older
    name, still selects int8 (and reads back as both)."""
    environ = {"EMBEDDER_" + name: value for name, value in env.items()}
    if error:
        with pytest.raises(ValueError, match=error):
            Settings.from_env(environ)
    else:
        settings = Settings.from_env(environ)
        int8 = "int8" in (env.get("QUANTIZE"), env.get("PRECISION"))
        assert (settings.backend, settings.precision, settings.quantize) == (
            env.get("BACKEND", "onnx"), "int8" if int8 else env.get("PRECISION", "float32"), "int8" if int8 else "")


def test_cache_dir_default_and_override(tmp_path):
    assert Settings.from_env({}).resolved_cache_dir() == Settings().resolved_cache_dir()
    assert str(Settings().resolved_cache_dir()).endswith(os.path.join(".cache", "embedder"))
    assert Settings.from_env({"EMBEDDER_CACHE_DIR": str(tmp_path)}).resolved_cache_dir() == tmp_path


def test_models_lists_names_and_models():
    from embedder.config import ModelSpec

    settings = Settings.from_env({"EMBEDDER_MODELS": " minilm= , rr=cross-encoder/ms-marco-MiniLM-L6-v2,/models/x ,"})
    assert settings.model_specs() == [ModelSpec("minilm", ""), ModelSpec("rr", "cross-encoder/ms-marco-MiniLM-L6-v2"),
                                      ModelSpec("", "/models/x")]
    assert Settings(model="org/m", model_id="m").model_specs() == [ModelSpec("m", "org/m")]


@pytest.mark.parametrize("env, message", [
    ({"EMBEDDER_MODELS": "a=x,a=y"}, "the name 'a' is given twice"),
    ({"EMBEDDER_MODELS": "=x"}, "empty name before '='"),
    ({"EMBEDDER_MODELS": " , "}, "lists no model"),
    ({"EMBEDDER_MODELS": "a=x", "EMBEDDER_MODEL": "y"}, "for one model alone"),
    ({"EMBEDDER_MODELS": "a=x", "EMBEDDER_REVISION": "v1"}, "for one model alone"),
    ({"EMBEDDER_MAX_DOCUMENTS": "0"}, "EMBEDDER_MAX_DOCUMENTS=0: must be at least 1"),
])
def test_a_bad_model_list_is_refused_at_start(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
