"""CPU time and memory of the stack's processes, read from ``/proc`` (Linux).

A :class:`Sample` holds, per process name, its CPU seconds (user + system) and its current
and peak resident memory. Two samples taken around a measured phase give the CPU each process
spent in it and how much its memory grew.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    """One process at one moment."""

    cpu_s: float  # user + system since it started
    rss: int  # VmRSS, bytes
    peak_rss: int  # VmHWM, bytes


Sample = dict[str, Usage]


def usage(pid: int) -> Usage:
    """CPU seconds and resident memory of a live process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name, in parentheses, may hold spaces: count fields after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0]) * 1024
    return Usage((utime + stime) / _TICK, memory.get("VmRSS", 0), memory.get("VmHWM", 0))


def sample(pids: dict[str, int]) -> Sample:
    """:func:`usage` of every named process that is still alive."""
    found = {}
    for name, pid in pids.items():
        try:
            found[name] = usage(pid)
        except (OSError, ValueError, IndexError):
            continue
    return found


def cpu_spent(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds each process spent between two samples."""
    return {name: after[name].cpu_s - before[name].cpu_s for name in after if name in before}


def rss_growth(before: Sample, after: Sample) -> dict[str, float]:
    """Resident memory each process gained between two samples, MiB (negative: shrank)."""
    return {name: (after[name].rss - before[name].rss) / MIB for name in after if name in before}


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK
