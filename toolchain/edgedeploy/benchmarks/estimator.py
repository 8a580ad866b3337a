"""The one estimator every system in a comparison is scored by.

Fairness rules: every system gets the same warm-up frames before each timed window, is fed the
same frames as fast as it takes them, and is timed from outside by the same clock around the same
number of frames: throughput = frames completed / wall time of the window. The window is the
steady state a streaming application sees: it opens when the last warm-up frame completes and
closes when the last timed frame completes, while the system is still fed (``tail`` more frames
stay in flight behind the window). Timing a pipeline from empty to drained instead would charge
it its fill and drain in every window -- a bias against replicated and pipelined systems that
grows as windows shrink. Rounds alternate systems; the answer is the median over rounds with its
spread. Latency is measured separately with one frame in flight, because a flood-fed pipeline's
latency is mostly time spent queued behind earlier frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgedeploy.runtime.metrics import warmup_frames  # noqa: F401 - shared with refinement
from edgedeploy.runtime.window import (
    Frame,
    Process,
    Window,
    pooled_fps,
    throughput_fps,
    timed_round,
    window_of,
)

#: Seconds a probe runs at least: a few frames of a fast model finish in microseconds, where
#: start-up costs dominate and the rate they give is several times too low, so windows sized
#: from it came out far shorter than intended (0.07 s for a 0.4 s target).
PROBE_MIN_S = 0.05
PROBE_MAX_FRAMES = 4096
#: A window of the first few frames this long is rate enough, and warm-up enough: it is not
#: timed again. A ResNet-50's contenders took 0.4-2 s a probe window on 2 cores (two replicas of
#: four frames run three whole periods), and timing each twice took 13 s of its plan.
PROBE_ONCE_S = 0.25


def probe_rate(run: Callable[[int], Window], frames: int) -> float:
    """A rough rate to size windows by (and a warm-up): ``run(n)`` times ``n`` frames, with
    ``n`` growing fourfold from ``frames`` until a window lasts :data:`PROBE_MIN_S`, then once
    more at that ``n``, the faster of the two kept: the first long window may still carry
    start-up costs or a neighbour's burst (under the test suite's load, a 32 px SqueezeNet's
    windows came out 0.035 s for a 0.4 s target, seen while developing). Where the first
    ``frames`` already take :data:`PROBE_ONCE_S`, their window is kept alone: slow frames, not
    start-up, made it long, its warm-up frame took the cold call, and a rate a few percent
    low only shortens the windows a little."""
    n = max(1, frames)
    while True:
        window = run(n)
        if n == max(1, frames) and window.wall_s >= PROBE_ONCE_S:
            return window.throughput_fps
        if window.wall_s >= PROBE_MIN_S or n >= PROBE_MAX_FRAMES:
            return max(window.throughput_fps, run(n).throughput_fps)
        n *= 4


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


__all__ = ["PROBE_MAX_FRAMES", "PROBE_MIN_S", "PROBE_ONCE_S", "Frame", "Process", "Summary",
           "Window", "one_in_flight_latency", "pooled_fps", "probe_rate", "summarise",
           "throughput_fps", "timed_round", "window_of"]
