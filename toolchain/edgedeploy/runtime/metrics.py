"""Timing samples and the summaries a pipeline run reports (per stage and end to end).

Samples are kept in fixed-size circular buffers so that a long (soak) run holds constant memory:
percentiles then describe the most recent ``capacity`` frames, while counts and busy time stay
exact over the whole run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgedeploy.runtime.window import whole_periods

DEFAULT_CAPACITY = 65536


def percentile_ms(samples_s: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile of samples given in seconds, in milliseconds (0.0 when empty)."""
    arr = np.asarray(samples_s, dtype=np.float64)
    if arr.size == 0:
        return 0.0
    return float(np.percentile(arr, q) * 1e3)


class SampleBuffer:
    """Fixed-capacity circular buffer of float samples with an exact running count and sum."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._data = np.zeros(max(1, int(capacity)), dtype=np.float64)
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        self._data[self.count % self._data.size] = value
        self.count += 1
        self.total += value

    def values(self) -> np.ndarray:
        """The retained samples (the last ``capacity`` ones), as a copy."""
        return self._data[: min(self.count, self._data.size)].copy()

    def reset(self) -> None:
        self.count = 0
        self.total = 0.0


@dataclass
class StageMetrics:
    """What one stage did during a run: frames, service and input-wait times, utilisation.

    ``service`` is the time inside the stage's callable; ``wait`` the time a replica sat waiting for
    its next input (starved stages have large waits); ``utilisation`` is busy time over the run's
    wall time, averaged over replicas (1.0 = the bottleneck).
    """

    name: str
    replicas: int
    cpus: list[int]
    frames: int
    service_ms_p50: float
    service_ms_p99: float
    wait_ms_p50: float
    utilisation: float
    service_ms_mean: float = 0.0
    wait_ms_p99: float = 0.0
    replica_cpus: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stage_metrics(name: str, cpus: Sequence[int], replica_cpus: Sequence[Sequence[int]],
                  service_s: np.ndarray, wait_s: np.ndarray, frames: int, busy_s: float,
                  wall_s: float) -> StageMetrics:
    """Summarise one stage's pooled replica samples."""
    replicas = max(1, len(replica_cpus))
    util = busy_s / (wall_s * replicas) if wall_s > 0 else 0.0
    return StageMetrics(
        name=name, replicas=replicas, cpus=[int(c) for c in cpus], frames=int(frames),
        service_ms_p50=percentile_ms(service_s, 50), service_ms_p99=percentile_ms(service_s, 99),
        wait_ms_p50=percentile_ms(wait_s, 50), utilisation=round(float(util), 4),
        service_ms_mean=float(np.mean(service_s) * 1e3) if len(service_s) else 0.0,
        wait_ms_p99=percentile_ms(wait_s, 99),
        replica_cpus=[[int(c) for c in rc] for rc in replica_cpus],
    )


