"""The benchmark: its sweep, summary and results schema (bench/schema.py) on made-up numbers; that
no results file or machine record holds a secret; and the command end to end on a tiny scale:
baselines, one row per backend (torch and onnx-int8) plus a row per backend that fails on purpose,
every workload, each backend's in-process ceiling; its JSON (read back through the schema),
Markdown and PNG outputs exist and parse, each server ran the backend asked for, the failed rows
are recorded without losing the rest, and no server is left running. Nothing here asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedder.config import BACKEND_LABELS, Settings

from bench import stsb
from bench.report import markdown, summarize
from bench.run import BACKENDS, machine_info, parse_args, sweep
from bench.schema import Ceiling, Config, Machine, Results, Row, WrkRun
from bench.servers import ROOT
from bench.workloads import WORKLOADS, write_bodies


def test_post_bodies_cover_stsb(tmp_path):
    sentences = stsb.sentences()
    one = write_bodies(WORKLOADS["embed1"], sentences, tmp_path).read_text().splitlines()
    assert [json.loads(line)["inputs"] for line in one] == sentences
    many = [json.loads(line)["inputs"] for line in
            write_bodies(WORKLOADS["embed32"], sentences, tmp_path).read_text().splitlines()]
    assert all(len(inputs) == 32 for inputs in many)
    assert set(s for inputs in many for s in inputs) == set(sentences)
    assert write_bodies(WORKLOADS["root"], sentences, tmp_path) is None


def test_sweep_resolves_auto_and_drops_duplicates():
    args = parse_args(["--workers", "1,2,4", "--threads", "auto,1,2"])
    assert args.backends == list(BACKENDS) == list(BACKEND_LABELS)
    configs = sweep(args, cores=2)
    per_backend = [(1, 2), (1, 1), (2, 1), (2, 2), (4, 1), (4, 2)]
    assert [(c.backend, c.workers, c.threads) for c in configs] == [
        (b, w, t) for b in BACKENDS for w, t in per_backend]
    # The default is what a server runs with no EMBEDDER_* set: config.py's backend, as many
    # workers as cores, 1 thread each.
    assert [(c.backend, c.workers, c.threads) for c in configs if c.default] == [
        (Settings().backend_label, 2, 1)]
    assert parse_args(["--torch-threads", "auto,3"]).threads == ["auto", 3]  # the old name still works


def test_sweep_backends_flag():
    default = Settings().backend_label
    args = parse_args(["--backends", "onnx-int8,torch,torch", "--workers", "2", "--threads", "auto"])
    assert args.backends == ["onnx-int8", "torch"]
    configs = sweep(args, cores=2)
    assert [c.backend for c in configs] == ["onnx-int8", "torch"]
    assert sum(c.default for c in configs) == (default in args.backends)
    others = [b for b in BACKENDS if b != default]
    assert not any(c.default for c in sweep(parse_args(["--backends", ",".join(others)]), cores=2))
    for bad in ("tensorrt", "torch,onnx-fp16", ","):
        with pytest.raises(SystemExit):
            parse_args(["--backends", bad])


def _run(rate: float, errors: int = 0) -> WrkRun:
    return WrkRun(requests=int(rate * 10), duration_s=10.0, requests_per_s=rate, sentences_per_s=rate,
                  latency_mean_ms=12.0, latency_p50_ms=10.0, latency_p90_ms=15.0, latency_p99_ms=20.0,
                  latency_max_ms=30.0, non_2xx=errors, socket_errors=0,
                  socket_errors_detail={"connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0},
                  server_cpu_cores=1.0, host_cpu_busy_cores=1.5, pss_mib=500.0, private_mib=100.0, processes=2)


def _config(backend: str, workers: int = 1) -> Config:
    return Config(backend=backend, workers=workers, threads_setting="auto", threads=2,
                  http_threads_setting="default", http_threads=32, default=False)


def _row(backend: str, workload: str, rate: float, errors: int = 0, workers: int = 1) -> Row:
    row = Row("embedder", workload, _config(backend, workers))
    row.add([_run(rate, errors)], [])
    return row


def _ceiling(backend: str, *rates: float, error: str = "") -> Ceiling:
    ceiling = Ceiling(backend, threads=2, batch_size=128, sentences=2758)
    ceiling.add(rates, error)
    return ceiling


def _results(rows: list[Row], ceiling: dict[str, Ceiling], baselines: list[Row] = ()) -> Results:
    machine = Machine(host="test", cpu_model="", nproc=2, available_cpus=2, kernel="", memory_gib=1.0,
                      versions={"python": "3"}, git="", embedder_env={}, loadavg_start=[0.0, 0.0, 0.0])
    return Results(machine=machine, options={"warmup": 0, "repeat": 1, "interleave": True},
                   command="python -m bench.run", started="2026-01-01T00:00:00+0000", wrk="wrk",
                   workloads=dict(WORKLOADS), baselines=list(baselines), rows=rows, ceiling=ceiling)


def test_summary_compares_backends_and_their_own_ceilings():
    rows = [_row("torch", "embed1", 100.0), _row("onnx", "embed1", 150.0),
            _row("onnx", "embed1", 180.0, errors=1, workers=2),
            _row("onnx-int8", "embed1", 250.0), _row("onnx-int8", "embed32", 300.0)]
    results = _results(rows, {"torch": _ceiling("torch", 200.0), "onnx": _ceiling("onnx", error="exit 1"),
                              "onnx-int8": _ceiling("onnx-int8", 400.0)})
    summary = summarize(results)
    assert [r.ratios.get("vs_ceiling") for r in rows] == [0.5, None, None, 0.625, 0.75]
    assert summary["ceiling_sentences_per_s"] == {"torch": 200.0, "onnx-int8": 400.0}
    embed1 = {e["backend"]: e for e in summary["backends"]["embed1"]}
    assert list(embed1) == ["torch", "onnx", "onnx-int8"]
    assert embed1["onnx"]["sentences_per_s"] == 150.0  # the row with an error is not the best
    assert [embed1[b]["vs_torch"] for b in embed1] == [1.0, 1.5, 2.5]
    assert [(e["backend"], e["vs_torch"]) for e in summary["backends"]["embed32"]] == [("onnx-int8", None)]
    assert summary["best_by_workload"]["embed1"]["label"].startswith("onnx-int8, ")
    assert len({m["label"] for m in summary["memory"]}) == len(summary["memory"]) == 4


def test_schema_round_trips_through_json(tmp_path):
    flask = Row("flask", "root", None)
    flask.add([_run(30.0), _run(40.0), _run(35.0)], ["RuntimeError: wrk failed"])
    failed = Row("embedder", "root", _config("torch"))
    failed.add([], ["server did not start: x", "server did not start: x"])
    results = _results([_row("onnx", "root", 400.0), failed],
                       {"onnx": _ceiling("onnx", 200.0, 210.0, 190.0, error="exit 1")}, [flask])
    results.summary = summarize(results)
    assert flask.median.requests_per_s == 35.0 and flask.median.non_2xx_total == 0
    assert (failed.median, failed.error) == (None, "server did not start: x")
    assert results.ceiling["onnx"].sentences_per_s == 200.0

    results.save(tmp_path / "r.json")
    loaded = Results.load(tmp_path / "r.json")
    assert loaded == results
    text = markdown(loaded)
    assert "| Flask (1 process) (1 of 4 runs failed) | 35.0 |" in text
    assert "| root | torch, 1 worker x 2 threads | failed: server did not start: x |" in text
    data = json.loads((tmp_path / "r.json").read_text())
    data["rows"][0]["surprise"] = 1
    with pytest.raises(ValueError, match="unknown field"):
        Results.from_dict(data)
    del data["schema_version"]  # a file from before the schema
    with pytest.raises(ValueError, match="version 1"):
        Results.from_dict(data)


def test_results_never_hold_the_api_key():
    files = [p for p in (ROOT / "bench" / "results").rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert b"EMBEDDER_API_KEY" not in path.read_bytes(), path


def test_machine_info_leaves_secrets_out(monkeypatch):
    secret = "bench-test-secret-5b1e7c"
    monkeypatch.setenv("EMBEDDER_API_KEY", secret)
    monkeypatch.setenv("EMBEDDER_MAX_BATCH_SIZE", "16")
    text = json.dumps(machine_info(cores=2).to_dict())
    assert secret not in text and "EMBEDDER_API_KEY" not in text
    assert json.loads(text)["embedder_env"]["EMBEDDER_MAX_BATCH_SIZE"] == "16"  # other settings are kept


SMOKE_BACKENDS = ("torch", "onnx-int8")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # --http-threads 0 is invalid, so those rows' servers cannot start: the run must go on.
    argv = [sys.executable, "-m", "bench.run", "--duration", "3", "--repeat", "1", "--warmup", "0",
            "--backends", ",".join(SMOKE_BACKENDS), "--workers", "1", "--threads", "auto",
            "--http-threads", "0,default", "--wrk-threads", "2", "--connections", "4",
            "--out-dir", str(out), "--name", "smoke"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    return done, out


@pytest.mark.integration
def test_exit_status_reports_the_failed_row(run):
    done, _ = run
    assert done.returncode == 1, done.stderr[-5000:]
    assert "row(s) failed" in done.stderr


@pytest.mark.integration
def test_json_has_every_measurement(run):
    done, out = run
    results = Results.load(out / "smoke.json")  # the schema reads back what the runner wrote
    assert results.complete is True
    assert results.machine.available_cpus >= 1

    baselines = {b.server: b for b in results.baselines}
    assert set(baselines) == {"flask", "caddy"}
    for row in baselines.values():
        assert row.error is None, row.error
        assert row.median.requests > 0
        assert row.median.non_2xx_total == 0
        assert row.median.pss_mib > 0
    assert baselines["caddy"].median.processes == 3  # caddy and two Flask servers

    good = [r for r in results.rows if r.config.http_threads_setting == "default"]
    failed = [r for r in results.rows if r.config.http_threads_setting == 0]
    expected = sorted((b, w) for b in SMOKE_BACKENDS for w in WORKLOADS)
    assert sorted((r.config.backend, r.workload) for r in good) == expected
    assert sorted((r.config.backend, r.workload) for r in failed) == expected
    for row in failed:
        assert row.median is None and not row.runs
        assert "HTTP_THREADS" in row.error
        assert row.served_backend is None
    ceilings = {b: c.sentences_per_s for b, c in results.ceiling.items()}
    assert set(ceilings) == set(SMOKE_BACKENDS) and all(rate > 0 for rate in ceilings.values())
    assert all(c.backend == b and not c.errors for b, c in results.ceiling.items())
    for row in good:
        assert row.error is None and not row.errors, row.errors
        assert row.served_backend == row.config.backend  # what the server's /info said
        if row.workload != "root":  # against the ceiling of the row's own backend
            assert row.ratios["vs_ceiling"] == pytest.approx(
                row.median.sentences_per_s / ceilings[row.config.backend], abs=0.001)
        m = row.median
        assert m.requests > 0 and m.non_2xx_total == 0
        assert m.sentences_per_s == pytest.approx(
            m.requests_per_s * WORKLOADS[row.workload].sentences_per_request, rel=0.01)
        assert 0 < m.latency_p50_ms <= m.latency_p90_ms <= m.latency_p99_ms
        assert m.server_cpu_cores > 0
        assert m.processes == 2  # master and one worker
        assert m.pss_mib > 0
        assert row.config.threads == results.machine.available_cpus  # /info's threads_per_worker

    summary = results.summary
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
    pids = {pid for row in results.baselines + results.rows for pid in row.server_pids}
    assert pids
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()
             and any(word in Path(f"/proc/{pid}/cmdline").read_bytes()
                     for word in (b"gunicorn", b"baseline_flask", b"caddy"))]
    assert not alive


@pytest.mark.integration
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
