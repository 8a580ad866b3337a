"""The whole planning step on an explicit problem: select, map, baselines, Pareto set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgedeploy.planner.baselines import Baseline, baselines
from edgedeploy.planner.pareto import pareto_front
from edgedeploy.planner.partition import Candidate, Limits, Mapping, Metrics, map_stages
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.select import Selection, select

if TYPE_CHECKING:
    from edgedeploy.runtime.ir import Graph


@dataclass
class Solution:
    selection: Selection
    mapping: Mapping
    pareto: list[Candidate]
    baselines: list[Baseline]
    limits: Limits
    objective: str
    #: A runnable baseline the model predicts better than the solver's best (it becomes the
    #: plan): the planner never prefers what it predicts slower than a baseline.
    promoted: Baseline | None = None
    _best: Candidate | None = None

    @property
    def best(self) -> Candidate:
        if self.promoted is None:
            return self.mapping.best
        if self._best is None:
            self._best = Candidate(self.promoted.stages or (), self.promoted.metrics)
        return self._best

    def choices(self, problem: Problem) -> list[str]:
        """Each layer's option name under the configuration of the stage that runs it."""
        return self.candidate_choices(problem, self.best)

    def candidate_choices(self, problem: Problem, cand: Candidate) -> list[str]:
        if self.promoted is not None and cand is self.best:
            return list(self.promoted.choices or ())
        return stage_choices(problem, self.selection, cand)


def objective_key(objective: str, m: Metrics) -> float:
    """What the objective minimises (the period for throughput)."""
    return {"throughput": m.period_ms, "latency": m.latency_ms,
            "energy": m.energy_mj}[objective]


def meets(m: Metrics, limits: Limits) -> bool:
    return ((limits.max_latency_ms is None or m.latency_ms <= limits.max_latency_ms)
            and (limits.min_throughput_fps is None
                 or m.throughput_fps >= limits.min_throughput_fps)
            and (limits.max_power_w is None or m.power_w <= limits.max_power_w))


def promote_baseline(objective: str, best: Candidate, found: Sequence[Baseline],
                     limits: Limits) -> Baseline | None:
    """The runnable baseline the model predicts better than ``best`` under the limits, if any."""
    better = [b for b in found if b.runnable and meets(b.metrics, limits)
              and objective_key(objective, b.metrics) < objective_key(objective, best.metrics)]
    return min(better, key=lambda b: (objective_key(objective, b.metrics), b.name), default=None)


def stage_choices(problem: Problem, selection: Selection, cand: Candidate) -> list[str]:
    out = []
    for s in cand.stages:
        for i in range(s.start, s.stop):
            out.append(problem.layers[i].options[int(selection.choice[i, s.config])])
    return out


def solve_problem(problem: Problem, objective: str = "throughput", limits: Limits | None = None,
                  allow: Sequence[str] = (), deny: Sequence[str] = (),
                  max_memory_mb: float | None = None) -> Solution:
    limits = limits or Limits()
    ws = max_memory_mb * 2**20 if max_memory_mb is not None else None
    selection = select(problem, allow, deny, ws)
    mapping = map_stages(problem, selection, objective, limits)
    found = baselines(problem, selection, limits.allow_replication)
    return Solution(selection, mapping, pareto_front(mapping.candidates), found, limits,
                    objective, promote_baseline(objective, mapping.best, found, limits))


def solve(problem: Problem, manifest, graph: Graph | None = None) -> Solution:
    """Plan with the manifest's objective, constraints, pipeline and primitive settings.

    ``max_memory_mb`` bounds each stage process's whole peak (weights, live activations,
    workspace: :mod:`planner.memory`), which needs the model's weights: ``graph`` when the
    caller holds it, else the manifest's model is imported again (only under that constraint).
    """
    c = manifest.constraints
    limits = Limits.of(manifest, graph)
    solution = solve_problem(problem, manifest.objective, limits, manifest.primitives.allow,
                             manifest.primitives.deny, c.max_memory_mb)
    if c.max_memory_mb is not None:
        from edgedeploy.errors import InfeasibleError
        from edgedeploy.planner.api import model_graph
        from edgedeploy.planner.memory import LEAN_WORKSPACE_MB, fit_memory

        held = graph if graph is not None else model_graph(manifest)
        try:
            solution = fit_memory(problem, solution, c.max_memory_mb, held)
        except InfeasibleError:  # leaner primitives (less workspace) may make a plan fit
            leaner = [solve_problem(problem, manifest.objective, limits,
                                    manifest.primitives.allow, manifest.primitives.deny, mb)
                      for mb in LEAN_WORKSPACE_MB]
            solution = fit_memory(problem, solution, c.max_memory_mb, held, leaner)
    return solution
