"""CPU time and memory of a server process and of its PostgreSQL, read from /proc."""
from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    parts = _stat(pid)
    if parts is None:
        return 0.0
    total = int(parts[11]) + int(parts[12])          # utime + stime
    if with_children:
        total += int(parts[13]) + int(parts[14])     # reaped children
    return total / _TICK


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parts = _stat(int(entry))
            if parts is not None and int(parts[1]) == pid:
                out.append(int(entry))
    return out


def postgres_cpu_seconds(postmaster_pid: int) -> float:
    """The postmaster, its live backends, and the backends that already exited."""
    return cpu_seconds(postmaster_pid, with_children=True) + sum(
        cpu_seconds(c) for c in children(postmaster_pid))


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class CpuMeter:
    """Server + PostgreSQL CPU between `start()` and `stop()`."""

    def __init__(self, server_pid: int, postmaster_pid: int | None) -> None:
        self.server_pid = server_pid
        self.postmaster_pid = postmaster_pid

    def _now(self) -> tuple[float, float]:
        pg = postgres_cpu_seconds(self.postmaster_pid) if self.postmaster_pid else 0.0
        return cpu_seconds(self.server_pid), pg

    def start(self) -> None:
        self._t0 = self._now()

    def stop(self) -> tuple[float, float]:
        s, p = self._now()
        return s - self._t0[0], p - self._t0[1]
