"""prometheus_client multiprocess mode for a Gunicorn master and its workers.

prometheus_client picks multiprocess mode when it is first imported, and with ``preload_app``
the app (and so prometheus_client) is imported before any server hook runs. So
``gunicorn.conf.py`` calls :func:`prepare_dir` at its top (this module imports prometheus_client,
and ``safe_mmap``, which does, only inside its functions, each saying so): each master gets a fresh directory of
its own (under the ``metrics_dir`` setting, ``PROMETHEUS_MULTIPROC_DIR``, if set, else the temp
dir), which its workers inherit and which is removed when the master exits.
"""

from __future__ import annotations

import fcntl
import inspect
import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager

ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWNER = "EMBEDDER_METRICS_MASTER_PID"
log = logging.getLogger("embedder.metrics")
_recreated_in: set[int] = set()  # pids that already logged a re-creation (-pid: a failed one)


def prepare_dir(base: str = "") -> str:
    """Give this master an empty metrics directory under ``base`` (the ``metrics_dir`` setting;
    empty means the temp dir) and point prometheus_client at it.

    Idempotent within one master, so re-reading the config on SIGHUP keeps the counts.
    """
    if os.environ.get(_OWNER) == str(os.getpid()) and os.path.isdir(os.environ.get(ENV, "")):
        return os.environ[ENV]
    base = base or None
    if base:
        os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f"embedder-{os.getpid()}-", dir=base)
    os.environ[ENV] = path
    os.environ[_OWNER] = str(os.getpid())
    return path


def remove_dir() -> None:
    """Delete this master's directory (``on_exit``)."""
    if os.environ.get(_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ.get(ENV, ""), ignore_errors=True)


def ensure_dir() -> bool:
    """Re-create this server's metrics directory if someone deleted it (a tmp cleaner, a person):
    without it every scrape failed and a new worker died on its first metric write. Workers that
    already run keep writing to their (now unlinked) files, so the counts a scrape shows start
    again from what is written after this: Prometheus reads that as a counter reset. Logged once
    per process; returns whether it had to."""
    path = os.environ.get(ENV)
    if not path or os.path.isdir(path):
        return False
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:  # a full or read-only filesystem: writes wait in memory (safe_mmap)
        if -os.getpid() not in _recreated_in:
            _recreated_in.add(-os.getpid())
            log.warning("metrics directory %s was deleted and cannot be re-created: %s", path, exc)
        return False
    if os.getpid() not in _recreated_in:
        _recreated_in.add(os.getpid())
        log.warning("metrics directory %s was deleted; re-created it: counts restart from here", path)
    return True


def _value_internals():
    """prometheus_client's per-process state behind its multiprocess values: the open files, every
    value, and the lock all writes take (closure variables of values.MultiProcessValue). Private
    API: tests/integration/test_faults.py fails if a prometheus_client upgrade moves them."""
    # prometheus_client only after prepare_dir (see the module docstring)
    from prometheus_client import values

    cls = values.ValueClass
    state = {**inspect.getclosurevars(cls.__init__).nonlocals,
             **inspect.getclosurevars(cls._MmapedValue__reset).nonlocals}
    return state["files"], state["values"], state["lock"]


def rehome_if_deleted() -> bool:
    """In a worker: if this process's metric files were deleted (with their directory), write
    every value it holds into new files in the (re-created) directory, so scrapes see its counts
    again, whole. Returns whether it had to."""
    if not os.environ.get(ENV):
        return False
    files, values, lock = _value_internals()
    if not any(_lost(f) for f in list(files.values())):
        return False  # the usual case, checked without holding up metric writes
    with lock:
        if not any(_lost(f) for f in files.values()):
            return False
        ensure_dir()
        for f in files.values():
            f.close()
        files.clear()
        for value in values:
            current, timestamp = value._value, value._timestamp
            value._MmapedValue__reset()  # opens this process's new files, reads 0 there
            value._file.write_value(value._key, current, timestamp)
            value._value, value._timestamp = current, timestamp
    log.warning("metric files of worker %d were deleted; rewrote its %d values in %s",
                os.getpid(), len(values), os.environ[ENV])
    return True


def _lost(f) -> bool:
    """Whether an open metric file was deleted (one never opened, for want of space, is not)."""
    return f._f is not None and not os.path.exists(f._fname)


