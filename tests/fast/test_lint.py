"""The whole repository passes ruff with the rules of pyproject.toml's [tool.ruff] (the pinned ruff
of requirements-test.txt). ``python -m ruff check --fix .`` fixes most of what this finds."""

from __future__ import annotations

import subprocess
import sys

from bench.harness.servers import ROOT


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format=concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    status = done.returncode
    assert status == 0, f"python -m ruff check . (exit {status}):\n{done.stdout}{done.stderr}"
