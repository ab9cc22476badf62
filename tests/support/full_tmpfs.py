"""A real, full filesystem for the metrics tests (tests/conftest.py's ``full_tmpfs`` fixture):
a 4 MiB tmpfs, mounted and filled to the last block (root on Linux only, else the test skips)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def mounted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Mount and fill the tmpfs; yields (its path, the filler file), unmounts it afterwards."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        filler = mount / "filler"
        refill(filler)
        yield mount, filler
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def refill(filler: Path) -> None:
    """Write ``filler`` until its filesystem has no block left."""
    with open(filler, "ab", buffering=0) as fh:
        with pytest.raises(OSError) as exc:
            while True:
                fh.write(bytes(4096))
        assert exc.value.errno == errno.ENOSPC
    assert shutil.disk_usage(filler.parent).free == 0
