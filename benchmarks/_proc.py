"""Whole-process runs for the benchmarks: wall time and peak RSS of a process tree.

Peak RSS is the largest sum of resident memory over the process and all its
descendants (decoder workers included), sampled from /proc every 20 ms, so it
is what the run held at once, not one process's high-water mark. Linux only.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ProcRun:
    wall_s: float
    peak_rss: int  # bytes
    returncode: int
    stderr: str
    cpu_s: float = 0.0  # user + system CPU of the process and the children it waited for


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _tree_rss(pid: int) -> int:
    kids = _children()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(kids.get(p, []))
    return total


def run(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None) -> ProcRun:
    """Run ``cmd`` to the end; wall time from start to exit and the peak RSS of its tree."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ProcRun(wall, peak, proc.returncode, err, cpu)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
