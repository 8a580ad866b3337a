"""Profiling a board twin like a real board: ``edgedeploy profile --target sim:<board>``.

The profiler (``costmodel.profiler.run_profile``) takes any ``measure(descriptor, primitive,
config)``; :class:`TwinMeasure` answers it from the twin's hidden per-layer truth plus what a real
layer benchmark suffers (per-repetition jitter, occasional preemption, the median of the faster
half of the repetitions, as ``LocalMeasure`` reports). Time is *simulated*: each measurement
advances the twin's clock by its warm-up + repetitions + a set-up cost, and the budget is counted
on that clock, so ``--budget-s 60`` means 60 simulated device seconds (in a fraction of a real
second). Samples go to the twin's own profile (fingerprint ``sim-<board>-v1``), never the real
board's, and every answer says it is simulated. Deterministic for (board, seed, shapes, budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgedeploy.costmodel.configs import CoreConfig
from edgedeploy.costmodel.profiler import MAX_REPS, MIN_REPS, REP_TARGET_MS, Measurement
from edgedeploy.costmodel.shapes import model_shapes
from edgedeploy.runtime import ir
from edgedeploy.schemas.target import Target
from edgedeploy.twins.groundtruth import GroundTruth

REP_SIGMA = 0.05
SPIKE_P = 0.04
SETUP_MS = 25.0  # building the layer / session and its inputs on the device


class SimClock:
    """Simulated device seconds (the profiler's budget clock for a twin)."""

    def __init__(self) -> None:
        self.s = 0.0

    def __call__(self) -> float:
        return self.s


class TwinMeasure:
    """``measure(descriptor, primitive, config)`` on a twin; see the module docstring."""

    simulated = True

    def __init__(self, target: Target, seed: int = 0) -> None:
        self.target = target
        self.truth = GroundTruth.layers_only(target, seed)
        self.clock = SimClock()
        self._rng = np.random.default_rng(seed + 104729)
        self.calls = 0

    def __call__(self, d: ir.Descriptor, primitive: str, config: CoreConfig) -> Measurement:
        self.calls += 1
        true = self.truth.unit_ms(d, primitive, config.cluster, config.cores)
        if not np.isfinite(true):
            self.clock.s += SETUP_MS / 1e3
            return Measurement(float("inf"), 0, 0.0)
        reps = int(np.clip(REP_TARGET_MS / max(true, 1e-3), MIN_REPS, MAX_REPS))
        times = true * np.exp(self._rng.normal(0.0, REP_SIGMA, reps))
        times *= np.where(self._rng.random(reps) < SPIKE_P, self._rng.uniform(1.5, 3.0, reps), 1)
        self.clock.s += (SETUP_MS + true + float(times.sum())) / 1e3  # set-up, warm-up, reps
        fast = np.sort(times)[: max(1, (reps + 1) // 2)]
        med = float(np.median(fast))
        q1, q3 = np.percentile(times, [25, 75])
        return Measurement(med, reps, float((q3 - q1) / med))


def twin_shapes(kind: str = "designed") -> list[ir.Descriptor]:
    """The profiler's shapes: ``designed`` (zoo + space-filling) or ``space`` (space-filling)."""
    from edgedeploy.costmodel import shapes as shapes_mod

    if kind == "designed":
        return shapes_mod.designed_sample()
    return [d for d in shapes_mod.space_filling(160) if not shapes_mod.is_heldout(d)]


def profile_twin(target: Target, budget_s: float, *, seed: int = 0,
                 shapes: Sequence[ir.Descriptor] | None = None, progress=None) -> list:
    """Samples (``costmodel.Sample``, tag ``fit``) of ``budget_s`` simulated seconds on a twin.

    Shapes are measured in the profiler's order (``costmodel.profiler.tasks_for``): each on two
    configurations first, rotating over all of them (GPU included), then on the rest."""
    from edgedeploy.costmodel.profiler import run_profile

    measure = TwinMeasure(target, seed)
    todo = list(shapes) if shapes is not None else twin_shapes("space")
    return [s for s in run_profile(target, todo, budget_s, measure, "fit", progress, gpu=True,
                                   clock=measure.clock) if np.isfinite(s.ms)]


def profile_twin_into_store(target: Target, budget_s: float, *, seed: int = 0,
                            shapes: str = "designed", progress=None,
                            graph: ir.Graph | None = None) -> dict[str, Any]:
    """``edgedeploy profile --target sim:<board> [--model M]``: measure (the model's own layer
    shapes first, when given) and append to the twin's profile."""
    from edgedeploy.costmodel import open_profile

    prof = open_profile(target)
    before = len(prof.samples)
    first = model_shapes(graph) if graph is not None else []
    new = profile_twin(target, budget_s, seed=seed, shapes=first + twin_shapes(shapes),
                       progress=progress)
    prof.append(new)
    path = prof.save()
    return {"target": prof.target_name, "fingerprint": prof.fingerprint, "profile": str(path),
            "new_samples": len(new), "samples": before + len(new),
            "simulated": True, "budget_s": budget_s, "budget_clock": "simulated device seconds"}
