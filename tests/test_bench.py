"""The benchmark command, end to end on a tiny scale: baselines, one row per backend (torch and
onnx-int8) plus a row per backend that fails on purpose, every workload, each backend's in-process
ceiling; its JSON, Markdown and PNG outputs exist and parse, each server ran the backend asked
for, the failed rows are recorded without losing the rest, and no server is left running.
Nothing here asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serverproc import ROOT

from embedder.config import Settings

from bench.report import summarize
from bench.run import BACKENDS, default_backend_label, parse_args, sweep
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
    assert args.backends == list(BACKENDS) == ["torch", "onnx", "onnx-int8"]
    configs = sweep(args, cores=2)
    per_backend = [(1, 2), (1, 1), (2, 1), (2, 2), (4, 1), (4, 2)]
    assert [(c["backend"], c["workers"], c["torch_threads"]) for c in configs] == [
        (b, w, t) for b in BACKENDS for w, t in per_backend]
    # The default is what a server runs with no EMBEDDER_* set: config.py's backend, read now.
    defaults = Settings()
    expected = "onnx-int8" if defaults.quantize == "int8" else defaults.backend
    assert default_backend_label() == expected
    assert [(c["backend"], c["workers"], c["torch_threads"]) for c in configs if c["default"]] == [
        (expected, 2, 1)]


def test_sweep_backends_flag():
    args = parse_args(["--backends", "onnx-int8,torch,torch", "--workers", "2", "--torch-threads", "auto"])
    assert args.backends == ["onnx-int8", "torch"]
    configs = sweep(args, cores=2)
    assert [c["backend"] for c in configs] == ["onnx-int8", "torch"]
    assert sum(c["default"] for c in configs) == (default_backend_label() in args.backends)
    others = [b for b in BACKENDS if b != default_backend_label()]
    assert not any(c["default"] for c in sweep(parse_args(["--backends", ",".join(others)]), cores=2))
    for bad in ("tensorrt", "torch,onnx-fp16", ","):
        with pytest.raises(SystemExit):
            parse_args(["--backends", bad])


def _row(backend: str, workload: str, rate: float, errors: int = 0, workers: int = 1) -> dict:
    config = {"backend": backend, "workers": workers, "torch_threads": 2, "torch_threads_setting": "auto",
              "http_threads": 32, "http_threads_setting": "default", "default": False}
    median = {"requests_per_s": rate, "sentences_per_s": rate, "latency_p50_ms": 10.0,
              "latency_p99_ms": 20.0, "non_2xx_total": errors, "socket_errors_total": 0,
              "server_cpu_cores": 1.0, "pss_mib": 500.0, "private_mib": 100.0}
    return {"server": "embedder", "workload": workload, "config": config, "median": median,
            "runs": [median]}


def test_summary_compares_backends_and_their_own_ceilings():
    rows = [_row("torch", "embed1", 100.0), _row("onnx", "embed1", 150.0),
            _row("onnx", "embed1", 180.0, errors=1, workers=2),
            _row("onnx-int8", "embed1", 250.0), _row("onnx-int8", "embed32", 300.0)]
    results = {"baselines": [], "rows": rows,
               "ceiling": {"torch": {"sentences_per_s": 200.0, "runs": [200.0]},
                           "onnx": {"error": "exit 1", "runs": []},
                           "onnx-int8": {"sentences_per_s": 400.0, "runs": [400.0]}}}
    summary = summarize(results)
    assert [r["ratios"].get("vs_ceiling") for r in rows] == [0.5, None, None, 0.625, 0.75]
    assert summary["ceiling_sentences_per_s"] == {"torch": 200.0, "onnx-int8": 400.0}
    embed1 = {e["backend"]: e for e in summary["backends"]["embed1"]}
    assert list(embed1) == ["torch", "onnx", "onnx-int8"]
    assert embed1["onnx"]["sentences_per_s"] == 150.0  # the row with an error is not the best
    assert [embed1[b]["vs_torch"] for b in embed1] == [1.0, 1.5, 2.5]
    assert [(e["backend"], e["vs_torch"]) for e in summary["backends"]["embed32"]] == [("onnx-int8", None)]
    assert summary["best_by_workload"]["embed1"]["label"].startswith("onnx-int8, ")
    assert len({m["label"] for m in summary["memory"]}) == len(summary["memory"]) == 4


SMOKE_BACKENDS = ("torch", "onnx-int8")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # --http-threads 0 is invalid, so those rows' servers cannot start: the run must go on.
    argv = [sys.executable, "-m", "bench.run", "--duration", "3", "--repeat", "1", "--warmup", "0",
            "--backends", ",".join(SMOKE_BACKENDS), "--workers", "1", "--torch-threads", "auto",
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
    expected = sorted((b, w) for b in SMOKE_BACKENDS for w in WORKLOADS)
    assert sorted((r["config"]["backend"], r["workload"]) for r in good) == expected
    assert sorted((r["config"]["backend"], r["workload"]) for r in failed) == expected
    for row in failed:
        assert "HTTP_THREADS" in row["error"]
        assert "served_backend" not in row
    ceilings = {b: c["sentences_per_s"] for b, c in results["ceiling"].items()}
    assert set(ceilings) == set(SMOKE_BACKENDS) and all(rate > 0 for rate in ceilings.values())
    assert all(c["backend"] == b for b, c in results["ceiling"].items())
    for row in good:
        assert "error" not in row, row.get("error")
        assert row["served_backend"] == row["config"]["backend"]  # what the server's /info said
        if row["workload"] != "root":  # against the ceiling of the row's own backend
            assert row["ratios"]["vs_ceiling"] == pytest.approx(
                row["median"]["sentences_per_s"] / ceilings[row["config"]["backend"]], abs=0.001)
        m = row["median"]
        assert m["requests"] > 0 and m["non_2xx_total"] == 0
        assert m["sentences_per_s"] == pytest.approx(
            m["requests_per_s"] * WORKLOADS[row["workload"]].sentences_per_request, rel=0.01)
        assert 0 < m["latency_p50_ms"] <= m["latency_p90_ms"] <= m["latency_p99_ms"]
        assert m["server_cpu_cores"] > 0
        assert m["processes"] == 2  # master and one worker
        assert m["pss_mib"] > 0
        assert row["config"]["torch_threads"] == results["machine"]["available_cpus"]

    summary = results["summary"]
    assert "error" not in summary
    assert summary["memory"][0]["separate_processes_mib"] > 0
    assert {m["config"]["backend"] for m in summary["memory"]} == set(SMOKE_BACKENDS)
    assert set(summary["best_by_workload"]) == set(WORKLOADS)
    assert set(summary["backends"]) == set(WORKLOADS)
    for entries in summary["backends"].values():
        assert [e["backend"] for e in entries] == list(SMOKE_BACKENDS)
        torch = entries[0]["sentences_per_s"]
        assert [e["vs_torch"] for e in entries] == [round(e["sentences_per_s"] / torch, 2) for e in entries]

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
    for backend in SMOKE_BACKENDS:
        assert f"In-process ceiling, {backend}: **" in text
        assert f"| {backend}, 1 worker x " in text
    assert "## Memory" in text
    backends = text.split("## Backends", 1)[1].split("\n## ", 1)[0]
    assert "| workload | backend | best configuration | sentences/s | p99 ms | vs torch |" in backends
    assert sum(line.startswith("| embed1 | ") for line in backends.splitlines()) == len(SMOKE_BACKENDS)

    import matplotlib.image

    png = out / "smoke.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(png).shape[:2]
    assert height > 200 and width > 200
