"""CPU time and memory of a server's processes, read from /proc (Linux only).

Memory is the sum of PSS (proportional set size) over the process tree: pages shared by the
Gunicorn master and its forked workers (the preloaded model) are counted once in total, not once
per process, which is what the whole server really costs the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..sweep.schema import Memory

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SMAPS_FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")


def tree(pid: int) -> list[int]:
    """The pid and all its living descendants (a Gunicorn master and its workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if not Path(f"/proc/{current}").exists():
            continue
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(p) for p in (task / "children").read_text().split())
            except OSError:
                pass
    return sorted(set(found))


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """{pid: utime + stime in clock ticks} for the pids still alive."""
    ticks = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
        ticks[pid] = int(fields[11]) + int(fields[12])   # fields 14 and 15 of proc(5)
    return ticks


def cpu_seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds used between two snapshots; a process born in between counts from zero."""
    return sum(t - before.get(pid, 0) for pid, t in after.items()) / CLOCK_TICKS


def host_cpu() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])       # guest time is already inside user time
    return total - idle, total


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """Rss, Pss, Private_Clean, Private_Dirty of one process in kB, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in _SMAPS_FIELDS:
            out[key] = int(rest.split()[0])
    return out


def memory(pids: list[int]) -> Memory:
    """Memory of a set of processes in MiB: summed PSS, summed private pages, and per process."""
    per_process = {}
    for pid in pids:
        rollup = smaps_rollup(pid)
        if rollup:
            per_process[pid] = rollup
    mib = 1024.0
    return Memory(
        pss_mib=round(sum(r["Pss"] for r in per_process.values()) / mib, 1),
        private_mib=round(sum(r["Private_Clean"] + r["Private_Dirty"] for r in per_process.values()) / mib, 1),
        processes=len(per_process),
        pss_mib_by_pid={str(pid): round(r["Pss"] / mib, 1) for pid, r in per_process.items()},
        rss_mib_by_pid={str(pid): round(r["Rss"] / mib, 1) for pid, r in per_process.items()},
    )
