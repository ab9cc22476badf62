"""bench/results/ is named one way (bench/README.md): full sweep runs are
``runs/<YYYY-MM-DD>-<host-label>.{json,md,png}``; each before/after comparison is a folder
``compare/<YYYY-MM-DD>-<change>/`` holding one README.md, one run.sh and only
``before-<round>.{json,md}`` / ``after-<round>.{json,md}`` besides; each several-models run
(``python -m bench.tools.models``) is a folder ``models/<YYYY-MM-DD>-<host-label>/`` holding
exactly README.md and results.json."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from bench.harness.servers import ROOT

RESULTS = ROOT / "bench" / "results"
DATE = r"\d{4}-\d{2}-\d{2}"
SLUG = r"[a-z0-9]+(?:-[a-z0-9]+)*"
RUN = re.compile(rf"{DATE}-[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*\.(?:json|md|png)")
#: <change> says what changed; "before-after" says nothing (the old names ended so).
COMPARISON = re.compile(rf"{DATE}-(?!.*before-after$){SLUG}")
SIDE = re.compile(r"(?:before|after)-[A-Za-z0-9]+\.(?:json|md)")


def comparisons() -> list[Path]:
    return sorted((RESULTS / "compare").iterdir())


def test_results_hold_only_runs_compare_and_nothing_loose():
    assert sorted(p.name for p in RESULTS.iterdir()) == ["compare", "models", "runs"]


@pytest.mark.parametrize("folder", sorted((RESULTS / "models").iterdir()), ids=lambda p: p.name)
def test_every_models_run_is_a_readme_and_its_results(folder):
    assert folder.is_dir() and re.fullmatch(rf"{DATE}-{SLUG}", folder.name), f"{folder}: expected <YYYY-MM-DD>-<label>/"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "results.json"]


def test_every_run_is_date_label_ext():
    files = sorted((RESULTS / "runs").iterdir())
    assert files
    for path in files:
        assert path.is_file() and RUN.fullmatch(path.name), f"{path}: expected <YYYY-MM-DD>-<label>.(json|md|png)"


@pytest.mark.parametrize("folder", comparisons(), ids=lambda p: p.name)
def test_every_comparison_has_readme_run_sh_and_before_after_only(folder):
    assert folder.is_dir() and COMPARISON.fullmatch(folder.name), f"{folder}: expected <YYYY-MM-DD>-<change>/"
    names = sorted(p.name for p in folder.iterdir())
    assert names.count("README.md") == 1 and names.count("run.sh") == 1, names
    results = [n for n in names if n not in ("README.md", "run.sh")]
    assert results and all(SIDE.fullmatch(n) for n in results), (
        f"{folder}: only before-<round>.(json|md) / after-<round>.(json|md) besides README.md and run.sh: {results}")
    for path in folder.iterdir():
        assert path.is_file(), f"{path}: no subfolders"
    run_sh = folder / "run.sh"
    assert os.access(run_sh, os.X_OK), f"{run_sh}: not executable"
    subprocess.run(["bash", "-n", str(run_sh)], check=True, timeout=30)  # parses
    # Every side's round has its counterpart, each as .json and .md.
    rounds = {side: {n.split("-", 1)[1].rsplit(".", 1)[0] for n in results if n.startswith(side + "-")}
              for side in ("before", "after")}
    assert rounds["before"] == rounds["after"], rounds
    assert set(results) == {f"{side}-{r}.{ext}" for side in rounds for r in rounds[side] for ext in ("json", "md")}


def test_rules_reject_the_old_names():
    assert not COMPARISON.fullmatch("2026-11-29-edge-before-after") and COMPARISON.fullmatch("2026-11-29-edge")
    assert not SIDE.fullmatch("edge-1.json") and not SIDE.fullmatch("before.json")
    assert not RUN.fullmatch("vm.json") and RUN.fullmatch("2026-11-29-vm-edge.png")
