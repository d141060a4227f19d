"""A process's CPU time as every bench reports it: utime + stime from Linux's /proc."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, in seconds; OSError once the process is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu_seconds(pid: int) -> float:
    """CPU of `pid` and of everything below it (live children, and the totals of those it
    reaped), in seconds; 0 for a process that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = sum(int(x) for x in fields[11:15]) / TICK
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    return total + sum(tree_cpu_seconds(int(c)) for c in children)


# /proc/stat's first line, in this order: the machine's time so far by kind, in ticks
_STAT_KINDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")


def machine_ticks() -> dict[str, int]:
    """The machine's CPU time by kind (all cores; not per namespace), in clock ticks."""
    values = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:1 + len(_STAT_KINDS)]
    return dict(zip(_STAT_KINDS, map(int, values), strict=True))


def machine_split(before: dict[str, int], after: dict[str, int], per: int) -> dict[str, float]:
    """Microseconds per `per` (a message) between two machine_ticks(): user (with nice),
    system, softirq (with irq: loopback TCP's receive side is mostly here) and idle (with
    iowait). Whose time it was is not known: every process of the machine is in it."""
    d = {k: (after[k] - before[k]) * 1e6 / TICK / max(1, per) for k in _STAT_KINDS}
    return {"user": d["user"] + d["nice"], "system": d["system"],
            "softirq": d["softirq"] + d["irq"], "idle": d["idle"] + d["iowait"]}
