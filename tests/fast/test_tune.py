"""The tuner's pure parts (bench/tools/tune.py) on made-up results: the plan, the fidelity figures,
the recommendation rule, the table, and the env file as the tuner writes it and as `make serve`
and a POSIX shell read it. Nothing here starts a server: tests/integration/test_tune_run.py runs
the tuner for real."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from bench.harness.servers import ROOT
from bench.tools import tune
from bench.tools.stsb_eval import GATES
from bench.tools.tune import Candidate, Fidelity, Result
from embedder.config import Settings

MACHINE = {"host": "box", "cpu": "Some CPU", "cores": 2, "memory_gib": 8.0, "flags": "avx2 amx_bf16",
           "date": "2026-12-07 10:00 UTC"}


def result(backend: str, workers: int, threads: int, rate: float | None, *, worst: float = 1.0,
           diff: float = 0.0, default: bool = False, failed: int = 0, error: str | None = None) -> Result:
    candidate = Candidate(backend, workers, threads, default=default)
    gate = GATES[candidate.precision].min_sentence_cosine
    return Result(candidate, sentences_per_s=rate, p99_ms=None if rate is None else 100.0,
                  pss_mib=None if rate is None else 300.0, failed_requests=failed,
                  fidelity=None if error else Fidelity(511, worst, diff, gate, worst >= gate), error=error)


def measured() -> list[Result]:
    return [
        result("onnx", 2, 1, 350.0, default=True),
        result("onnx", 1, 2, 300.0),
        result("torch", 2, 1, 200.0, diff=2e-6),
        result("openvino", 2, 1, 380.0, worst=0.99999, diff=4e-5),   # float32, passes, not exact
        result("onnx-int8", 2, 1, 900.0, worst=0.90),               # fails its gate (0.95)
        result("openvino-bf16", 2, 1, 800.0, worst=0.99993, diff=3e-3),
        result("openvino-bf16", 1, 2, 1000.0, worst=0.99993, diff=3e-3, failed=4),  # failed requests
        result("torch", 1, 2, None, error="RuntimeError: gunicorn exited with 3"),
    ]


def test_layouts_parse_and_fill_the_cores():
    assert tune.parse_layouts(" 2x1, 1X2,2x1 ") == [(2, 1), (1, 2)]
    for bad in ("2", "x1", "0x2", "2x-1", "two x one", ""):
        with pytest.raises(ValueError):
            tune.parse_layouts(bad)
    assert tune.default_layouts(2) == [(2, 1), (1, 2)]
    assert tune.default_layouts(1) == [(1, 1)]
    assert tune.default_layouts(3) == [(3, 1)]
    assert tune.default_layouts(16) == [(16, 1), (8, 2), (4, 4)]


def test_plan_puts_the_reference_first_and_always_measures_the_default():
    planned = tune.plan(["torch", "onnx-int8"], [(1, 2)], cores=2)
    assert [(c.backend, c.layout, c.default) for c in planned] == [
        (Settings().backend_label, "2x1", True), ("torch", "1x2", False), ("onnx-int8", "1x2", False)]
    planned = tune.plan(["openvino", "onnx"], [(2, 1), (1, 2)], cores=2)
    assert [(c.backend, c.layout) for c in planned] == [("onnx", "2x1"), ("onnx", "1x2"),
                                                        ("openvino", "2x1"), ("openvino", "1x2")]
    assert [c.default for c in planned] == [True, False, False, False]  # not added twice
    assert [(c.backend, c.layout, c.default) for c in tune.plan(["torch"], [(1, 2)], 2, with_default=False)] == [
        ("torch", "1x2", False)]


def test_fidelity_subset_and_comparison():
    sentences = tune.fidelity_sentences()
    assert len(sentences) == 511 and len(set(sentences)) == 511
    rng = np.random.default_rng(0)
    reference = {s: rng.normal(size=8) for s in sentences[:20]}
    same = tune.compare({s: v * 3.0 for s, v in reference.items()}, reference, "float32")  # scale is not a change
    assert (same.worst_cosine, same.passed, same.exact, same.sentences) == (1.0, True, True, 20)
    assert same.max_abs_diff < 1e-12
    moved = dict(reference)
    first = sentences[0]
    moved[first] = reference[first] + rng.normal(size=8) * 0.05 * np.linalg.norm(reference[first])
    bf16 = tune.compare(moved, reference, "bfloat16")
    assert bf16.worst_cosine < 1.0 and bf16.min_cosine == GATES["bfloat16"].min_sentence_cosine
    assert not bf16.exact and bf16.max_abs_diff > tune.EXACT_MAX_DIFF
    assert tune.compare(moved, reference, "int8").passed  # the same vectors pass the looser gate
    assert bf16.passed == (bf16.worst_cosine >= GATES["bfloat16"].min_sentence_cosine)


def test_the_pick_is_the_fastest_that_passed_and_the_exact_one_the_fastest_float32():
    results = measured()
    choice = tune.choose(results)
    # int8 (gate failed) and the bf16 1x2 row (failed requests) are faster but not eligible.
    assert (choice.pick.candidate.backend, choice.pick.candidate.layout) == ("openvino-bf16", "2x1")
    # openvino float32 is faster than onnx but 4e-5 from the default's vectors: not exact.
    assert (choice.exact.candidate.backend, choice.exact.candidate.layout) == ("onnx", "2x1")
    assert choice.default is results[0] and choice.notes == []
    assert choice.gain(choice.pick) == pytest.approx(800 / 350 - 1)
    assert choice.gain(choice.exact) == 0
    results[1].sentences_per_s = 364.0  # onnx 1 x 2 now beats the default layout
    choice = tune.choose(results)
    assert choice.exact is results[1] and choice.pick.candidate.backend == "openvino-bf16"
    assert "best exact float32: onnx float32, 1 x 2: 364.0 sentences/s, p99 100 ms, PSS 300 MiB; +4 % over the " \
           "default" in tune.summary(choice, 511)
    assert "#EMBEDDER_WORKERS=1" in tune.env_text(choice, MACHINE, "quiet").splitlines()


def test_a_minimum_cosine_leaves_out_what_passed_only_its_own_looser_gate():
    results = [result("onnx", 2, 1, 300.0, default=True), result("onnx-int8", 2, 1, 900.0, worst=0.97),
               result("openvino-bf16", 2, 1, 600.0, worst=0.9999)]
    assert tune.choose(results).pick is results[1]  # int8 passes its own gate (0.95)
    assert tune.choose(results, min_cosine=0.999).pick is results[2]
    assert tune.choose(results, min_cosine=1.0).pick is results[0]


def test_nothing_to_pick_and_no_default():
    choice = tune.choose([result("onnx-int8", 2, 1, 900.0, worst=0.5),
                          result("torch", 2, 1, None, error="boom")])
    assert choice.pick is None and choice.exact is None and choice.gain(None) is None
    assert any("--no-default" in n for n in choice.notes) and any("nothing to recommend" in n for n in choice.notes)
    with pytest.raises(ValueError):
        tune.env_text(choice, MACHINE, "quiet")


def test_table_and_summary_say_what_was_measured_and_chosen():
    results = measured()
    choice = tune.choose(results)
    lines = tune.table(results, choice).splitlines()
    assert len(lines) == 2 + len(results)
    rows = dict(zip(((r.candidate.backend, r.candidate.layout) for r in results), lines[2:]))
    assert "**pick**" in rows[("openvino-bf16", "2x1")] and "+129 %" in rows[("openvino-bf16", "2x1")]
    assert "default" in rows[("onnx", "2x1")] and "best exact float32" in rows[("onnx", "2x1")]
    assert "FAIL (< 0.95)" in rows[("onnx-int8", "2x1")]
    assert "4 failed requests" in rows[("openvino-bf16", "1x2")]
    assert "failed: RuntimeError: gunicorn exited with 3" in rows[("torch", "1x2")]
    assert "| openvino | bfloat16 | 2 × 1 | 800.0 |" in rows[("openvino-bf16", "2x1")]
    text = "\n".join(tune.summary(choice, 511))
    assert "default: onnx float32, 2 x 1: 350.0 sentences/s" in text
    assert "pick: openvino bfloat16, 2 x 1: 800.0 sentences/s" in text and "+129 % sentences/s over the default" in text
    assert "worst cosine 0.999930" in text and "511 STS-B test sentences" in text
    assert "best exact float32: the default" in text


def test_env_file_round_trip_and_what_reads_it(tmp_path):
    choice = tune.choose(measured())
    text = tune.env_text(choice, MACHINE, "load average 0.50")
    path = tmp_path / "embedder.env"
    values = tune.write_env(path, text)
    expected = {"EMBEDDER_BACKEND": "openvino", "EMBEDDER_PRECISION": "bfloat16", "EMBEDDER_WORKERS": "2",
                "EMBEDDER_THREADS": "1"}
    assert values == tune.read_env(path) == expected
    settings = Settings.from_env(values)
    assert (settings.backend_label, settings.workers, settings.threads) == ("openvino-bf16", 2, 1)
    lines = path.read_text().splitlines()
    header = lines[:lines.index("EMBEDDER_BACKEND=openvino")]
    assert header and all(line.startswith("# ") for line in header)
    for needed in ("box, Some CPU, 2 available cores", "avx2 amx_bf16", "2026-12-07", "800.0 sentences/s",
                   "+129 %", "worst cosine 0.999930", "load average 0.50"):
        assert needed in "\n".join(header), needed
    # The best exact float32 configuration, commented out: a comment to every reader.
    assert lines[-4:] == ["#EMBEDDER_BACKEND=onnx", "#EMBEDDER_PRECISION=float32", "#EMBEDDER_WORKERS=2",
                          "#EMBEDDER_THREADS=1"]
    assert "Best exact float32" in lines[-5] and lines[-5].endswith("(the default)")
    assert all(line.isascii() for line in lines)
    # A POSIX shell reads it as make serve does (set -a; . file).
    shell = subprocess.run(["sh", "-c", 'set -a; . "$1"; set +a; env', "sh", str(path)],
                           capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, check=True)
    assert {k: v for k, v in (line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
            if k.startswith("EMBEDDER_")} == expected


def test_a_bad_env_file_is_refused_and_not_written(tmp_path):
    path = tmp_path / "embedder.env"
    with pytest.raises(ValueError, match="EMBEDDER_WORKERS"):
        tune.write_env(path, "# header\nEMBEDDER_WORKERS=many\n")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        tune.write_env(path, "EMBEDDER_BACKEND\n")
    assert not path.exists()


@pytest.fixture
def fake_venv(tmp_path):
    """A venv whose gunicorn prints its EMBEDDER_* environment, up to date for make's install rule."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    gunicorn = venv / "bin" / "gunicorn"
    gunicorn.write_text('#!/bin/sh\nenv | grep "^EMBEDDER_" | sort\necho "args: $*"\n')
    gunicorn.chmod(0o755)
    (venv / ".installed").touch()
    return venv


def make_serve(venv, env_file, **env) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDDER_", "MAKE", "MFLAGS"))}
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "serve", f"VENV={venv}", f"ENV_FILE={env_file}"],
                          capture_output=True, text=True, env={**base, **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "args: -c gunicorn.conf.py wsgi:app" in done.stdout
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("EMBEDDER_"))


def test_make_serve_takes_the_env_file_and_the_environment_wins(fake_venv, tmp_path):
    path = tmp_path / "embedder.env"
    tune.write_env(path, tune.env_text(tune.choose(measured()), MACHINE, "quiet"))
    assert make_serve(fake_venv, path) == tune.read_env(path)
    # A variable already set wins over the file; the file fills in the rest.
    assert make_serve(fake_venv, path, EMBEDDER_WORKERS="1", EMBEDDER_BIND="127.0.0.1:9") == {
        **tune.read_env(path), "EMBEDDER_WORKERS": "1", "EMBEDDER_BIND": "127.0.0.1:9"}
    # No file: make serve runs as before.
    assert make_serve(fake_venv, tmp_path / "absent.env") == {}
