"""Board power from the tegrastats log that run.sh starts on Jetson boards.

Jetson boards carry INA3221 power monitors; ``tegrastats --logfile`` writes one line per interval
with every rail as ``NAME current/average`` in mW (``VDD_IN 3269/3269`` up to L4T 32,
``VDD_IN 4567mW/4567mW`` from L4T 35 on), among RAM/CPU/EMC/GR3D/temperature fields. The
runner reads the newest line, never the whole file (it grows for as long as the bundle runs), and
takes the instantaneous (first) figure: the average is since tegrastats started, so it would blur
a plan switch. Board input power is the total rail (``VDD_IN``, or ``POM_5V_IN`` on the Nano);
boards without one (AGX Xavier, AGX Orin) get the sum of the rails they report, flagged partial,
since that sum misses whatever is not monitored. Every failure is a null reading with a note, so
a report can say why ``power_w`` is null instead of guessing.

Device side: stdlib only.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NO_SENSOR",
    "TOTAL_RAILS",
    "PowerMeter",
    "PowerReading",
    "RailPower",
    "energy_mj",
    "none_reading",
    "parse_tegrastats",
    "read_power",
]

#: Rails that measure the whole module input, in order of preference.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
NO_SENSOR = "this board has no power sensor edgedeploy can read"

# ``NAME cur/avg`` with optional mW units, as a whole whitespace-separated pair: the lookarounds
# keep out ``RAM 2133/7852MB``, ``SWAP 0/3926MB`` and ``IRAM 0/252kB(lfb 252kB)``.
_RAIL_RE = re.compile(r"(?<!\S)([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?!\S)")
# One tegrastats line is 300-800 bytes; 16 KiB holds many, however large the log has grown.
_TAIL_BYTES = 16 * 1024


@dataclass(frozen=True)
class RailPower:
    """The power rails of one tegrastats line (instantaneous mW) and the board figure from them."""

    rails: dict[str, int]
    power_w: float
    source: str
    partial: bool


@dataclass(frozen=True)
class PowerReading:
    """Board power as a report states it: ``power_w`` is None when it cannot be known, and
    ``note`` then says why (for a partial sum, ``note`` says what it leaves out)."""

    power_w: float | None
    source: str
    note: str
    sampled_at: float | None  # wall-clock time (epoch s) the figure was written, if any

    def fields(self, frame_ms: float | None = None) -> dict[str, float | str | None]:
        """The keys a runner report carries: power, energy per frame, where it came from, why."""
        energy = None if frame_ms is None else energy_mj(self.power_w, frame_ms)
        return {"power_w": self.power_w, "energy_mj": energy,
                "power_source": self.source, "power_note": self.note}


def none_reading(reason: str = NO_SENSOR) -> PowerReading:
    """A null reading that says why, for boards (or states) where power cannot be measured."""
    return PowerReading(power_w=None, source="none", note=reason, sampled_at=None)


def parse_tegrastats(line: str) -> RailPower | None:
    """The power rails of one tegrastats line, or None when the line has none.

    A total rail wins; otherwise the rails present are summed and flagged ``partial``.
    """
    rails: dict[str, int] = {}
    for name, current, _average in _RAIL_RE.findall(line):
        rails.setdefault(name, int(current))
    if not rails:
        return None
    for total in TOTAL_RAILS:
        if total in rails:
            return RailPower(rails, rails[total] / 1000.0, f"tegrastats:{total}", False)
    return RailPower(rails, sum(rails.values()) / 1000.0,
                     "tegrastats:sum(" + "+".join(rails) + ")", True)


def energy_mj(power_w: float | None, frame_ms: float) -> float | None:
    """Energy per frame in mJ: W x ms = mJ. None when the power is unknown."""
    if frame_ms < 0:
        raise ValueError(f"frame_ms must be >= 0, got {frame_ms}")
    return None if power_w is None else power_w * frame_ms


def _last_line(path: Path) -> tuple[str | None, float]:
    """The newest complete line of ``path`` (reading only its tail) and the file's mtime.

    A final line without its newline may still be being written, so it is left out; so is the
    first line of the tail, which the seek may have cut.
    """
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        start = max(0, st.st_size - _TAIL_BYTES)
        fh.seek(start)
        chunk = fh.read(st.st_size - start)
    complete = chunk.rpartition(b"\n")[0]
    lines = complete.split(b"\n")
    if start > 0:
        lines = lines[1:]
    for raw in reversed(lines):
        if raw.strip():
            return raw.decode("utf-8", "replace").strip(), st.st_mtime
    return None, st.st_mtime


def read_power(log_path: str | Path, max_age_s: float = 5.0) -> PowerReading:
    """Board power from the newest line of a tegrastats log, or a null reading that says why.

    The file's mtime dates the line: a log older than ``max_age_s`` means tegrastats stopped, and
    its last figure no longer describes what the board draws now.
    """
    path = Path(log_path)
    try:
        line, mtime = _last_line(path)
    except FileNotFoundError:
        return none_reading(f"no tegrastats log at {path}")
    except OSError as exc:
        return none_reading(f"cannot read tegrastats log {path}: {exc.strerror or exc}")
    age = time.time() - mtime
    if age > max_age_s:
        return none_reading(f"log is stale (last line {age:.0f} s old)")
    if line is None:
        return none_reading(f"tegrastats log {path} has no complete line yet")
    parsed = parse_tegrastats(line)
    if parsed is None:
        return none_reading("no power rail in tegrastats output")
    note = ""
    if parsed.partial:
        note = (f"partial: no {'/'.join(TOTAL_RAILS)} total rail, sum of {len(parsed.rails)} "
                "monitored rails (misses unmonitored parts of the board)")
    return PowerReading(power_w=parsed.power_w, source=parsed.source, note=note,
                        sampled_at=mtime)


class PowerMeter:
    """What a runner keeps: the latest reading, refreshed at most every ``min_interval_s``.

    tegrastats writes once per interval (1 s by default), so reading the log per frame would only
    cost I/O for the same figure. ``log_path=None`` is a board without a sensor: every sample is
    a null reading with ``no_sensor`` as the reason. Safe to share between threads.
    """

    def __init__(self, log_path: str | Path | None, *, max_age_s: float = 5.0,
                 min_interval_s: float = 1.0, no_sensor: str = NO_SENSOR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log_path = None if log_path is None else Path(log_path)
        self.max_age_s = max_age_s
        self.min_interval_s = min_interval_s
        self._no_sensor = none_reading(no_sensor)
        self._clock = clock
        self._lock = threading.Lock()
        self._last: PowerReading | None = None
        self._last_at = 0.0

    def sample(self) -> PowerReading:
        """The cached reading, re-read from the log once ``min_interval_s`` has passed."""
        if self.log_path is None:
            return self._no_sensor
        with self._lock:
            now = self._clock()
            if self._last is None or now - self._last_at >= self.min_interval_s:
                self._last = read_power(self.log_path, self.max_age_s)
                self._last_at = now
            return self._last
