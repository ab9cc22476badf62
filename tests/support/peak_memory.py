"""How much worker processes' resident memory grows at its peak during a block (Linux /proc)."""

from __future__ import annotations

import threading
from pathlib import Path


def _status(pid: int, key: str) -> int:
    """A line of /proc/<pid>/status in bytes (VmRSS, VmHWM)."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(key))
    return int(line.split()[1]) * 1024


class PeakGrowth:
    """How much each worker's resident memory grew at its peak during a ``with`` block: VmHWM (the
    peak) reset on entry by writing 5 to clear_refs; where the kernel refuses that, VmRSS sampled
    every 5 ms."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.before = {pid: _status(pid, "VmRSS") for pid in pids}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._sampler = None

    def __enter__(self) -> PeakGrowth:
        try:
            for pid in self.pids:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], _status(pid, "VmRSS"))

    def __exit__(self, *exc) -> None:
        if self._sampler is None:
            self.peak = {pid: _status(pid, "VmHWM") for pid in self.pids}
        else:
            self._stop.set()
            self._sampler.join()

    @property
    def growth(self) -> dict[int, int]:
        return {pid: self.peak[pid] - self.before[pid] for pid in self.pids}


def resident(pid: int) -> int:
    """A process's resident memory now, in bytes."""
    return _status(pid, "VmRSS")
