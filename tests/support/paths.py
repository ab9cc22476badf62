"""Where the repository is, for tests that read its files (README, docs, configs)."""

from __future__ import annotations

from pathlib import Path


def _root() -> Path:
    """The repository root: the first folder above this file holding pyproject.toml."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError("no repository root (pyproject.toml) above " + __file__)


ROOT = _root()
