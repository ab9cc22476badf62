"""prometheus_client's metric files, made safe on a full filesystem.

prometheus_client's ``MmapedDict`` grows a metric file with ``truncate`` (a sparse file) and then
writes through ``mmap``: on a full filesystem (a small tmpfs, a full disk) the write's page fault
has no block to get and the kernel sends SIGBUS, so every worker died on its first new series and
Gunicorn restarted them forever. :class:`SafeMmapedDict` gives the file real blocks first
(``posix_fallocate``), where a full filesystem is an ``OSError`` instead; a value that then has no
place in the file is kept in memory (``_pending``), never raised into a request, and written
by :meth:`SafeMmapedDict.flush` (each worker's keeper thread, once a second, and each scrape)
as soon as there is space again, so no count is lost. The failure and the recovery are logged
once per process each.

Imports prometheus_client, which picks multiprocess mode on its first import: import this only
after ``multiprocess.prepare_dir`` (``metrics/definitions.py`` does). Uses private API
(``MmapedDict`` internals, ``values.MmapedDict``): tests/fast/test_metrics_disk.py fails if a
prometheus_client upgrade moves them.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os

from prometheus_client import values
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict

log = logging.getLogger("embedder.metrics")
_failing: set[int] = set()  # pids whose metric writes currently fail (logged once per episode)


def _reserve(fd: int, size: int) -> None:
    """Real blocks for the file's first ``size`` bytes (growing it), so writes there through an
    mmap cannot fault: raises OSError (ENOSPC) on a full filesystem."""
    if hasattr(os, "posix_fallocate"):  # not on macOS
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    end = os.fstat(fd).st_size  # no fallocate here: write zeros past the end instead
    if end < size:
        os.pwrite(fd, bytes(size - end), end)


def entry_size(key: str) -> int:
    """Bytes one key takes in the file (MmapedDict._init_value's layout)."""
    n = len(key.encode("utf-8"))
    return 4 + n + (8 - (n + 4) % 8) + 16


class SafeMmapedDict(MmapedDict):
    """An ``MmapedDict`` that never maps a byte without a block behind it, and never raises on a
    write: what it cannot place in its file waits in ``_pending`` for :meth:`flush`."""

    def __init__(self, filename, read_mode=False):
        self._pending: dict[str, tuple[float, float]] = {}
        self.error = ""  # why the last write failed, while some wait
        if read_mode:
            super().__init__(filename, read_mode)
            return
        self._fname, self._f, self._m, self._positions = filename, None, None, {}
        self._place(None)

    def _open(self) -> None:
        """Open the file with blocks for all of it, as MmapedDict does; no file is left behind when
        there is no space (an empty one would break every scrape that reads it)."""
        with open(self._fname, "a+b") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                _reserve(f.fileno(), max(size, _INITIAL_MMAP_SIZE))
            except OSError:
                if size == 0:
                    os.unlink(self._fname)
                raise
        super().__init__(self._fname)

    def _init_value(self, key):
        """Grow the file as MmapedDict would (doubling), but with its blocks reserved first."""
        capacity = self._capacity
        while self._used + entry_size(key) > capacity:
            capacity *= 2
        if capacity > self._capacity:
            _reserve(self._f.fileno(), capacity)
            self._m = mmap.mmap(self._f.fileno(), capacity)
            self._capacity = capacity
        super()._init_value(key)  # its own growth loop finds nothing left to do

    def _place(self, key) -> bool:
        """Whether ``key`` has its slot in the file (opening the file, making the slot). Once a
        write has failed, only :meth:`flush` tries again: a full disk costs no syscall per write."""
        if key in self._positions:
            return True
        if self._pending:
            return False
        try:
            if self._m is None:
                self._open()
            if key is not None and key not in self._positions:
                self._init_value(key)
            return True
        except OSError as exc:
            self.error = f"{self._fname}: {exc.strerror or exc}"
            if os.getpid() not in _failing:
                _failing.add(os.getpid())
                log.error("cannot write metric file %s (%s): the metrics directory is full or not "
                          "writable; values are kept in memory and /metrics answers 503 until there "
                          "is space, serving is not affected", self._fname, exc.strerror or exc)
            return False

    def read_value(self, key):
        if self._place(key):
            return super().read_value(key)
        return self._pending.setdefault(key, (0.0, 0.0))

    def write_value(self, key, value, timestamp):
        if self._place(key):
            super().write_value(key, value, timestamp)
        else:
            self._pending[key] = (value, timestamp)

    def flush(self) -> bool:
        """Write what waits in memory, if there is space now; whether nothing waits any more.
        Callers hold the lock the value's writes take."""
        pending, self._pending = self._pending, {}
        for key, (value, timestamp) in pending.items():
            self.write_value(key, value, timestamp)
        if not self._pending:
            self.error = ""
        return not self._pending


def recovered() -> None:
    """Log once that this process writes its metric files again (after a failure)."""
    if os.getpid() in _failing:
        _failing.discard(os.getpid())
        log.warning("metric files are writable again: the values kept in memory are written")


def install() -> None:
    """Make prometheus_client's multiprocess values use :class:`SafeMmapedDict` (they look the
    class up in their module each time they open a file). Before the first metric is made."""
    values.MmapedDict = SafeMmapedDict
