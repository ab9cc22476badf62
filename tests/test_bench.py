"""The benchmark command, end to end on a tiny scale: baselines, a 1-row sweep plus a row that
fails on purpose, every workload, the in-process ceiling; its JSON, Markdown and PNG outputs
exist and parse, the failed row is recorded without losing the rest, and no server is left
running. Nothing here asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serverproc import ROOT

from bench.run import parse_args, sweep
from bench.workloads import WORKLOADS, stsb_sentences, write_bodies


def test_post_bodies_cover_stsb(tmp_path):
    sentences = stsb_sentences()
    one = write_bodies(WORKLOADS["embed1"], sentences, tmp_path).read_text().splitlines()
    assert [json.loads(line)["inputs"] for line in one] == sentences
    many = [json.loads(line)["inputs"] for line in
            write_bodies(WORKLOADS["embed32"], sentences, tmp_path).read_text().splitlines()]
    assert all(len(inputs) == 32 for inputs in many)
    assert set(s for inputs in many for s in inputs) == set(sentences)
    assert write_bodies(WORKLOADS["root"], sentences, tmp_path) is None


def test_sweep_resolves_auto_and_drops_duplicates():
    args = parse_args(["--workers", "1,2,4", "--torch-threads", "auto,1,2"])
    configs = sweep(args, cores=2)
    assert [(c["workers"], c["torch_threads"]) for c in configs] == [
        (1, 2), (1, 1), (2, 1), (2, 2), (4, 1), (4, 2)]
    assert [c["default"] for c in configs] == [False, False, True, False, False, False]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # --http-threads 0 is invalid, so that row's server cannot start: the run must go on.
    argv = [sys.executable, "-m", "bench.run", "--duration", "3", "--repeat", "1", "--warmup", "0",
            "--workers", "1", "--torch-threads", "auto", "--http-threads", "0,default",
            "--wrk-threads", "2", "--connections", "4", "--out-dir", str(out), "--name", "smoke"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    return done, out


def test_exit_status_reports_the_failed_row(run):
    done, _ = run
    assert done.returncode == 1, done.stderr[-5000:]
    assert "row(s) failed" in done.stderr


def test_json_has_every_measurement(run):
    done, out = run
    results = json.loads((out / "smoke.json").read_text())
    assert results["complete"] is True
    assert results["machine"]["available_cpus"] >= 1

    baselines = {b["server"]: b for b in results["baselines"]}
    assert set(baselines) == {"flask", "caddy"}
    for row in baselines.values():
        assert "error" not in row, row.get("error")
        assert row["median"]["requests"] > 0
        assert row["median"]["non_2xx_total"] == 0
        assert row["median"]["pss_mib"] > 0
    assert baselines["caddy"]["median"]["processes"] == 3  # caddy and two Flask servers

    good = [r for r in results["rows"] if r["config"]["http_threads_setting"] == "default"]
    failed = [r for r in results["rows"] if r["config"]["http_threads_setting"] == 0]
    assert sorted(r["workload"] for r in good) == sorted(WORKLOADS)
    assert sorted(r["workload"] for r in failed) == sorted(WORKLOADS)
    for row in failed:
        assert "HTTP_THREADS" in row["error"]
    for row in good:
        assert "error" not in row, row.get("error")
        m = row["median"]
        assert m["requests"] > 0 and m["non_2xx_total"] == 0
        assert m["sentences_per_s"] == pytest.approx(
            m["requests_per_s"] * WORKLOADS[row["workload"]].sentences_per_request, rel=0.01)
        assert 0 < m["latency_p50_ms"] <= m["latency_p90_ms"] <= m["latency_p99_ms"]
        assert m["server_cpu_cores"] > 0
        assert m["processes"] == 2  # master and one worker
        assert m["pss_mib"] > 0
        assert row["config"]["torch_threads"] == results["machine"]["available_cpus"]

    assert results["ceiling"]["sentences_per_s"] > 0
    summary = results["summary"]
    assert "error" not in summary
    assert summary["memory"][0]["separate_processes_mib"] > 0
    assert set(summary["best_by_workload"]) == set(WORKLOADS)

    # Every server the run started is gone.
    pids = {pid for row in results["baselines"] + results["rows"] for pid in row["server_pids"]}
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
    assert "In-process ceiling:" in text and "## Memory" in text

    import matplotlib.image

    png = out / "smoke.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(png).shape[:2]
    assert height > 200 and width > 200
