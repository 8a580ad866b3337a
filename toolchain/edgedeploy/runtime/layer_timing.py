"""Timing one layer shape with one primitive on given cores, and spending a budget on many.

This is the measuring half of the profiler. It lives in the runtime so that exactly the same
code times layers on this host (``costmodel.profiler.LocalMeasure``) and on a board
(``runtime.probe``, shipped there with the runtime package): warm-up, then repetitions for about
REP_TARGET_MS, the median of the faster half; the budget is spent task by task in order,
skipping a task whose expected time would overrun it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedeploy.runtime import affinity, ir
from edgedeploy.runtime.vocab import ONNXRUNTIME

#: Target wall time of the timed repetitions of one measurement, and their bounds.
REP_TARGET_MS = 40.0
MIN_REPS, MAX_REPS = 3, 15
#: A run slower than this is timed twice after the warm-up (huge layers, slow primitives).
SLOW_RUN_MS = 400.0
#: Relative interquartile spread above which a measurement is taken again, and how often.
NOISY_SPREAD = 0.25
RETRIES = 2
#: warm-up + repetitions + setup: about this many runs of an ordinary layer per measurement
RUNS_PER_TASK = 6
#: Set-ups of a group seen before its next one is priced by their trend in the task's size
#: (:func:`expected_setup_s`), not by their median.
SETUP_TREND_MIN = 3


@dataclass(frozen=True)
class Measurement:
    ms: float
    reps: int
    spread: float


def time_runs(fn: Callable[[], object]) -> Measurement:
    """Warm-up, then repetitions for about REP_TARGET_MS (3 to 15); the median of the faster
    half of them, with the relative interquartile spread of all."""
    t0 = time.perf_counter()
    fn()  # warm-up: caches, page faults, BLAS thread start
    first = (time.perf_counter() - t0) * 1000.0
    if first > SLOW_RUN_MS:  # two timed runs; their disagreement is the spread
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - t0) * 1000.0)
        return Measurement(min(runs), 2, abs(runs[0] - runs[1]) / min(runs))
    reps = int(np.clip(REP_TARGET_MS / max(first, 1e-3), MIN_REPS, MAX_REPS))
    times = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - t0) * 1000.0
    # Interference from other processes only ever adds time (a preempted BLAS thread stalls
    # its barrier for a whole time slice), so the layer's own cost is the median of the
    # faster half of the repetitions, not of all of them.
    fast = np.sort(times)[: max(1, (reps + 1) // 2)]
    med = float(np.median(fast))
    q1, q3 = np.percentile(times, [25, 75])
    return Measurement(med, reps, float((q3 - q1) / med) if med > 0 else 0.0)


class LayerTimer:
    """Times (descriptor, primitive, cpus): the process is pinned to ``cpus`` and BLAS bounded
    to as many threads; ``onnxruntime`` is a one-node session of the conv. The caller restores
    the process's affinity when done.

    The operands of the last (descriptor, primitive) are kept: the profiler times one shape and
    primitive on every core configuration in a row, and packing weights (an FFT of every kernel)
    can cost more than the runs it serves."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self._last: tuple[tuple[ir.Descriptor, str], tuple[np.ndarray, Any]] | None = None

    def __call__(self, d: ir.Descriptor, primitive: str, cpus: Sequence[int]) -> Measurement:
        """One measurement, repeated (up to RETRIES times) while its repetitions disagree by more
        than NOISY_SPREAD: a burst of load from another process; the quietest attempt wins."""
        best = self._once(d, primitive, cpus)
        for _ in range(RETRIES):
            if best.spread <= NOISY_SPREAD:
                break
            again = self._once(d, primitive, cpus)
            best = again if again.ms < best.ms else best
        return best

    def _operands(self, d: ir.Descriptor, primitive: str) -> tuple[np.ndarray, Any]:
        """The input and the weights as ``primitive`` runs them (raw for onnxruntime)."""
        if self._last is not None and self._last[0] == (d, primitive):
            return self._last[1]
        self._last = None  # let the old operands go before the new ones are made
        x = self._rng.standard_normal((d.n, d.c_in, d.h, d.w), dtype=np.float32)
        w = self._rng.standard_normal((d.c_out, d.c_in // d.groups, d.kernel_h, d.kernel_w),
                                      dtype=np.float32) * 0.1
        weights = {"weight": w, "bias": np.zeros(d.c_out, dtype=np.float32)}
        if primitive != ONNXRUNTIME:
            from edgedeploy.runtime import primitives

            prim = primitives.get(primitive)
            weights = prim.transform_weights(d, weights)
            if prim.layout_in == "nhwc":
                x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        self._last = ((d, primitive), (x, weights))
        return x, weights

    def _once(self, d: ir.Descriptor, primitive: str, cpus: Sequence[int]) -> Measurement:
        cpus = list(cpus)
        affinity.pin_process(cpus)
        x, weights = self._operands(d, primitive)
        if primitive == ONNXRUNTIME:
            from edgedeploy.runtime.engines.onnxruntime import OrtSegment
            from edgedeploy.runtime.onnx_conv import conv_model

            seg = OrtSegment(conv_model(d, weights["weight"], weights["bias"]), cpus=cpus)
            feeds = {"x": x}
            return time_runs(lambda: seg.run(feeds))
        from edgedeploy.runtime import primitives
        from edgedeploy.runtime.primitives.registry import Activation

        prim = primitives.get(primitive)
        act = Activation()
        with affinity.limit_blas_threads(len(cpus)):
            return time_runs(lambda: prim.run(d, weights, x, act))


#: on_done(task index, its measurement, elapsed s, eta s)
OnDone = Callable[[int, Measurement, float, float], None]


def spend_budget(expect_ms: Sequence[float], budget_s: float,
                 measure: Callable[[int], Measurement], *,
                 groups: Sequence[Hashable] | None = None,
                 packs: Sequence[Hashable] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_done: OnDone | None = None) -> list[tuple[int, Measurement]]:
    """Measure tasks ``0..n-1`` in order until ``budget_s`` (counted on ``clock``) is spent.

    ``expect_ms[i]`` is task i's predicted time (the prior). A task is expected to cost
    RUNS_PER_TASK runs, scaled by how the measurements so far compare with the prior, plus the
    set-up its group (``groups[i]``, e.g. its primitive) has cost so far beyond its runs
    (packing an FFT primitive's weights can take seconds; :func:`expected_setup_s`); a task
    that would overrun the budget is skipped, so a small budget still yields many samples and
    is not overrun by a last expensive task. ``packs[i]``: what task i's set-up makes, which
    the next task reuses where it is the same (:class:`LayerTimer` keeps the last operands): a
    repeat is priced by the group's repeats, a new one by the group's new ones. Returns (task
    index, measurement) for each task measured.
    """
    expect = np.asarray(expect_ms, dtype=float)
    keys = list(groups) if groups is not None else [None] * len(expect)
    start = clock()
    done: list[tuple[int, Measurement]] = []
    ratios: list[float] = []
    #: per group and whether the set-up was a repeat: (the prior's ms, seconds of set-up
    #: beyond the runs) of each task measured
    setups: dict[tuple[Hashable, bool], list[tuple[float, float]]] = {}
    last = None  # the pack the last measured task made
    for i in range(len(expect)):
        elapsed = clock() - start
        scale = float(np.median(ratios)) if ratios else 1.0
        repeat = packs is not None and last is not None and packs[i] == last
        setup = expected_setup_s(setups.get((keys[i], repeat), []), float(expect[i]))
        cost_s = expect[i] * scale * RUNS_PER_TASK / 1000.0 + setup
        if elapsed + cost_s > budget_s:
            if elapsed >= budget_s:
                break
            continue
        t0 = clock()
        m = measure(i)
        took = clock() - t0
        done.append((i, m))
        if np.isfinite(expect[i]) and expect[i] > 0:
            ratios.append(m.ms / expect[i])
        setups.setdefault((keys[i], repeat), []).append(
            (float(expect[i]), max(took - m.ms * RUNS_PER_TASK / 1000.0, 0.0)))
        last = packs[i] if packs is not None else None
        if on_done is not None:
            elapsed = clock() - start
            left = float(np.sum(expect[i + 1:])) * scale * RUNS_PER_TASK / 1000.0
            on_done(i, m, elapsed, min(budget_s - elapsed, left))
    return done


def expected_setup_s(seen: Sequence[tuple[float, float]], expect_ms: float) -> float:
    """A task's set-up beyond its runs, from ``seen`` (the prior's ms and the set-up seconds of
    its group's tasks of its kind so far): their median, or where :data:`SETUP_TREND_MIN` of
    them span sizes, their power-law trend in the prior's ms (slope clipped to 0..1: constant
    to proportional). Packing an FFT primitive's weights grows with the layer: 0.01-0.75 s for
    layers the prior put at 0.25-4.3 ms, then 12 s for one at 48 ms, which the median of every
    FFT task's set-up (repeats on another core count, 0.01 s, among them) had priced at 0.39 s,
    so AlexNet's quick profile ran its 10 s of layers for 22 s (seen while developing)."""
    if not seen:
        return 0.0
    sized = [(e, s) for e, s in seen if np.isfinite(e) and e > 0]
    x = np.log([e for e, _ in sized]) if sized else np.zeros(0)
    if (len(sized) < SETUP_TREND_MIN or not np.isfinite(expect_ms) or expect_ms <= 0
            or float(np.ptp(x)) < 1e-6):
        return float(np.median([s for _, s in seen]))
    y = np.log([max(s, 1e-4) for _, s in sized])  # a set-up too short to time: 0.1 ms
    slope = float(np.clip(np.polyfit(x, y, 1)[0], 0.0, 1.0))
    # through the seen set-ups' centre, at the chosen slope
    return float(np.exp(np.mean(y) + slope * (np.log(expect_ms) - np.mean(x))))
