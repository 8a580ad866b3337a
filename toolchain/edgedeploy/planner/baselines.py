"""What a user would run without the planner, priced by the same cost model (issue 5, item 3).

* ``best_single_cluster``: the whole model as one stage on all cores of the best cluster (or the
  GPU), with the planner's primitive choice.
* ``all_cores``: one stage on every CPU core, the planner's primitives.
* ``ort_default``: onnxruntime's default session: every layer on onnxruntime, every core.

A stage spanning several CPU clusters has no configuration of its own in the cost model; it is
priced as a parallel-for with equal chunks per core (what onnxruntime's and OpenBLAS's static
schedules do): each cluster runs its share ``n_q / N`` at the speed of its own ``n_q`` cores and
the slowest cluster sets the time. On a single-cluster host this is exactly the all-cores config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedeploy.planner.partition import Metrics, Stage, StageCosts, evaluate
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.select import Selection, layer_times


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    metrics: Metrics


def _full_config(problem: Problem, cluster: str) -> int | None:
    cap = problem.cluster(cluster).capacity
    return next((i for i, c in enumerate(problem.configs)
                 if c.cluster == cluster and c.cores == cap), None)


def _all_cores(problem: Problem, layer_ms: np.ndarray) -> Metrics | None:
    cpu = [c for c in problem.clusters if not c.is_gpu]
    total = sum(c.capacity for c in cpu)
    worst = 0.0
    active = 0.0
    for cl in cpu:
        cfg = _full_config(problem, cl.name)
        if cfg is None:
            return None
        worst = max(worst, float(layer_ms[:, cfg].sum()) * cl.capacity / total)
        active += cl.active_w_per_core * cl.capacity
    if not np.isfinite(worst) or worst <= 0:
        return None
    energy = worst * active + problem.idle_w() * worst
    return Metrics((worst,), worst, 1000.0 / worst, worst, energy, energy / worst)


def baselines(problem: Problem, selection: Selection) -> list[Baseline]:
    """The baselines that apply to this problem (``ort_default``: onnxruntime on every layer)."""
    out = []
    costs = StageCosts(problem, selection)
    singles = []
    for cl in problem.clusters:
        cfg = _full_config(problem, cl.name)
        if cfg is None:
            continue
        m = evaluate(problem, costs, (Stage(0, problem.n_layers, cfg, 1),))
        if np.isfinite(m.period_ms):
            singles.append((m.period_ms, cl.name, m))
    if singles:
        _, name, m = min(singles, key=lambda x: (x[0], x[1]))
        out.append(Baseline("best_single_cluster", f"whole model on {name}, all its cores", m))
    m = _all_cores(problem, selection.layer_ms)
    if m is not None:
        out.append(Baseline("all_cores", "one stage on every CPU core", m))
    if all("onnxruntime" in layer.options for layer in problem.layers):
        choice = np.array([[layer.options.index("onnxruntime")] * len(problem.configs)
                           for layer in problem.layers])
        m = _all_cores(problem, layer_times(problem, choice))
        if m is not None:
            out.append(Baseline("ort_default", "onnxruntime's default session on every core", m))
    return out
