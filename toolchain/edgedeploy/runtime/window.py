"""The timed window every system in a comparison is scored by, on this host and on a board.

A stream's completion times in, one :class:`Window` out: frames completed over the wall time
from the completion of the last warm-up frame to that of the last timed one, while the system is
still fed (``tail`` frames behind the window), over whole periods of its completion pattern.
It lives in the runtime so that a board's ``main.py trials`` scores its contenders with the very
function this host's benchmarks use (``benchmarks.estimator`` explains the rules); it needs
numpy alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Frame = Callable[[int], list[np.ndarray]]
#: Feeds and completes ``n`` frames (frame(k) for k in range(n)), keeping the system fed, and
#: returns each frame's completion time in seconds, in completion order (any one monotonic
#: clock: only differences count).
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


def pooled_fps(windows: Sequence[Window]) -> float:
    """Frames completed over the wall time of ``windows`` together: a system's rate over its
    rounds, by the one estimator's rule. A mean of the rounds' rates is not bounded by what ran:
    a short window can read any rate at all (under the test suite's load a 32 px SqueezeNet's
    plan averaged 21,560 fps where the model's other contenders read 100-300, when a
    pipeline's frames were timed as a reader held off the CPU collected them in one burst;
    its last stage stamps them now, ``Pipeline.stream``). Pooled, such a window adds its frames
    but no time: with windows of equal frames, at most one window's share too many."""
    wall = sum(w.wall_s for w in windows)
    return throughput_fps(sum(w.frames for w in windows), wall)


def timed_round(process: Process, frame: Frame, frames: int, warmup: int,
                tail: int = 0, period: int = 1) -> Window:
    """One stream of ``warmup + frames + tail`` frames; the window runs from the completion of
    the last warm-up frame to that of the last timed one (``tail``: frames the system holds in
    flight, fed behind the window so it never drains inside it).

    A system that completes frames in a repeating pattern (two replicas micro-batching four
    frames each hand back eight frames every period, in two bursts a few milliseconds apart)
    would be over- or under-counted by up to a period's frames if a window edge fell inside
    one pattern and the other edge elsewhere in the next. So the window holds a whole number
    of ``period`` frames (rounded up, three periods at least): both edges then fall on the same
    place of the pattern, wherever that is, and the window spans whole periods."""
    return timed_rounds(process, frame, frames, warmup, 1, tail, period)[0]


def timed_rounds(process: Process, frame: Frame, frames: int, warmup: int, rounds: int,
                 tail: int = 0, period: int = 1) -> list[Window]:
    """``rounds`` windows of :func:`timed_round`, one after another in one stream: one warm-up
    before the first and one tail behind the last, each window over its own whole periods."""
    from edgedeploy.runtime.metrics import timed_frames

    warmup = max(1, warmup)  # the window opens on a completion
    # three periods at least: two replicas batching four VGG-16 frames each start unevenly,
    # and one-period windows of them read 6 or 10.6 fps by where the window fell
    frames = timed_frames(frames, period)
    n = max(1, rounds)
    done = np.asarray(process(warmup + n * frames + tail, frame), dtype=float)
    return [window_of(done[k * frames:], warmup, frames, period) for k in range(n)]


def whole_periods(frames: int, period: int) -> int:
    """``frames`` rounded up to a whole number of ``period`` (at least one)."""
    return -(-max(frames, 1) // period) * period


def window_of(done: np.ndarray, warmup: int, frames: int, period: int = 1) -> Window:
    """The timed window of a stream's completion times (see :func:`timed_round`): from the
    completion of frame ``warmup - 1`` over ``frames`` (rounded up to whole periods, fewer
    periods where the stream is too short) more."""
    start = max(warmup, 1) - 1
    span = whole_periods(frames, period)
    while span > period and start + span > len(done) - 1:
        span -= period
    stop = min(start + span, len(done) - 1)
    return Window(stop - start, float(done[stop] - done[start]))
