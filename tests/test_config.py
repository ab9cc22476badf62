"""Settings come from EMBEDDER_* variables; the CPU budget honours affinity and cgroup quotas."""

from __future__ import annotations

import pytest

from embedder import config
from embedder.config import Settings


def test_defaults_and_overrides(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("EMBEDDER_"):
            monkeypatch.delenv(name)
    assert Settings.from_env() == Settings()
    monkeypatch.setenv("EMBEDDER_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("EMBEDDER_REQUEST_TIMEOUT", "2.5")
    monkeypatch.setenv("EMBEDDER_METRICS_REQUIRE_KEY", "yes")
    monkeypatch.setenv("EMBEDDER_API_KEY", "s3cr3t-value")
    s = Settings.from_env()
    assert (s.max_batch_size, s.request_timeout, s.metrics_require_key, s.api_key) == (7, 2.5, True, "s3cr3t-value")
    assert "s3cr3t-value" not in repr(s)  # the key never reaches a log line through repr


@pytest.mark.parametrize("name,value", [("MAX_BATCH_SIZE", "many"), ("MAX_BATCH_SIZE", "0"),
                                        ("METRICS_REQUIRE_KEY", "maybe"), ("BACKEND", "tensorflow"),
                                        ("REQUEST_TIMEOUT", "-1"), ("WORKERS", "-2")])
def test_bad_values_are_refused_with_the_variable_name(monkeypatch, name, value):
    monkeypatch.setenv("EMBEDDER_" + name, value)
    with pytest.raises(ValueError, match="EMBEDDER_"):
        Settings.from_env()


def fake_cgroup(monkeypatch, files: dict):
    monkeypatch.setattr(config, "_read_first_line", lambda path: files.get(path))


def test_cgroup_v2_quota_caps_cores(monkeypatch):
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(16)))
    fake_cgroup(monkeypatch, {"/sys/fs/cgroup/cpu.max": "250000 100000"})
    assert config.available_cpus() == 3  # 2.5 CPUs round up
    fake_cgroup(monkeypatch, {"/sys/fs/cgroup/cpu.max": "max 100000"})
    assert config.available_cpus() == 16


def test_cgroup_v1_quota_caps_cores(monkeypatch):
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(8)))
    fake_cgroup(monkeypatch, {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "200000",
                              "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"})
    assert config.available_cpus() == 2
    fake_cgroup(monkeypatch, {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
                              "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"})
    assert config.available_cpus() == 8


def test_workers_times_threads_fit_the_cores(monkeypatch):
    monkeypatch.setattr(config, "available_cpus", lambda: 8)
    assert (Settings().default_workers(), Settings().threads_for(8)) == (8, 1)
    assert (Settings(workers=2).default_workers(), Settings(workers=2).threads_for(2)) == (2, 4)
    assert Settings(torch_threads=4).default_workers() == 2
    assert Settings().threads_for(3) == 2  # 8 // 3: never oversubscribe
    assert Settings().threads_for(16) == 1
