"""What ``/proc`` says about a process: CPU time, resident memory, wake-ups.

CPU comes from ``utime + stime`` in ``/proc/<pid>/stat`` (clock ticks), not from
psutil's percentage, which under-counts short wake-ups (notes/watching-latency.md).
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size (``VmRSS``) in bytes."""
    return _status_field(Path(f"/proc/{pid}/status"), "VmRSS") * 1024


def wakeups(pid: int) -> int:
    """Voluntary context switches summed over the process's threads: one per sleep."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += _status_field(task / "status", "voluntary_ctxt_switches")
        except FileNotFoundError:
            continue  # the thread ended between listing and reading
    return total


def _status_field(path: Path, name: str) -> int:
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0])
    raise KeyError(f"{name} not in {path}")
