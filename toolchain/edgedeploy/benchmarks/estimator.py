"""The one estimator every system in a comparison is scored by.

Fairness rules (issue: measured fairly): every system gets the same warm-up frames before each
timed window, is fed the same frames as fast as it takes them, and is timed from outside by the
same clock around the same number of frames: throughput = frames completed / wall time of the
window. Rounds alternate systems; the answer is the median over rounds with its spread. Latency is
measured separately with one frame in flight, because a flood-fed pipeline's latency is mostly
time spent queued behind earlier frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Frame = Callable[[int], list[np.ndarray]]
#: Feeds and completes ``n`` frames (frame(k) for k in range(n)) and returns when all are done.
Process = Callable[[int, Frame], None]


@dataclass(frozen=True)
class Window:
    """One timed round: ``frames`` completed in ``wall_s`` seconds."""

    frames: int
    wall_s: float

    @property
    def throughput_fps(self) -> float:
        return throughput_fps(self.frames, self.wall_s)


def throughput_fps(frames: int, wall_s: float) -> float:
    """The one throughput estimator: frames completed over the wall time of the window."""
    return frames / wall_s if wall_s > 0 else 0.0


def timed_round(process: Process, frame: Frame, frames: int, warmup: int) -> Window:
    """Warm up (untimed), then time ``frames`` frames end to end."""
    if warmup:
        process(warmup, frame)
    t0 = time.perf_counter()
    process(frames, frame)
    return Window(frames, time.perf_counter() - t0)


def one_in_flight_latency(run_one: Callable[[list[np.ndarray]], object], frame: Frame,
                          samples: int) -> np.ndarray:
    """Seconds per frame with nothing else in flight (the latency an application sees)."""
    out = np.empty(samples)
    for k in range(samples):
        t = time.perf_counter()
        run_one(frame(k))
        out[k] = time.perf_counter() - t
    return out


@dataclass(frozen=True)
class Summary:
    median_fps: float
    min_fps: float
    max_fps: float
    rounds: int
    frames: int

    @property
    def spread(self) -> float:
        """(max - min) / median over rounds: how much the machine moved under the systems."""
        return (self.max_fps - self.min_fps) / self.median_fps if self.median_fps else 0.0


def summarise(windows: Sequence[Window]) -> Summary:
    fps = np.array([w.throughput_fps for w in windows]) if windows else np.zeros(1)
    return Summary(float(np.median(fps)), float(fps.min()), float(fps.max()), len(windows),
                   int(sum(w.frames for w in windows)))
