"""The real memory of a process and of everything it forked: PSS from /proc, summed over the process tree.

RSS counts a page once in every process that maps it, so a worker and its forked snapshot copy (which share
every page until one of them writes it) would be counted twice. PSS (proportional set size) divides each page by
the number of processes sharing it: summed over the worker and its children, a shared page counts once and a
copied one twice, which is what the machine pays. `GroupSampler` samples that sum every `interval` seconds in a
thread and keeps the peak (a snapshot copy lives about a second: a shorter interval sees more of them).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def parse_kb_fields(text: str) -> dict[str, int]:
    """`Name:  123 kB` lines (smaps_rollup, status) as {name: bytes}; other lines are left out."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * 1024
    return values


def _fields_after_name(stat: str) -> list[str]:
    """The fields of a /proc/<pid>/stat line from the third (state) on: the command name before them, in
    parentheses, may hold spaces and ')'."""
    return stat[stat.rindex(")") + 2 :].split()


def parse_ppid(stat: str) -> int:
    """The parent pid in a /proc/<pid>/stat line (field 4)."""
    return int(_fields_after_name(stat)[1])


def parse_cpu_ticks(stat: str) -> int:
    """User + system CPU time, in clock ticks, in a /proc/<pid>/stat line (fields 14 and 15)."""
    fields = _fields_after_name(stat)
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """The CPU time `pid` has used so far (0.0 once it is gone)."""
    try:
        return parse_cpu_ticks((proc / str(pid) / "stat").read_text()) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def children(pid: int, proc: Path = PROC) -> list[int]:
    """Pids whose parent is `pid` (a scan of /proc: no kernel option needed)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if parse_ppid((entry / "stat").read_text()) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def tree(pid: int, proc: Path = PROC) -> list[int]:
    """`pid` and all its descendants."""
    pids, queue = [pid], [pid]
    while queue:
        kids = children(queue.pop(), proc)
        pids += kids
        queue += kids
    return pids


def memory(pid: int, proc: Path = PROC) -> dict[str, int]:
    """The smaps_rollup figures of a process (Rss, Pss, Pss_Anon…), in bytes; {} if it is gone."""
    try:
        return parse_kb_fields((proc / str(pid) / "smaps_rollup").read_text())
    except (OSError, ProcessLookupError):
        return {}


@dataclass(frozen=True)
class GroupSample:
    at: float  # time.monotonic()
    pss: int  # Σ Pss over the process and its descendants
    root_pss: int  # the process's own Pss
    root_rss: int
    processes: int  # the process and its descendants alive then


def sample_group(pid: int, proc: Path = PROC) -> GroupSample:
    total = root_pss = root_rss = processes = 0
    for member in tree(pid, proc):
        figures = memory(member, proc)
        if not figures:
            continue
        processes += 1
        total += figures.get("Pss", 0)
        if member == pid:
            root_pss, root_rss = figures.get("Pss", 0), figures.get("Rss", 0)
    return GroupSample(time.monotonic(), total, root_pss, root_rss, processes)


@dataclass
class GroupSampler:
    """Samples `pid`'s process tree every `interval` s in a thread (`with GroupSampler(pid) as sampler:`); the
    peak of Σ PSS, of the process's own PSS, and the most processes seen at once."""

    pid: int
    interval: float = 0.2
    samples: list[GroupSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __enter__(self) -> GroupSampler:
        self._thread = threading.Thread(target=self._run, name=f"pss-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not os.path.exists(PROC / str(self.pid)):
                return
            sample = sample_group(self.pid)
            if sample.processes:
                self.samples.append(sample)
            self._stop.wait(self.interval)

    @property
    def peak_pss(self) -> int:
        return max((s.pss for s in self.samples), default=0)

    @property
    def peak_root_pss(self) -> int:
        return max((s.root_pss for s in self.samples), default=0)

    @property
    def most_processes(self) -> int:
        return max((s.processes for s in self.samples), default=0)
