"""A full metrics filesystem never takes the service down (metrics/safe_mmap.py): before, every
worker died with SIGBUS on its first metric write there (1,463 restarts in 10 minutes). Now the
values wait in memory, /metrics answers a clear 503, and all is written once there is space.

Here without a server: ENOSPC simulated, and a real, full tmpfs (root only, else skipped) under
one metric write in a child interpreter. tests/integration/test_metrics_full_disk.py serves a real
Gunicorn from a full tmpfs."""

from __future__ import annotations

import errno
import inspect
import os
import subprocess
import sys

import pytest
from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict

from bench.harness.servers import ROOT
from metrics import multiprocess, safe_mmap
from metrics.safe_mmap import SafeMmapedDict

# --- the prometheus_client internals safe_mmap relies on ---------------------------------------

def test_prometheus_client_internals_are_where_safe_mmap_expects_them(tmp_path):
    """Fails when a prometheus_client upgrade moves what metrics/safe_mmap.py patches or mirrors."""
    reset = values.MultiProcessValue()._MmapedValue__reset
    assert "MmapedDict" in inspect.getclosurevars(reset).globals  # looked up in values, so install() works
    d = MmapedDict(str(tmp_path / "x.db"))
    assert {"_f", "_m", "_fname", "_positions", "_used", "_capacity"} <= set(vars(d))
    for key in ("a", "ab" * 7, "é" * 33, '["embedder_requests_total", {"route": "/embed"}]'):
        used = d._used
        d.write_value(key, 1.0, 0.0)
        assert d._used - used == safe_mmap.entry_size(key), key
    d.close()


# --- SafeMmapedDict with ENOSPC simulated --------------------------------------------------------

@pytest.fixture
def disk(monkeypatch):
    """A switch: while ``disk.full``, reserving blocks fails as on a full filesystem."""
    class Disk:
        full = False

    real = safe_mmap._reserve

    def reserve(fd, size):
        if Disk.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, size)

    monkeypatch.setattr(safe_mmap, "_reserve", reserve)
    return Disk


def on_disk(path) -> dict:
    return {k: v for k, v, _, _ in MmapedDict.read_all_values_from_file(str(path))}


def test_without_space_values_wait_in_memory_and_are_written_when_there_is_space(tmp_path, disk):
    path = tmp_path / "counter_1.db"
    disk.full = True
    d = SafeMmapedDict(str(path))
    d.write_value("a", 1.0, 0.0)  # never raises
    assert d.read_value("a") == (1.0, 0.0) and d.read_value("b") == (0.0, 0.0)
    assert not path.exists()  # no empty file left for scrapes to choke on
    assert not d.flush() and "No space left" in d.error
    disk.full = False
    assert d.flush() and d.error == ""
    assert on_disk(path) == {"a": 1.0, "b": 0.0}
    d.close()


def test_growth_without_space_keeps_the_new_series_and_still_writes_the_old(tmp_path, disk):
    path = tmp_path / "histogram_1.db"
    d = SafeMmapedDict(str(path))
    keys = [f"series-{i:05d}" for i in range(4000)]  # 32 bytes each: ~2,000 fit in the first 64 KiB
    written = 0
    while d._used + safe_mmap.entry_size(keys[written]) <= d._capacity:
        d.write_value(keys[written], 1.0, 0.0)
        written += 1
    disk.full = True
    for key in keys[written:]:
        d.write_value(key, 2.0, 0.0)
    d.write_value(keys[0], 5.0, 0.0)  # an old series: its slot has its block, written at once
    assert on_disk(path)[keys[0]] == 5.0 and len(on_disk(path)) == written
    assert os.path.getsize(path) == d._capacity == 1 << 16
    disk.full = False
    assert d.flush()
    values_now = on_disk(path)
    assert len(values_now) == len(keys) and values_now[keys[-1]] == 2.0 and values_now[keys[0]] == 5.0
    assert os.path.getsize(path) == d._capacity > 1 << 16
    d.close()


def test_a_dead_workers_file_is_merged_whole_or_not_at_all(tmp_path, disk, monkeypatch):
    """In the master: without space in the merged file the dead worker's file stays (scrapes still
    count it), and nothing is added twice once there is space."""
    monkeypatch.setenv(multiprocess.ENV, str(tmp_path))
    dead = MmapedDict(str(tmp_path / "counter_999.db"))
    for i in range(50):
        dead.write_value(f"key-{i}", float(i), 0.0)
    dead.close()
    merged = tmp_path / multiprocess.MERGED.format(typ="counter")
    disk.full = True
    multiprocess.mark_dead(999)  # never raises
    assert (tmp_path / "counter_999.db").exists() and not merged.exists()
    disk.full = False
    multiprocess.mark_dead(999)
    assert not (tmp_path / "counter_999.db").exists()
    assert on_disk(merged) == {f"key-{i}": float(i) for i in range(50)}


# --- a real full tmpfs -----------------------------------------------------------------------------

WRITE = """
import sys
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from metrics.safe_mmap import SafeMmapedDict
d = {cls}(sys.argv[1])
d.write_value("embedder_requests_total", 1.0, 0.0)
print("alive")
"""


@pytest.mark.parametrize("cls,killed", [("MmapedDict", True), ("SafeMmapedDict", False)])
def test_writing_a_metric_on_a_full_filesystem(full_tmpfs, cls, killed):
    """The premise and the fix, on a real full filesystem: prometheus_client's own file dies of
    SIGBUS on its first write; the safe one lives."""
    mount, _ = full_tmpfs
    done = subprocess.run([sys.executable, "-c", WRITE.format(cls=cls), str(mount / "counter_1.db")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    if killed:
        assert done.returncode == -7, done  # SIGBUS
    else:
        assert done.returncode == 0 and done.stdout == "alive\n", done
