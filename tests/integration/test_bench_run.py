"""The benchmark command end to end on a tiny scale (``python -m bench.sweep``, which starts
Flask, Caddy and Gunicorn servers and drives them with wrk): baselines, one row per backend (torch
and onnx-int8) plus a row per backend that fails on purpose, every workload, each backend's
in-process sorted limit on each sentence set; its JSON (read back through the schema), Markdown and
PNG outputs exist and parse, each server ran the backend asked for, the failed rows are recorded
without losing the rest, and no server is left running. Nothing here asserts a speed.
tests/fast/test_bench.py has the sweep, summary and schema on made-up numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness.servers import ROOT
from bench.sweep.schema import Results
from bench.sweep.workloads import WORKLOADS, workload_sentences

pytestmark = pytest.mark.integration


SMOKE_BACKENDS = ("torch", "onnx-int8")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # --http-threads 0 is invalid, so those rows' servers cannot start: the run must go on.
    argv = [sys.executable, "-m", "bench.sweep", "--duration", "2", "--repeat", "1", "--warmup", "0",
            "--backends", ",".join(SMOKE_BACKENDS), "--workers", "1", "--threads", "auto",
            "--http-threads", "0,default", "--wrk-threads", "2", "--connections", "4",
            "--out-dir", str(out), "--name", "smoke"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    return done, out


def test_exit_status_reports_the_failed_row(run):
    done, _ = run
    assert done.returncode == 1, done.stderr[-5000:]
    assert "row(s) failed" in done.stderr


def test_json_has_every_measurement(run):
    done, out = run
    results = Results.load(out / "smoke.json")  # the schema reads back what the runner wrote
    assert results.complete is True
    assert results.machine.available_cpus >= 1

    baselines = {(b.server, b.workload): b for b in results.baselines}
    assert set(baselines) == {(s, w) for s in ("flask", "caddy") for w in ("root", "embed1", "embed1long")}
    for row in baselines.values():
        assert row.error is None, row.error
        assert row.median.requests > 0
        assert row.median.non_2xx_total == 0 and row.median.socket_errors_total == 0
        assert row.median.pss_mib > 0
    assert baselines["caddy", "root"].median.processes == 3  # caddy and two Flask servers
    assert len(baselines["caddy", "root"].memory_last_run.root_pids) == 3

    good = [r for r in results.rows if r.config.http_threads_setting == "default"]
    failed = [r for r in results.rows if r.config.http_threads_setting == 0]
    expected = sorted((b, w) for b in SMOKE_BACKENDS for w in WORKLOADS)
    assert sorted((r.config.backend, r.workload) for r in good) == expected
    assert sorted((r.config.backend, r.workload) for r in failed) == expected
    for row in failed:
        assert row.median is None and not row.runs
        assert "HTTP_THREADS" in row.error
        assert row.served_backend is None
    limits = {(b, name): limit for b, sets in results.limits.items() for name, limit in sets.items()}
    assert set(limits) == {(b, name) for b in SMOKE_BACKENDS for name in ("stsb", "stsb-joined")}
    for (backend, name), limit in limits.items():
        assert (limit.backend, limit.sentence_set) == (backend, name) and not limit.errors
        assert limit.sentences_per_s > 0 and (limit.processes, limit.threads) == (
            results.machine.available_cpus, 1)  # the server's default layout
        assert limit.sentences == len(workload_sentences(
            next(w for w in WORKLOADS.values() if w.sentence_set == name)))
    tokens = limits["torch", "stsb-joined"].tokens
    assert tokens["min"] < tokens["median"] < tokens["p90"] < tokens["max"] and tokens["max"] >= 100
    for row in good:
        assert row.error is None and not row.errors, row.errors
        assert row.served_backend == row.config.backend  # what the server's /info said
        if WORKLOADS[row.workload].sentence_set:  # against its own backend's limit on its workload
            limit = limits[row.config.backend, WORKLOADS[row.workload].sentence_set]
            assert row.ratios["vs_limit"] == pytest.approx(
                row.median.sentences_per_s / limit.sentences_per_s, abs=0.001)
        m = row.median
        assert m.requests > 0 and m.non_2xx_total == 0
        assert m.sentences_per_s == pytest.approx(
            m.requests_per_s * WORKLOADS[row.workload].sentences_per_request, rel=0.01)
        assert 0 < m.latency_p50_ms <= m.latency_p90_ms <= m.latency_p99_ms
        assert m.server_cpu_cores > 0
        assert m.processes == 2  # master and one worker
        roots = row.memory_last_run.root_pids  # Gunicorn's master
        assert len(roots) == 1 and str(roots[0]) in row.memory_last_run.pss_mib_by_pid
        assert m.pss_mib > 0
        assert row.config.threads == results.machine.available_cpus  # /info's threads_per_worker

    summary = results.summary
    assert "error" not in summary
    assert summary["memory"][0]["separate_processes_mib"] > 0
    assert {m["config"]["backend"] for m in summary["memory"]} == set(SMOKE_BACKENDS)
    assert {b: list(cells) for b, cells in summary["memory_by_workers"].items()} == {
        b: ["1"] for b in SMOKE_BACKENDS}
    assert summary["memory_by_workers"]["torch"]["1"]["workload"] == "embed1long"
    # No default configuration (onnx) among these backends: the targets are not measured.
    assert len(summary["targets"]) == 11 and all(t["pass"] is None for t in summary["targets"])
    assert set(summary["best_by_workload"]) == set(WORKLOADS)
    assert set(summary["backends"]) == set(WORKLOADS)
    for entries in summary["backends"].values():
        assert [e["backend"] for e in entries] == list(SMOKE_BACKENDS)
        rate = [e["sentences_per_s"] or e["requests_per_s"] for e in entries]  # requests/s: GET /health
        assert [e["vs_torch"] for e in entries] == [round(r / rate[0], 2) for r in rate]

    # Every server the run started is gone.
    pids = {pid for row in results.baselines + results.rows for pid in row.server_pids}
    assert pids
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()
             and any(word in Path(f"/proc/{pid}/cmdline").read_bytes()
                     for word in (b"gunicorn", b"baseline_flask", b"caddy"))]
    assert not alive


def test_markdown_and_plot(run):
    _, out = run
    text = (out / "smoke.md").read_text()
    assert "## GET / against the original setups" in text
    assert "| Flask (1 process) |" in text and "| Caddy + 2 Flask |" in text
    for name in WORKLOADS:
        assert f"| {name} |" in text
    assert "failed:" in text
    assert "## `embed1long` against the original setups" in text and "## Targets" in text
    for backend in SMOKE_BACKENDS:
        assert f"| {backend} | stsb-joined (`embed1long`) | " in text
        assert f"| {backend}, 1 worker x " in text
    assert "## Memory" in text and "| backend | 1 worker |" in text
    backends = text.split("## Backends", 1)[1].split("\n## ", 1)[0]
    assert ("| workload | backend | best configuration | sentences/s | p99 ms | CPU ms/req | vs limit | "
            "vs torch |") in backends
    assert sum(line.startswith("| embed1 | ") for line in backends.splitlines()) == len(SMOKE_BACKENDS)

    import matplotlib.image

    png = out / "smoke.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(png).shape[:2]
    assert height > 200 and width > 200
