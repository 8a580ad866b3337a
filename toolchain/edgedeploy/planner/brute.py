"""Brute-force oracles for tests: every option assignment, every contiguous mapping.

Exponential on purpose: they define what "optimal" means, pricing plans with the same functions as
the solvers (:func:`select.layer_times`, :func:`partition.evaluate`), so a test can compare the
solvers' answers with the true optimum on small problems.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np

from edgedeploy.planner.partition import (
    Candidate,
    Limits,
    Stage,
    StageCosts,
    evaluate,
    objective_key,
    stage_options,
)
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.select import Selection, layer_times


def brute_select(problem: Problem, masks: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """(n_configs,) the minimum total time over every allowed assignment, per configuration."""
    ranges = [np.nonzero(m)[0] if masks is not None else range(len(layer.options))
              for m, layer in zip(masks or [None] * problem.n_layers, problem.layers, strict=True)]
    best = np.full(len(problem.configs), np.inf)
    for combo in itertools.product(*ranges):
        choice = np.repeat(np.array(combo)[:, None], len(problem.configs), axis=1)
        best = np.minimum(best, layer_times(problem, choice).sum(axis=0))
    return best


def _splits(n: int, max_stages: int, allowed: Sequence[int]) -> Iterator[list[tuple[int, int]]]:
    for k in range(1, min(max_stages, n) + 1):
        for cuts in itertools.combinations(allowed, k - 1):
            bounds = [0, *cuts, n]
            yield list(itertools.pairwise(bounds))


def brute_mappings(problem: Problem, selection: Selection, limits: Limits) -> list[Candidate]:
    """Every valid mapping (disjoint cores, at most max_stages stages) with its metrics."""
    costs = StageCosts(problem, selection)
    opts = stage_options(problem, limits)
    caps = [c.capacity for c in problem.clusters]
    out = []
    for ranges in _splits(problem.n_layers, limits.max_stages, problem.cuts):
        for picks in itertools.product(opts, repeat=len(ranges)):
            used = [0] * len(caps)
            for _c, _r, q, u in picks:
                used[q] += u
            if any(u > c for u, c in zip(used, caps, strict=True)):
                continue
            stages = tuple(Stage(a, b, c, r) for (a, b), (c, r, _q, _u)
                           in zip(ranges, picks, strict=True))
            m = evaluate(problem, costs, stages)
            if np.isfinite(m.period_ms):
                out.append(Candidate(stages, m))
    return out


def brute_best(problem: Problem, selection: Selection, objective: str,
               limits: Limits) -> Candidate | None:
    """The optimum under the objective and constraints, or None when nothing is feasible."""
    from edgedeploy.planner.partition import _meets

    feasible = [c for c in brute_mappings(problem, selection, limits) if _meets(c.metrics, limits)]
    return min(feasible, key=objective_key(objective)) if feasible else None
