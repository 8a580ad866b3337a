"""Peak memory of a plan's stage processes: what ``constraints.max_memory_mb`` bounds.

Why: the bound used to reach only each primitive's workspace (:func:`planner.select.option_mask`),
so ``max_memory_mb: 1`` passed silently for a model whose weights alone are 4.7 MiB. A stage runs
in a process of its own (each replica too), and that process holds what the runtime executor and
``benchmarks.memory.memory_budget`` account for:

* the weights of its layers: packed for a conv primitive (a Winograd layer keeps its transformed
  kernels, not the raw ones), raw for native ops and for the layers a segment engine runs (the
  session keeps its own copy) -- ``GraphExecutor.weight_bytes``;
* walking its layers in order, the largest sum of the activations live while a layer runs (its
  inputs and outputs included; a tensor lives from its producer, or the stage's start, to its
  last reader in the stage, or the stage's end when a later stage or the caller wants it) plus
  that layer's workspace.

The planner keeps the plan it chose when every stage fits, else takes the best other candidate
(by the objective, under the same limits) that fits, else refuses naming the smallest peak any
candidate reaches (:func:`fit_memory`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgedeploy.errors import InfeasibleError
from edgedeploy.planner.baselines import Baseline
from edgedeploy.planner.partition import Candidate, Mapping, Stage
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.solve import Solution, meets, objective_key, stage_choices
from edgedeploy.runtime import ir
from edgedeploy.runtime.engines import is_segment_choice
from edgedeploy.runtime.vocab import NATIVE

MIB = 2**20


@dataclass(frozen=True)
class StageMemory:
    """Bytes one stage process holds: its weights, and its peak of live activations plus the
    running layer's workspace."""

    weights: int
    activations_and_workspace: int

    @property
    def total(self) -> int:
        return self.weights + self.activations_and_workspace


@dataclass(frozen=True)
class PlanMemory:
    stages: tuple[StageMemory, ...]

    @property
    def peak(self) -> StageMemory:
        """The stage process that needs the most (the one the bound must hold for)."""
        return max(self.stages, key=lambda s: s.total)


class MemoryModel:
    """Stage memory of any plan of one problem. Packed weight sizes are computed once per
    (layer, choice), only for the choices a checked plan makes."""

    def __init__(self, problem: Problem, graph: ir.Graph) -> None:
        by_name = {layer.name: layer for layer in graph.layers}
        missing = [spec.name for spec in problem.layers if spec.name not in by_name]
        if missing:
            raise ValueError(f"the graph lacks the problem's layers {missing[:3]}")
        self.problem, self.graph = problem, graph
        self.layers = [by_name[spec.name] for spec in problem.layers]
        n = problem.n_layers
        self.reads: list[list[int]] = [[] for _ in range(n)]
        self.writes: list[list[int]] = [[] for _ in range(n)]
        for k, t in enumerate(problem.tensors):
            if t.producer >= 0:
                self.writes[t.producer].append(k)
            for c in t.consumers:
                self.reads[c].append(k)
        self._weights: dict[tuple[int, str], int] = {}

    def weight_bytes(self, index: int, choice: str) -> int:
        """What layer ``index`` keeps resident under ``choice`` (GraphExecutor.weight_bytes)."""
        key = (index, choice)
        if key not in self._weights:
            layer = self.layers[index]
            raw = {role: self.graph.weights[k] for role, k in layer.weights.items()
                   if k in self.graph.weights}
            if layer.op == ir.CONV2D and choice != NATIVE and not is_segment_choice(choice):
                from edgedeploy.runtime import primitives

                raw = primitives.get(choice).transform_weights(layer.descriptor, raw)
            self._weights[key] = int(sum(np.asarray(a).nbytes for a in raw.values()))
        return self._weights[key]

    def stage(self, start: int, stop: int, choices: Sequence[str]) -> StageMemory:
        """Memory of the process running layers ``[start, stop)`` with per-layer ``choices``
        (indexed like the problem's layers)."""
        tensors = self.problem.tensors
        last: dict[int, int] = {}  # tensor -> its last reader in the stage (-1: none)
        keep: set[int] = set()  # produced here and wanted after the stage
        live: dict[int, int] = {}
        for k, t in enumerate(tensors):
            readers = [c for c in t.consumers if start <= c < stop]
            last[k] = max(readers, default=-1)
            if start <= t.producer < stop:
                if t.is_output or any(c >= stop for c in t.consumers):
                    keep.add(k)
            elif t.producer < start and readers:
                live[k] = t.nbytes  # a stage input, held from the start
        peak = 0
        weights = 0
        for i in range(start, stop):
            spec = self.problem.layers[i]
            choice = choices[i]
            work = spec.workspace_bytes[spec.options.index(choice)] if choice in spec.options \
                else 0
            produced = {k: tensors[k].nbytes for k in self.writes[i]}
            peak = max(peak, sum(live.values()) + sum(produced.values()) + work)
            live.update(produced)
            for k in self.reads[i] + self.writes[i]:
                if k not in keep and last[k] <= i:
                    live.pop(k, None)
            weights += self.weight_bytes(i, choice)
        return StageMemory(weights, peak)

    def plan(self, stages: Sequence[Stage], choices: Sequence[str]) -> PlanMemory:
        return PlanMemory(tuple(self.stage(s.start, s.stop, choices) for s in stages))


