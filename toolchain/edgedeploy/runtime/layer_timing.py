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
                 clock: Callable[[], float] = time.monotonic,
                 on_done: OnDone | None = None) -> list[tuple[int, Measurement]]:
    """Measure tasks ``0..n-1`` in order until ``budget_s`` (counted on ``clock``) is spent.

    ``expect_ms[i]`` is task i's predicted time (the prior). A task is expected to cost
    RUNS_PER_TASK runs, scaled by how the measurements so far compare with the prior, plus the
    set-up its group (``groups[i]``, e.g. its primitive) has cost so far beyond its runs
    (packing an FFT primitive's weights can take seconds); a task that would overrun the budget
    is skipped, so a small budget still yields many samples and is not overrun by a last
    expensive task. Returns (task index, measurement) for each task measured.
    """
    expect = np.asarray(expect_ms, dtype=float)
    keys = list(groups) if groups is not None else [None] * len(expect)
    start = clock()
    done: list[tuple[int, Measurement]] = []
    ratios: list[float] = []
    setup_s: dict[Hashable, list[float]] = {}
    for i in range(len(expect)):
        elapsed = clock() - start
        scale = float(np.median(ratios)) if ratios else 1.0
        setup = float(np.median(setup_s[keys[i]])) if keys[i] in setup_s else 0.0
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
        setup_s.setdefault(keys[i], []).append(max(took - m.ms * RUNS_PER_TASK / 1000.0, 0.0))
        if on_done is not None:
            elapsed = clock() - start
            left = float(np.sum(expect[i + 1:])) * scale * RUNS_PER_TASK / 1000.0
            on_done(i, m, elapsed, min(budget_s - elapsed, left))
    return done
