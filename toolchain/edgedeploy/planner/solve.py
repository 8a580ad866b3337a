"""The whole planning step on an explicit problem: select, map, baselines, Pareto set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgedeploy.planner.baselines import Baseline, baselines
from edgedeploy.planner.pareto import pareto_front
from edgedeploy.planner.partition import Candidate, Limits, Mapping, map_stages
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.select import Selection, select


@dataclass
class Solution:
    selection: Selection
    mapping: Mapping
    pareto: list[Candidate]
    baselines: list[Baseline]
    limits: Limits
    objective: str

    @property
    def best(self) -> Candidate:
        return self.mapping.best

    def choices(self, problem: Problem) -> list[str]:
        """Each layer's option name under the configuration of the stage that runs it."""
        return stage_choices(problem, self.selection, self.best)


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
    return Solution(selection, mapping, pareto_front(mapping.candidates),
                    baselines(problem, selection), limits, objective)


def solve(problem: Problem, manifest) -> Solution:
    """Plan with the manifest's objective, constraints, pipeline and primitive settings."""
    c = manifest.constraints
    limits = Limits(max_latency_ms=c.max_latency_ms, min_throughput_fps=c.min_throughput_fps,
                    max_power_w=c.max_power_w, max_stages=manifest.pipeline.max_stages,
                    allow_replication=manifest.pipeline.allow_replication)
    return solve_problem(problem, manifest.objective, limits, manifest.primitives.allow,
                         manifest.primitives.deny, c.max_memory_mb)
