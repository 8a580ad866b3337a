"""Per-core load from other processes: /proc/stat busy time minus our own threads' CPU time.

The runtime manager (manager.py) needs to know which cores *another* process is loading, even
while our stage processes share those cores. Linux accounts CPU time per core in /proc/stat and
per thread in /proc/<pid>/task/<tid>/stat (utime, stime and the core it last ran on, field 39);
the difference over an interval is the foreign load. Stage threads are pinned, so attributing a
thread's time to its last core is exact for them and approximate only for the unpinned feeder.
Stdlib only; off Linux every sample is None and the manager acts on the figures alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["CoreLoad"]


class CoreLoad:
    """Per-core foreign load between two calls, from /proc/stat minus our threads' CPU time."""

    def __init__(self, proc: str | Path = "/proc") -> None:
        self.proc = Path(proc)
        self._cores: dict[int, tuple[int, int]] | None = None
        self._threads: dict[tuple[int, int], int] = {}

    def reset(self) -> None:
        self._cores = None
        self._threads = {}

    def _read_cores(self) -> dict[int, tuple[int, int]]:
        """core -> (busy ticks, total ticks); iowait counts as idle."""
        out = {}
        for line in (self.proc / "stat").read_text().splitlines():
            name, *vals = line.split()
            if not (name.startswith("cpu") and name[3:].isdigit()):
                continue
            v = [int(x) for x in vals[:8]] + [0] * max(0, 8 - len(vals))
            idle = v[3] + v[4]
            out[int(name[3:])] = (sum(v[:8]) - idle, sum(v[:8]))
        return out

    def _read_threads(self, pids: Iterable[int]) -> dict[tuple[int, int], tuple[int, int]]:
        """(pid, tid) -> (utime + stime ticks, core it last ran on)."""
        out = {}
        for pid in pids:
            try:
                tids = [int(t.name) for t in (self.proc / str(pid) / "task").iterdir()]
            except OSError:
                continue
            for tid in tids:
                try:
                    text = (self.proc / str(pid) / "task" / str(tid) / "stat").read_text()
                except OSError:
                    continue
                f = text.rsplit(")", 1)[1].split()
                out[(pid, tid)] = (int(f[11]) + int(f[12]), int(f[36]))
        return out

    def sample(self, pids: Iterable[int]) -> dict[int, float] | None:
        """Foreign busy share per core since the last call; None on the first call or off Linux."""
        try:
            cores = self._read_cores()
        except OSError:
            return None
        threads = self._read_threads(pids)
        prev, self._cores = self._cores, cores
        prev_threads = self._threads
        self._threads = {k: t for k, (t, _) in threads.items()}
        if prev is None:
            return None
        own: dict[int, int] = {}
        for key, (ticks, core) in threads.items():
            own[core] = own.get(core, 0) + max(0, ticks - prev_threads.get(key, ticks))
        out = {}
        for c, (busy, total) in cores.items():
            if c not in prev:
                continue
            d_total = total - prev[c][1]
            if d_total <= 0:
                continue
            d_foreign = busy - prev[c][0] - own.get(c, 0)
            out[c] = min(1.0, max(0.0, d_foreign / d_total))
        return out
