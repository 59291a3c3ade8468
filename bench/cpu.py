"""Who used the CPU during a run: the workers, Redis, Postgres, and the machine as a whole.

On a 2-core machine every process of a run competes for the same cores, so a rate alone does
not say what limited it. Figures are in percent of one core, like `top` (the machine's total
can reach 100 x cores); they come from /proc and are None where there is no /proc.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_times(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds a live process has used, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def children(parent: int) -> list[int]:
    """The direct children of a process (Postgres' backends are its postmaster's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            found.append(int(entry.name))
    return found


def machine_busy() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / TICKS


def pid_from_file(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU used by groups of processes between start() and stop(), in % of one core.

    A group is a function that lists its pids (asked at both ends, so processes that start
    during the run, like new Postgres backends, are counted from zero).
    """

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.before: dict[str, dict[int, tuple[float, float]]] = {}
        self.machine_before: float | None = None

    def _snapshot(self) -> dict[str, dict[int, tuple[float, float]]]:
        taken: dict[str, dict[int, tuple[float, float]]] = {}
        for name, pids in self.groups.items():
            taken[name] = {}
            for pid in pids():
                times = process_times(pid)
                if times is not None:
                    taken[name][pid] = times
        return taken

    def start(self) -> None:
        self.before = self._snapshot()
        self.machine_before = machine_busy()

    def stop(self, seconds: float) -> dict[str, float | None]:
        after = self._snapshot()
        machine_after = machine_busy()
        result: dict[str, float | None] = {}
        for name, now in after.items():
            if not now:
                result[f"{name}_cpu_percent"] = None
                continue
            user = system = 0.0
            for pid, (u, s) in now.items():
                u0, s0 = self.before.get(name, {}).get(pid, (0.0, 0.0))
                user, system = user + u - u0, system + s - s0
            result[f"{name}_cpu_percent"] = round(100 * (user + system) / seconds, 1)
            result[f"{name}_sys_percent"] = round(100 * system / seconds, 1)
        if self.machine_before is not None and machine_after is not None:
            busy = machine_after - self.machine_before
            result["machine_cpu_percent"] = round(100 * busy / seconds, 1)
        return result
