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

Frame = Callable[[int], list[np.ndarray]]
#: Feeds and completes ``n`` frames (frame(k) for k in range(n)), keeping the system fed, and
#: returns each frame's completion time (``time.perf_counter``), in completion order.
Process = Callable[[int, Frame], np.ndarray]


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



def timed_round(process: Process, frame: Frame, frames: int, warmup: int,
                tail: int = 0, period: int = 1) -> Window:
    """One stream of ``warmup + frames + tail`` frames; the window runs from the completion of
    the last warm-up frame to that of the last timed one (``tail``: frames the system holds in
    flight, fed behind the window so it never drains inside it).

    A system that completes frames in a repeating pattern (two replicas micro-batching four
    frames each hand back eight frames every period, in two bursts a few milliseconds apart)
    would be over- or under-counted by up to a period's frames if a window edge fell inside
    one pattern and the other edge elsewhere in the next. So the window holds a whole number
    of ``period`` frames (rounded up): both edges then fall on the same place of the pattern,
    wherever that is, and the window spans whole periods."""
    warmup = max(1, warmup)  # the window opens on a completion
    frames = _whole_periods(frames, period)
    done = np.asarray(process(warmup + frames + tail, frame), dtype=float)
    return window_of(done, warmup, frames, period)


def _whole_periods(frames: int, period: int) -> int:
    """``frames`` rounded up to a whole number of ``period`` (at least one)."""
    return -(-max(frames, 1) // period) * period


def window_of(done: np.ndarray, warmup: int, frames: int, period: int = 1) -> Window:
    """The timed window of a stream's completion times (see :func:`timed_round`): from the
    completion of frame ``warmup - 1`` over ``frames`` (rounded up to whole periods, fewer
    periods where the stream is too short) more."""
    start = max(warmup, 1) - 1
    span = _whole_periods(frames, period)
    while span > period and start + span > len(done) - 1:
        span -= period
    stop = min(start + span, len(done) - 1)
    return Window(stop - start, float(done[stop] - done[start]))


#: Seconds a probe runs at least: a few frames of a fast model finish in microseconds, where
#: start-up costs dominate and the rate they give is several times too low, so windows sized
#: from it came out far shorter than intended (0.07 s for a 0.4 s target).
PROBE_MIN_S = 0.05
PROBE_MAX_FRAMES = 4096


def probe_rate(run: Callable[[int], Window], frames: int) -> float:
    """A rough rate to size windows by (and a warm-up): ``run(n)`` times ``n`` frames, with
    ``n`` growing fourfold from ``frames`` until a window lasts :data:`PROBE_MIN_S`."""
    n = max(1, frames)
    while True:
        window = run(n)
        if window.wall_s >= PROBE_MIN_S or n >= PROBE_MAX_FRAMES:
            return window.throughput_fps
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
