"""Unguided search baselines with the same budget, moves and measurements as the refiner.

For a fair comparison (``refine score``) every baseline starts where the guided search starts
when ``starts`` is given: the plan, measured first, then the plan's other seeds (its Pareto
neighbours), the best of them the incumbent (without ``starts``: a random configuration, as in
Shisha's comparison). After that they use no cost model: random search draws independent
configurations from the whole space (structure *and* each layer's primitive, uniformly among
those its stage's unit runs); hill climbing takes the first neighbour (same mutation operators)
that measures better and restarts from a random configuration at a local optimum; simulated
annealing accepts a worse neighbour with probability exp(-relative loss / T), T falling
geometrically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.candidate import Candidate, Space
from edgedeploy.refine.measure import Measurement
from edgedeploy.refine.operators import mutate, random_candidate
from edgedeploy.refine.search import Budget, Goal, OnEval, SearchResult, _Run


def _finish(run: _Run, start: tuple[Candidate, Measurement]) -> SearchResult:
    return SearchResult(start, run.best or start, run.records, time.perf_counter() - run.t0)


def _begin(run: _Run, space: Space, rng, start: Candidate | None,
           starts: Sequence[Candidate]) -> tuple[Candidate, Measurement]:
    """Measure the starting configurations (``start`` alone when given, else ``starts``, else
    a random one; the first one first); the best is the incumbent. Returns the first one with
    its measurement (the search's ``start``)."""
    starts = [start] if start is not None else list(starts)
    first = starts[0] if starts else random_candidate(space, rng)
    start = (first, run.measure(first, "seed"))
    run.best = start
    for c in starts[1:]:
        if run.left() and c not in run.cache:
            run.offer(c, run.measure(c, "seed"))
    return start


def random_search(space: Space, cache: MeasureCache, *, goal: Goal | None = None,
                  budget: Budget | None = None, seed: int = 0, on_eval: OnEval | None = None,
                  start: Candidate | None = None, starts: Sequence[Candidate] = ()
                  ) -> SearchResult:
    rng = np.random.default_rng(seed)
    run = _Run(cache, goal or Goal(), budget or Budget(), on_eval)
    first = _begin(run, space, rng, start, starts)
    tries = 0
    while run.left() and tries < 50 * run.budget.max_evals:
        tries += 1
        c = random_candidate(space, rng)
        if c in cache:
            continue
        run.offer(c, run.measure(c, "random"))
    return _finish(run, first)


def _neighbour(cur: Candidate, space: Space, cache: MeasureCache, rng) -> Candidate | None:
    for _ in range(30):
        c = mutate(cur, space, rng)
        if c is not None and c not in cache:
            return c
    return None


def hill_climb(space: Space, cache: MeasureCache, *, goal: Goal | None = None,
               budget: Budget | None = None, seed: int = 0, on_eval: OnEval | None = None,
               start: Candidate | None = None, starts: Sequence[Candidate] = ()
               ) -> SearchResult:
    rng = np.random.default_rng(seed)
    run = _Run(cache, goal or Goal(), budget or Budget(), on_eval)
    first = _begin(run, space, rng, start, starts)
    cur = run.best or first
    while run.left():
        c = _neighbour(cur[0], space, cache, rng)
        if c is None:  # a local optimum with every neighbour seen: restart
            c = random_candidate(space, rng)
            if c in cache:
                continue
            cur = (c, run.measure(c, "restart"))
            continue
        m = run.measure(c, "neighbour")
        run.offer(c, m)
        if run.better(m, cur[1]):
            cur = (c, m)
    return _finish(run, first)


def simulated_annealing(space: Space, cache: MeasureCache, *, goal: Goal | None = None,
                        budget: Budget | None = None, seed: int = 0,
                        on_eval: OnEval | None = None, t0: float = 0.2,
                        cooling: float = 0.9, start: Candidate | None = None,
                        starts: Sequence[Candidate] = ()) -> SearchResult:
    g = goal or Goal()
    rng = np.random.default_rng(seed)
    run = _Run(cache, g, budget or Budget(), on_eval)
    first = _begin(run, space, rng, start, starts)
    cur = run.best or first
    temp = t0
    while run.left():
        c = _neighbour(cur[0], space, cache, rng)
        if c is None:
            c = random_candidate(space, rng)
            if c in cache:
                continue
        m = run.measure(c, "anneal")
        run.offer(c, m)
        loss = 1 - g.value(m) / max(g.value(cur[1]), 1e-12)
        if run.better(m, cur[1]) or rng.random() < math.exp(-max(loss, 0) / max(temp, 1e-6)):
            cur = (c, m)
        temp *= cooling
    return _finish(run, first)


BASELINES = {"random": random_search, "hill_climbing": hill_climb,
             "simulated_annealing": simulated_annealing}
