"""The benchmark: its sweep, summary and results schema (bench/sweep/schema.py) on made-up numbers;
that no results file or machine record holds a secret; the fidelity gate. Nothing here starts a
server: tests/integration/test_bench_run.py runs the command end to end on a tiny scale."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.harness import stsb
from bench.harness.servers import ROOT
from bench.sweep.report import markdown, summarize
from bench.sweep.run import (
    BACKENDS,
    DEFAULT_BACKENDS,
    default_workers_list,
    limits_needed,
    machine_info,
    parse_args,
    plan,
    sweep,
)
from bench.sweep.schema import SCHEMA_VERSION, Config, Limit, Machine, Memory, Results, Row, WrkRun
from bench.sweep.workloads import GROUP_SIZES, WORKLOADS, joined_sentences, workload_sentences, write_bodies
from bench.tools.ceiling import sorted_batches, token_stats
from embedder.backends.openvino_backend import native_bf16
from embedder.config import BACKEND_LABELS, Settings


def test_post_bodies_cover_stsb(tmp_path):
    sentences = stsb.sentences()
    one = write_bodies(WORKLOADS["embed1"], sentences, tmp_path).read_text().splitlines()
    assert [json.loads(line)["inputs"] for line in one] == sentences
    many = [json.loads(line)["inputs"] for line in
            write_bodies(WORKLOADS["embed32"], sentences, tmp_path).read_text().splitlines()]
    assert all(len(inputs) == 32 for inputs in many)
    assert set(s for inputs in many for s in inputs) == set(sentences)
    assert write_bodies(WORKLOADS["root"], sentences, tmp_path) is None
    assert workload_sentences(WORKLOADS["embed1"]) == workload_sentences(WORKLOADS["embed32"]) == sentences


def test_long_tail_bodies_are_single_joined_sentences(tmp_path):
    sentences = stsb.sentences()
    joined = joined_sentences()
    assert joined == joined_sentences() == workload_sentences(WORKLOADS["embed1long"])  # deterministic
    assert "embed1long" in parse_args([]).workloads  # a default workload
    # Every STS-B sentence once, in groups of 1, 2 and 3 consecutive sentences.
    assert len(joined) == len(sentences) * len(GROUP_SIZES) // sum(GROUP_SIZES) + 1
    assert sorted(" ".join(joined).split()) == sorted(" ".join(sentences).split())
    assert {1, 2, 3} <= set(GROUP_SIZES) <= {1, 2, 3}
    # Shuffled (the file groups sentences by genre), but not in file order.
    assert joined[:3] != [sentences[0], " ".join(sentences[1:3]), sentences[3]]
    bodies = [json.loads(line) for line in
              write_bodies(WORKLOADS["embed1long"], joined, tmp_path).read_text().splitlines()]
    assert [b["inputs"] for b in bodies] == joined
    assert all(isinstance(b["inputs"], str) for b in bodies)  # one input per request
    # A long tail: words per input (tokens need the model; the limit records those).
    words = sorted(len(text.split()) for text in joined)
    median, longest = words[len(words) // 2], words[-1]
    assert longest >= 4 * median and longest >= 60
    assert sum(w >= 3 * median for w in words) >= len(words) // 100


def test_limit_batches_hold_similar_lengths():
    texts = [f"t{i}" for i in range(100)]
    lengths = [(i * 37) % 100 for i in range(100)]
    batches = sorted_batches(texts, lengths, 16)
    assert batches == sorted_batches(texts, lengths, 16)  # a fixed order
    assert sorted(t for b in batches for t in b) == sorted(texts) and len(batches) == 7
    length = dict(zip(texts, lengths))
    assert all(max(length[t] for t in b) - min(length[t] for t in b) < 16 for b in batches)
    assert [min(length[t] for t in b) for b in batches] != sorted(min(length[t] for t in b) for b in batches)
    assert token_stats([5, 1, 3, 2, 4]) == {"min": 1, "median": 3, "p90": 5, "p99": 5, "max": 5, "mean": 3.0}


def test_default_workers_include_1_2_and_4():
    for cores in (1, 2, 3, 8, 32):
        assert {1, 2, 4} <= {int(w) for w in default_workers_list(cores).split(",")}


def test_plan_runs_the_default_on_every_workload_and_the_rest_on_the_sweep_workloads():
    args = parse_args(["--workers", "1,2,4", "--threads", "auto", "--sweep-workloads", "embed1long"])
    targets = plan(args, sweep(args, cores=2))
    baselines = [t for t in targets if t.config is None]
    assert [(t.server, list(t.rows)) for t in baselines] == [("flask", ["root", "embed1", "embed1long"]),
                                                             ("caddy", ["root", "embed1", "embed1long"])]
    embedder = [t for t in targets if t.config is not None]
    assert len(embedder) == 9
    for target in embedder:
        assert list(target.rows) == (list(WORKLOADS) if target.config.default else ["embed1long"])
    assert limits_needed(targets) == {"onnx": ["stsb", "stsb-joined"], "onnx-int8": ["stsb-joined"],
                                      "torch": ["stsb-joined"]}
    only_root = parse_args(["--workloads", "root", "--backends", "torch", "--no-baselines"])
    assert limits_needed(plan(only_root, sweep(only_root, cores=2))) == {}
    for bad in (["--workloads", "root", "--sweep-workloads", "embed1"], ["--sweep-workloads", "embed2"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_sweep_resolves_auto_and_drops_duplicates():
    args = parse_args(["--workers", "1,2,4", "--threads", "auto,1,2"])
    assert list(BACKENDS) == [label for label in BACKEND_LABELS if label != "openvino-bf16" or native_bf16()]
    assert args.backends == list(DEFAULT_BACKENDS) == ["onnx", "onnx-int8", "torch"]
    configs = sweep(args, cores=2)
    per_backend = [(1, 2), (1, 1), (2, 1), (2, 2), (4, 1), (4, 2)]
    assert [(c.backend, c.workers, c.threads) for c in configs] == [
        (b, w, t) for b in DEFAULT_BACKENDS for w, t in per_backend]
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


def _run(rate: float, errors: int = 0, pss: float = 500.0, p99: float = 20.0, cpu: float = 1.0) -> WrkRun:
    return WrkRun(requests=int(rate * 10), duration_s=10.0, requests_per_s=rate, sentences_per_s=rate,
                  latency_mean_ms=12.0, latency_p50_ms=10.0, latency_p90_ms=15.0, latency_p99_ms=p99,
                  latency_max_ms=30.0, non_2xx=errors, socket_errors=0,
                  socket_errors_detail={"connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0},
                  server_cpu_cores=cpu, host_cpu_busy_cores=1.5, pss_mib=pss, private_mib=100.0, processes=2)


def _config(backend: str, workers: int = 1, default: bool = False, threads: int = 2) -> Config:
    return Config(backend=backend, workers=workers, threads_setting="auto", threads=threads,
                  http_threads_setting="default", http_threads=32, default=default)


def _row(backend: str, workload: str, rate: float, errors: int = 0, workers: int = 1, pss: float = 500.0,
         default: bool = False, p99: float = 20.0) -> Row:
    row = Row("embedder", workload, _config(backend, workers, default))
    row.add([_run(rate, errors, pss, p99)], [])
    return row


def _baseline(server: str, workload: str, rate: float, pss: float = 600.0) -> Row:
    row = Row(server, workload, None)
    row.add([_run(rate, pss=pss)], [])
    return row


def _limit(backend: str, *rates: float, sentence_set: str = "stsb", error: str = "") -> Limit:
    limit = Limit(backend, sentence_set, processes=2, threads=1, batch_size=32, sentences=2758,
                  tokens={"min": 5, "median": 12, "p90": 24, "p99": 38, "max": 46, "mean": 14.2})
    limit.add(rates, error)
    return limit


def _results(rows: list[Row], limits: dict[str, dict[str, Limit]], baselines: list[Row] = ()) -> Results:
    machine = Machine(host="test", cpu_model="", nproc=2, available_cpus=2, kernel="", memory_gib=1.0,
                      versions={"python": "3"}, git="", embedder_env={}, loadavg_start=[0.0, 0.0, 0.0])
    return Results(machine=machine, options={"warmup": 0, "repeat": 1, "interleave": True},
                   command="python -m bench.sweep", started="2026-01-01T00:00:00+0000", wrk="wrk",
                   workloads=dict(WORKLOADS), baselines=list(baselines), rows=rows, limits=limits)


def test_summary_compares_backends_and_their_own_limits():
    rows = [_row("torch", "embed1", 100.0), _row("onnx", "embed1", 150.0),
            _row("onnx", "embed1", 180.0, errors=1, workers=2),
            _row("onnx-int8", "embed1", 250.0), _row("onnx-int8", "embed32", 300.0),
            _row("onnx-int8", "embed1long", 100.0)]
    results = _results(rows, {"torch": {"stsb": _limit("torch", 200.0)},
                              "onnx": {"stsb": _limit("onnx", error="exit 1")},
                              "onnx-int8": {"stsb": _limit("onnx-int8", 400.0),
                                            "stsb-joined": _limit("onnx-int8", 160.0, sentence_set="stsb-joined")}})
    summary = summarize(results)
    # Each row against its own backend's limit on its own workload's sentence set.
    assert [r.ratios.get("vs_limit") for r in rows] == [0.5, None, None, 0.625, 0.75, 0.625]
    assert summary["limits"] == {"torch": {"embed1": 200.0, "embed32": 200.0},
                                 "onnx-int8": {"embed1": 400.0, "embed32": 400.0, "embed1long": 160.0}}
    embed1 = {e["backend"]: e for e in summary["backends"]["embed1"]}
    assert list(embed1) == ["torch", "onnx", "onnx-int8"]
    assert embed1["onnx"]["sentences_per_s"] == 150.0  # the row with an error is not the best
    assert [embed1[b]["vs_torch"] for b in embed1] == [1.0, 1.5, 2.5]
    assert [embed1[b]["vs_limit"] for b in embed1] == [0.5, None, 0.625]
    assert embed1["torch"]["cpu_ms_per_request"] == 10.0  # 1 core / 100 req/s
    assert [(e["backend"], e["vs_torch"]) for e in summary["backends"]["embed32"]] == [("onnx-int8", None)]
    assert summary["best_by_workload"]["embed1"]["label"].startswith("onnx-int8, ")
    assert len({m["label"] for m in summary["memory"]}) == len(summary["memory"]) == 4


def _target_results(onnx4_pss: float = 650.0) -> Results:
    """A run with everything issue 13's targets need: baselines and the default on root and
    embed1long, onnx and torch at 1, 2 and 4 workers, the onnx limit on the joined sentences."""
    baselines = [_baseline("flask", "root", 30.0, pss=600.0), _baseline("caddy", "root", 45.0, pss=1000.0),
                 _baseline("flask", "embed1long", 20.0, pss=620.0), _baseline("flask", "embed1", 25.0)]
    rows = [_row("onnx", "root", 510.0, workers=2, default=True, p99=90.0, pss=900.0),
            _row("onnx", "embed1long", 150.0, workers=2, default=True, p99=300.0, pss=950.0),
            _row("onnx", "embed1", 200.0, workers=2, default=True)]
    for backend, pss in (("onnx", {1: 600.0, 4: onnx4_pss}), ("torch", {1: 700.0, 2: 720.0, 4: 800.0})):
        for workers, value in pss.items():
            rows.append(_row(backend, "embed1long", 100.0, workers=workers, pss=value))
    # A second 1-worker onnx configuration (1 thread): the memory table keeps the 'auto' one.
    extra = Row("embedder", "embed1long", Config("onnx", 1, 1, 1, "default", 32, False))
    extra.add([_run(90.0, pss=9999.0)], [])
    rows.append(extra)
    memory = Memory(pss_mib=950.0, private_mib=300.0, processes=3,
                    pss_mib_by_pid={"10": 350.0, "11": 300.0, "12": 300.0},
                    rss_mib_by_pid={"10": 400.0, "11": 500.0, "12": 500.0}, root_pids=[10])
    rows[1].memory_last_run = memory
    return _results(rows, {"onnx": {"stsb-joined": _limit("onnx", 200.0, sentence_set="stsb-joined"),
                                    "stsb": _limit("onnx", 250.0)}},
                    baselines)


def test_targets_are_computed_from_the_results():
    results = _target_results()
    summary = results.summary = summarize(results)
    targets = {t["id"]: t for t in summary["targets"]}
    assert list(targets) == ["root_vs_flask", "root_p99_ms", "root_errors", "embed1_vs_flask",
                             "embed1_errors", "embed1_vs_limit", "embed1long_vs_flask",
                             "embed1long_errors", "embed1long_vs_limit", "pss_many_over_one",
                             "pss_one_vs_other"]
    assert (targets["embed1_vs_flask"]["value"], targets["embed1_vs_limit"]["value"]) == (8.0, 0.8)
    assert (targets["root_vs_flask"]["value"], targets["root_vs_flask"]["pass"]) == (17.0, True)
    assert (targets["root_p99_ms"]["value"], targets["root_p99_ms"]["pass"]) == (90.0, True)
    assert (targets["root_errors"]["value"], targets["root_errors"]["pass"]) == (0, True)
    assert (targets["embed1long_vs_flask"]["value"], targets["embed1long_vs_flask"]["pass"]) == (7.5, True)
    assert (targets["embed1long_vs_limit"]["value"], targets["embed1long_vs_limit"]["pass"]) == (0.75, True)
    assert (targets["pss_many_over_one"]["value"], targets["pss_many_over_one"]["pass"]) == (1.08, True)
    assert (targets["pss_one_vs_other"]["value"], targets["pss_one_vs_other"]["pass"]) == (0.86, True)
    assert "17.00x (510.0 vs 30.0 sentences/s)" == targets["root_vs_flask"]["measured"]

    matrix = summary["memory_by_workers"]
    assert {b: sorted(cells) for b, cells in matrix.items()} == {"onnx": ["1", "2", "4"],
                                                                 "torch": ["1", "2", "4"]}
    assert matrix["onnx"]["1"]["pss_mib"] == 600.0  # threads 'auto', not the 1-thread configuration
    assert matrix["onnx"]["2"]["label"].endswith("(default)")
    assert (matrix["onnx"]["2"]["workload"], matrix["onnx"]["2"]["pss_mib"]) == ("embed1long", 950.0)
    assert (matrix["onnx"]["2"]["master_pss_mib"], matrix["onnx"]["2"]["worker_pss_mib_mean"]) == (350.0, 300.0)
    default_memory = next(m for m in summary["memory"] if m["config"]["default"])
    assert default_memory["separate_processes_mib"] == 1240.0  # 2 x Flask's under embed1long
    assert default_memory["pss_mib_peak"] == 950.0

    text = markdown(results)
    section = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
    assert section.count("**pass**") == 11 and "FAIL" not in section
    assert "| GET /: default ≥ 16x the single Flask server | 17.00x (510.0 vs 30.0 sentences/s) | **pass** |" \
        in section
    assert text.index("## Targets") < text.index("## GET / against the original setups") \
        < text.index("## `embed1long` against the original setups") < text.index("## Sweep")
    assert "| in-process sorted limit" not in text and "## In-process sorted limit" in text
    assert "| onnx | stsb-joined (`embed1long`) | 2,758 | 5 / 12 / 24 / 38 / 46 | 2 x 1 | 32 | **200.0** |" in text
    memory = text.split("## Memory", 1)[1]
    assert "| backend | 1 worker | 2 workers | 4 workers |" in memory
    assert "| onnx | **600** (`embed1long`) | **950** (master 350, worker 300, `embed1long`) | **650** " in memory
    assert "CPU ms/req" in text
    sweep_table = text.split("## Sweep", 1)[1]
    assert "| embed1long | onnx, 2 workers x 2 threads (default) | 150.0 | 150.0 |" in sweep_table
    assert "| 1.00 | 6.7 | 1.50 | 950 |" in sweep_table  # server CPU, CPU ms/req, host CPU, PSS


def test_targets_fail_and_go_unmeasured():
    results = _target_results(onnx4_pss=900.0)
    results.rows[0].median.latency_p99_ms = 150.0
    results.baselines = [b for b in results.baselines if b.workload == "root"]  # no Flask on embed1long
    results.limits = {}
    results.summary = summarize(results)
    targets = {t["id"]: t for t in results.summary["targets"]}
    assert targets["root_p99_ms"]["pass"] is False
    assert targets["pss_many_over_one"]["value"] == 1.5 and targets["pss_many_over_one"]["pass"] is False
    for name in ("embed1_vs_flask", "embed1_vs_limit", "embed1long_vs_flask", "embed1long_vs_limit"):
        assert targets[name]["pass"] is None and targets[name]["measured"].startswith("not measured")
    text = markdown(results)
    # In the targets table (p99, 4 workers' memory), and the memory section (4 workers' memory).
    assert text.count("**FAIL**") == 2 + 1 and text.count("| not measured |") == 4


def test_schema_round_trips_through_json(tmp_path):
    flask = Row("flask", "root", None)
    flask.add([_run(30.0), _run(40.0), _run(35.0)], ["RuntimeError: wrk failed"])
    failed = Row("embedder", "root", _config("torch"))
    failed.add([], ["server did not start: x", "server did not start: x"])
    results = _results([_row("onnx", "root", 400.0), failed],
                       {"onnx": {"stsb": _limit("onnx", 200.0, 210.0, 190.0, error="exit 1")}}, [flask])
    results.summary = summarize(results)
    assert flask.median.requests_per_s == 35.0 and flask.median.non_2xx_total == 0
    assert (failed.median, failed.error) == (None, "server did not start: x")
    assert results.limits["onnx"]["stsb"].sentences_per_s == 200.0

    results.save(tmp_path / "r.json")
    loaded = Results.load(tmp_path / "r.json")
    assert loaded == results
    full = _target_results()
    full.summary = summarize(full)
    full.save(tmp_path / "full.json")
    assert Results.load(tmp_path / "full.json") == full
    text = markdown(loaded)
    assert "| Flask (1 process) (1 of 4 runs failed) | 35.0 |" in text
    assert "| root | torch, 1 worker x 2 threads | failed: server did not start: x |" in text
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 3
    data["rows"][0]["surprise"] = 1
    with pytest.raises(ValueError, match="unknown field"):
        Results.from_dict(data)
    del data["schema_version"]  # a file from before the schema
    with pytest.raises(ValueError, match="version 1"):
        Results.from_dict(data)
    data["schema_version"] = 2  # one ceiling per backend: not read
    with pytest.raises(ValueError, match="version 2"):
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


def test_the_fidelity_gate_sees_one_broken_vector():
    """What a corpus score hides: one sentence's vector turned away fails the gate on its own."""
    from bench.tools.stsb_eval import MIN_SENTENCE_COSINE, fidelity

    rng = np.random.default_rng(0)
    reference = {f"s{i}": rng.normal(size=8) for i in range(100)}
    vectors = {name: v + rng.normal(scale=0.01, size=8) for name, v in reference.items()}
    assert fidelity(vectors, reference)["below_min_cosine"] == 0
    vectors["s42"] = -reference["s42"] * 0.3 + rng.normal(size=8)
    report = fidelity(vectors, reference)
    assert report["below_min_cosine"] == 1 and report["worst_sentence"] == "s42"
    assert report["worst_cosine"] < MIN_SENTENCE_COSINE
