"""A process's memory as Linux reports it (stdlib only: the runner and the benchmarks use it)."""

from __future__ import annotations

import contextlib


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (``VmHWM``: its peak) from /proc, in bytes; 0 without it."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def available_bytes() -> int:
    """Memory the kernel can give new work without swapping (``MemAvailable``), in bytes;
    0 where /proc does not say."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0
