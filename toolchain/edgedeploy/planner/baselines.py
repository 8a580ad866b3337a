"""What a user would run without the planner, priced by the same cost model.

* ``best_single_cluster``: the whole model as one stage on all cores of the best cluster (or the
  GPU), with the planner's primitive choice.
* ``all_cores``: one stage on every CPU core, the planner's primitives.
* ``ort_default``: onnxruntime's default session: every layer on onnxruntime, every core.
* ``<engine>_threads`` / ``<engine>_replicas``: the whole model through one CPU segment engine
  (onnxruntime for ONNX, LiteRT for TFLite), one session with every core of the biggest cluster,
  or one one-thread session per core: what a user finds by hand. These are ordinary plans (a
  stage and a choice per layer), so the planner can never prefer a plan it predicts slower than
  them (:func:`engine_baselines`) and measurement can try them on the board.

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
    #: The baseline as an ordinary plan when the runner can run it as one (one stage and one
    #: choice per layer); None for a figure-only baseline (one session over several clusters).
    stages: tuple[Stage, ...] | None = None
    choices: tuple[str, ...] | None = None

    @property
    def runnable(self) -> bool:
        return self.stages is not None and self.choices is not None


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


def engine_baselines(problem: Problem, allow_replication: bool = True) -> list[Baseline]:
    """The whole model through each CPU segment engine every layer can use, threaded on the
    biggest CPU cluster and, if allowed, replicated one core per replica: plans, not figures."""
    from edgedeploy.runtime.engines import ENGINES, is_segment_choice

    cpu = [c for c in problem.clusters if not c.is_gpu]
    if not cpu:
        return []
    big = max(cpu, key=lambda c: (c.capacity, c.name))
    engines = sorted(set.intersection(*(set(layer.options) for layer in problem.layers)))
    out = []
    for engine in engines:
        if not is_segment_choice(engine) or ENGINES[engine].on_gpu:
            continue
        choice = np.array([[layer.options.index(engine)] * len(problem.configs)
                           for layer in problem.layers])
        costs = StageCosts(problem, Selection(choice, layer_times(problem, choice), True))
        names = tuple(engine for _ in problem.layers)
        ways = [("threads", _full_config(problem, big.name), 1,
                 f"whole model on {engine}, one session on {big.capacity} {big.name} cores")]
        one = next((i for i, c in enumerate(problem.configs)
                    if c.cluster == big.name and c.cores == 1), None)
        if allow_replication and big.capacity > 1:
            ways.append(("replicas", one, big.capacity,
                         f"whole model on {engine}, {big.capacity} one-thread replicas"))
        for kind, cfg, r, text in ways:
            if cfg is None:
                continue
            stages = (Stage(0, problem.n_layers, cfg, r),)
            m = evaluate(problem, costs, stages)
            if np.isfinite(m.period_ms):
                out.append(Baseline(f"{engine}_{kind}", text, m, stages, names))
    return out


def baselines(problem: Problem, selection: Selection,
              allow_replication: bool = True) -> list[Baseline]:
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
    return out + engine_baselines(problem, allow_replication)