#: Per-primitive workspace bounds (MiB) of the leaner selections tried when a plan does not fit:
#: fixed, so the smallest peak reported for one limit is found again under that value.
LEAN_WORKSPACE_MB = (16.0, 4.0, 1.0, 0.25, 0.0)


def fit_memory(problem: Problem, solution: Solution, max_memory_mb: float,
               graph: ir.Graph, leaner: Sequence[Solution] = ()) -> Solution:
    """``solution`` when its plan's every stage process fits ``max_memory_mb``; else the best
    fitting candidate (mapping candidates and runnable baselines under the solution's limits,
    by the objective) of ``solution`` or of the ``leaner`` solutions (the same problem solved
    with smaller per-primitive workspace bounds) as the plan; else InfeasibleError naming the
    constraint and the smallest peak any of them reaches."""
    model = MemoryModel(problem, graph)
    limit = max_memory_mb * MIB
    pool: list[tuple[Solution, Candidate | Baseline, tuple[Stage, ...], Sequence[str]]] = [
        (solution, solution.best, solution.best.stages, solution.choices(problem))]
    for sol in (solution, *leaner):
        pool += [(sol, c, c.stages, stage_choices(problem, sol.selection, c))
                 for c in sol.mapping.candidates if meets(c.metrics, sol.limits)]
        pool += [(sol, b, b.stages, b.choices) for b in sol.baselines
                 if b.runnable and b.stages and b.choices and meets(b.metrics, sol.limits)]
    ranked = sorted(enumerate(pool), key=lambda e: (
        e[0] > 0, objective_key(solution.objective, e[1][1].metrics), e[0]))
    smallest: tuple[PlanMemory, str] | None = None
    for k, (sol, cand, stages, choices) in ranked:
        need = model.plan(stages, choices)
        if need.peak.total <= limit:
            return solution if k == 0 else _with_plan(sol, cand)
        if smallest is None or need.peak.total < smallest[0].peak.total:
            smallest = (need, _name(cand))
    assert smallest is not None  # the pool holds at least the chosen plan
    peak = smallest[0].peak
    reach = math.ceil(peak.total / MIB * 100) / 100
    raise InfeasibleError(
        f"constraints.max_memory_mb: {max_memory_mb:g} MB is below what any candidate plan "
        f"needs: the smallest reachable is {reach:.2f} MB per stage process ({smallest[1]}: "
        f"weights {peak.weights / MIB:.2f} MB + live activations and workspace "
        f"{peak.activations_and_workspace / MIB:.2f} MB)",
        hint=f"set constraints.max_memory_mb to at least {reach:.2f}, or allow more pipeline "
             "stages (pipeline.max_stages) so that each stage holds fewer weights")


def _name(cand: Candidate | Baseline) -> str:
    if isinstance(cand, Baseline):
        return f"baseline {cand.name}"
    return f"a {len(cand.stages)}-stage plan"


def _with_plan(solution: Solution, cand: Candidate | Baseline) -> Solution:
    """The solution with ``cand`` as its plan (a baseline becomes the promoted plan)."""
    if isinstance(cand, Baseline):
        return Solution(solution.selection, solution.mapping, solution.pareto,
                        solution.baselines, solution.limits, solution.objective, promoted=cand)
    mapping = Mapping(cand, solution.mapping.candidates, solution.mapping.exact)
    return Solution(solution.selection, mapping, solution.pareto, solution.baselines,
                    solution.limits, solution.objective)