@dataclass
class PipelineResult:
    """End-to-end figures of a run plus per-stage metrics; ``outputs`` per ``keep_outputs``.

    ``throughput_fps`` is the steady-state departure rate ((frames - 1) over the time between the
    first and the last result), so pipeline fill does not count against it; ``latency_ms_*`` is
    from a frame's entry into the pipeline to its result.
    """

    throughput_fps: float
    latency_ms_p50: float
    latency_ms_p99: float
    stages: list[StageMetrics]
    frames: int
    wall_s: float
    mode: str = "pipeline"
    latency_ms_mean: float = 0.0
    outputs: list[list[np.ndarray]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (outputs are left out: they are arrays)."""
        return {
            "mode": self.mode,
            "frames": self.frames,
            "wall_s": round(self.wall_s, 6),
            "throughput_fps": self.throughput_fps,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_p99": self.latency_ms_p99,
            "latency_ms_mean": self.latency_ms_mean,
            "stages": [s.to_dict() for s in self.stages],
        }


#: Completions closer together than this share of the mean interval came out as one group (a
#: micro-batching stage hands back its whole batch at once).
GROUP_GAP = 0.05
#: A run keeps this many of its first completion times (enough to find its first group).
FIRST_COMPLETIONS = 64


def group_end(done: Sequence[float], i: int, gap: float) -> int:
    """The last index of the completion group ``done[i]`` belongs to (times ascending)."""
    while i < len(done) - 1 and done[i + 1] - done[i] <= gap:
        i += 1
    return i


def throughput_fps(first: Sequence[float], t_last: float, frames: int, wall_s: float) -> float:
    """Steady-state rate of a run from its first completion times (``first``, at least one),
    the last one and the frame count: the frames after the first completion group over the time
    from that group's end to the last completion. Without groups this is (frames - 1) over
    first-to-last; with them, a batch that completes at once is not counted as done in no
    time. frames / wall for runs too short to tell."""
    if frames >= 2 and first and t_last > first[0]:
        gap = GROUP_GAP * (t_last - first[0]) / (frames - 1)
        i = group_end(first, 0, gap)
        if i < frames - 1 and t_last > first[i]:
            return float((frames - 1 - i) / (t_last - first[i]))
    return float(frames / wall_s) if wall_s > 0 else 0.0


#: Whole periods a timed run holds at least, so that :func:`whole_period_fps` can rate it.
MIN_PERIODS = 3


def warmup_frames(frames: int) -> int:
    """Frames fed before a timed window of ``frames``, every round and every system alike (a
    bench, a decision's rounds, a refinement's evaluations): a tenth of the window, two at
    least."""
    return max(2, frames // 10)


def timed_frames(frames: int, period: int) -> int:
    """``frames`` rounded up to whole periods, and to at least :data:`MIN_PERIODS` of them: a
    shorter run of a batching system is rated by its completion groups, and two replicas
    handing back four frames each in one burst read 100,000 fps for a 12 fps VGG-16 in a
    five-frame window (seen on a board's measure-to-decide while developing)."""
    period = max(1, period)
    return whole_periods(max(frames, MIN_PERIODS * period if period > 1 else 1), period)


def whole_period_fps(first: Sequence[float], last: Sequence[float], frames: int,
                     period: int) -> float | None:
    """The rate over whole periods of a run whose completions repeat their pattern every
    ``period`` frames (replicas x micro-batch): from the end of the first period to the end of
    the last whole one (the benchmark estimator's rule), from the run's first completion times
    (``first``, at least ``period``) and its last ``period`` ones (``last``). None for a run of
    fewer than three periods. Two replicas batching four frames return them in bursts a few
    milliseconds apart (1 + 7, 4 + 4), which a rule that finds the first group by gaps misreads."""
    if period < 2 or frames < MIN_PERIODS * period or len(first) < period or len(last) < period:
        return None
    start = period - 1
    stop = start + (frames - 1 - start) // period * period
    t_stop = last[stop - (frames - len(last))]
    return float((stop - start) / (t_stop - first[start])) if t_stop > first[start] else None


class RunRecord:
    """A run's end-to-end figures as its frames complete (submission to result): what both
    executors, the multi-process pipeline and an inline stage, summarise the same way.
    ``period``: frames after which the completions repeat their pattern (replicas x batch)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, period: int = 1) -> None:
        self.latency = SampleBuffer(capacity)
        self.frames = 0
        self.t_first_in = self.t_last_out = 0.0
        self.period = max(1, period)
        self.first_out: list[float] = []  # the run's first completion times
        self.last_out: deque[float] = deque(maxlen=self.period)  # and its last ones

    def add(self, t_sub: float, now: float) -> None:
        """One frame submitted at ``t_sub`` completed at ``now`` (``time.perf_counter``)."""
        if self.frames == 0:
            self.t_first_in = t_sub
        if len(self.first_out) < max(FIRST_COMPLETIONS, self.period):
            self.first_out.append(now)
        self.last_out.append(now)
        self.t_last_out = now
        self.frames += 1
        self.latency.add(now - t_sub)

    @property
    def wall_s(self) -> float:
        return max(self.t_last_out - self.t_first_in, 0.0)

    def result(self, stages: list[StageMetrics], outputs: list | None,
               mode: str = "pipeline") -> PipelineResult:
        lat = self.latency.values()
        wall = self.wall_s
        fps = whole_period_fps(self.first_out, self.last_out, self.frames, self.period)
        return PipelineResult(
            throughput_fps=fps if fps is not None else throughput_fps(
                self.first_out, self.t_last_out, self.frames, wall),
            latency_ms_p50=percentile_ms(lat, 50), latency_ms_p99=percentile_ms(lat, 99),
            latency_ms_mean=float(np.mean(lat) * 1e3) if lat.size else 0.0,
            stages=stages, frames=self.frames, wall_s=wall, outputs=outputs, mode=mode)