def flush_pending() -> str:
    """In a worker: write the values its files had no space for (metrics/safe_mmap.py), if there
    is space now. Returns why some still wait ("" when none does)."""
    if not os.environ.get(ENV):
        return ""
    from metrics import safe_mmap  # it imports prometheus_client: only after prepare_dir

    files, _, lock = _value_internals()
    with lock:
        waiting = [f for f in files.values() if getattr(f, "_pending", None)]
        if not waiting:
            return ""
        ensure_dir()
        errors = [f.error for f in waiting if not f.flush()]
    if not errors:
        safe_mmap.recovered()
    return errors[0] if errors else ""


def start_keeper(interval: float = 1.0) -> None:
    """In a worker: a daemon thread that puts its metric files back if they are deleted, and
    writes the values kept in memory while the filesystem was full once there is space."""

    def keep():
        while True:
            time.sleep(interval)
            try:
                rehome_if_deleted()
                flush_pending()
            except Exception:  # never let metrics housekeeping take the worker down
                log.exception("could not restore the metric files")

    threading.Thread(target=keep, name="embedder-metrics-keeper", daemon=True).start()


#: Where a dead worker's counters and histograms are added up (one file per type, whatever the
#: number of workers that ever ran), so scrapes read a bounded number of files.
MERGED = "{typ}_merged.db"
_LOCK = ".scrape.lock"


@contextmanager
def _dir_lock(exclusive: bool):
    """A lock on the directory's file set: scrapes read under a shared lock, the master merges a
    dead worker's files under an exclusive one, so no scrape counts a value twice or not at all."""
    with open(os.path.join(os.environ[ENV], _LOCK), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mark_dead(pid: int) -> None:
    """In the master, when a worker exits: forget its live gauges, and add its counters and
    histograms into the merged files and delete its own (the totals stay; the files don't pile up
    with every restart, which made scrapes slower and slower). All or nothing per file: without
    space for its keys in the merged file, the dead worker's file stays, still read by scrapes.
    Never raises: an error in Gunicorn's ``child_exit`` hook would stop the master."""
    if not os.environ.get(ENV):
        return
    # prometheus_client (safe_mmap imports it too) only after prepare_dir (see the module docstring)
    from prometheus_client import multiprocess

    from metrics.safe_mmap import SafeMmapedDict

    try:
        multiprocess.mark_process_dead(pid)
        if not os.path.isdir(os.environ[ENV]):
            return
        with _dir_lock(exclusive=True):
            for typ in ("counter", "histogram"):
                dead = os.path.join(os.environ[ENV], f"{typ}_{pid}.db")
                if not os.path.exists(dead):
                    continue
                entries = list(SafeMmapedDict.read_all_values_from_file(dead))
                merged = SafeMmapedDict(os.path.join(os.environ[ENV], MERGED.format(typ=typ)))
                try:
                    for key, *_ in entries:  # a slot for every key first: no half-merged file
                        merged.read_value(key)
                    if merged._pending:
                        log.warning("no space to merge %s into %s: %s", dead, merged._fname, merged.error)
                        continue
                    for key, value, timestamp, _ in entries:
                        merged.write_value(key, merged.read_value(key)[0] + value, timestamp)
                finally:
                    merged.close()
                os.remove(dead)
    except Exception:
        log.exception("could not merge the metric files of worker %d", pid)


class MetricsUnavailable(Exception):
    """This worker's values cannot be written to the metrics directory (full or not writable)."""


def render() -> tuple[bytes, str]:
    """The aggregate of every worker of this server, in the Prometheus text format.

    Raises :class:`MetricsUnavailable` (the app answers 503) while this worker's values cannot be
    written to the metrics directory (full or not writable): a scrape would show counts short of
    the truth."""
    # prometheus_client only after prepare_dir (see the module docstring)
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if os.environ.get(ENV):
        from prometheus_client import multiprocess  # (see above)

        ensure_dir()
        problem = flush_pending()
        try:
            if not problem:
                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry)
                with _dir_lock(exclusive=False):
                    return generate_latest(registry), CONTENT_TYPE_LATEST
        except OSError as exc:
            problem = str(exc)
        raise MetricsUnavailable(f"metrics unavailable: the metrics directory {os.environ[ENV]} is full or "
                          f"not writable ({problem}); serving is not affected, and /metrics answers "
                          "again once there is space")
    # A single process (tests with Flask's client): the default registry is the truth.
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
