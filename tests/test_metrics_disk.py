"""A full metrics filesystem never takes the service down (metrics/safe_mmap.py): before, every
worker died with SIGBUS on its first metric write there (1,463 restarts in 10 minutes). Now the
values wait in memory, /metrics answers a clear 503, and all is written once there is space.

The fast tests simulate ENOSPC; the others mount a real, full tmpfs (root only, else skipped)."""

from __future__ import annotations

import errno
import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.servers import ROOT, Gunicorn
from metrics import multiprocess, safe_mmap
from metrics.safe_mmap import SafeMmapedDict

TOL = 1e-5


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

@pytest.fixture
def full_tmpfs(tmp_path):
    """A 4 MiB tmpfs, mounted and filled to the last block; yields (its path, the filler file)."""
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


class ServingGunicorn(Gunicorn):
    """Ready when /health answers (every worker's /metrics answers 503 while the disk is full)."""

    def ready_workers(self):
        try:
            ok = requests.get(self.url + "/health", timeout=5).status_code == 200
        except requests.RequestException:
            return None
        return self.workers if ok else None


@pytest.mark.integration
def test_a_full_metrics_filesystem_never_takes_the_service_down(full_tmpfs, stsb, reference_model):
    """Workers on a full metrics filesystem keep serving, with the same pids (no restart loop);
    /metrics says why it cannot answer, logged once per process; when space comes back every
    count made meanwhile is there."""
    mount, filler = full_tmpfs
    texts = list(dict.fromkeys(s for _, s1, s2 in stsb for s in (s1, s2)))[:12]
    want = reference_model.encode(texts, normalize_embeddings=True)
    srv = ServingGunicorn(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(mount)})
    with srv:
        pids = sorted(srv.worker_pids())
        sent = 0
        deadline = time.monotonic() + 6  # some seconds of traffic, over every route
        while time.monotonic() < deadline or sent < 24:
            text = texts[sent % len(texts)]
            r = requests.post(srv.url + "/embed", json={"inputs": text}, timeout=30)
            assert r.status_code == 200
            assert np.abs(np.array(r.json()[0]) - want[sent % len(texts)]).max() < TOL
            sent += 1
            for path in ("/health", "/info", "/openapi.json"):
                assert requests.get(srv.url + path, timeout=30).status_code == 200, path
            assert requests.get(srv.url + "/no-such-route", timeout=30).status_code == 404  # new series
            r = requests.post(srv.url + "/v1/embeddings", json={"input": text}, timeout=30)
            assert r.status_code == 200
            m = requests.get(srv.url + "/metrics", timeout=30)
            assert m.status_code == 503 and m.headers["Content-Type"].startswith("application/json")
            assert "metrics directory" in m.text and "full or not writable" in m.text
        assert sorted(srv.worker_pids()) == pids and srv.proc.poll() is None, "workers were replaced"
        log = srv.log()
        assert "SIGBUS" not in log and "Traceback" not in log, log[-3000:]
        failures = re.findall(r"\[(\d+)\] \[ERROR\] embedder\.metrics: cannot write metric file", log)
        assert set(map(int, failures)) >= set(pids) and len(failures) == len(set(failures)), log[-3000:]

        filler.unlink()  # space again: each worker writes what it kept within about a second
        wait = time.monotonic() + 20
        while embed_count(srv) != sent:
            assert time.monotonic() < wait, "/metrics did not recover, or counts made while full were lost"
            time.sleep(0.2)
        assert "writable again" in srv.log()

        refill(filler)  # full again while the workers run: new series (new codes) still harmless
        for body, code in (({"inputs": ""}, 422), ({"inputs": texts[0]}, 200), ({"input": []}, 422)):
            route = "/embed" if "inputs" in body else "/v1/embeddings"
            assert requests.post(srv.url + route, json=body, timeout=30).status_code == code
        assert requests.post(srv.url + "/embed", data=b"x", timeout=30).status_code == 415
        assert requests.get(srv.url + "/metrics", timeout=30).status_code in (200, 503)
        assert sorted(srv.worker_pids()) == pids and "SIGBUS" not in srv.log()


def embed_count(srv) -> float | None:
    """embedder_requests_total{route="/embed",code="200"} of one scrape; None while it answers 503."""
    r = requests.get(srv.url + "/metrics", timeout=30)
    if r.status_code != 200:
        return None
    return sum(s.value for f in text_string_to_metric_families(r.text) for s in f.samples
               if s.name == "embedder_requests_total" and s.labels == {"route": "/embed", "code": "200"})
