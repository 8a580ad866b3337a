"""Unguided search baselines with the same budget, moves and measurements as the refiner.

For a fair comparison (``refine score``) every baseline starts from the same configuration as the
guided search -- the plan, measured first -- when ``start`` is given (else from a random one, as
in Shisha's comparison); after that they use no cost model: random search draws independent
configurations; hill climbing takes the first neighbour (same mutation operators) that measures
better; simulated annealing accepts a worse neighbour with probability exp(-relative loss / T),
T falling geometrically.
"""

from __future__ import annotations

import math
import time

import numpy as np

from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.candidate import Candidate, Space
from edgedeploy.refine.operators import mutate, random_candidate
from edgedeploy.refine.search import Budget, Goal, OnEval, SearchResult, _Run


def _finish(run: _Run, start: tuple[Candidate, object]) -> SearchResult:
    return SearchResult(start, run.best or start, run.records,  # type: ignore[arg-type]
                        time.perf_counter() - run.t0)


def random_search(space: Space, cache: MeasureCache, base_choices: tuple[str, ...], *,
                  goal: Goal | None = None, budget: Budget | None = None, seed: int = 0,
                  on_eval: OnEval | None = None, start: Candidate | None = None) -> SearchResult:
    rng = np.random.default_rng(seed)
    run = _Run(cache, goal or Goal(), budget or Budget(), on_eval)
    first = start or random_candidate(space, rng, base_choices)
    start = (first, run.measure(first, "seed"))
    run.best = start
    tries = 0
    while run.left() and tries < 50 * run.budget.max_evals:
        tries += 1
        c = random_candidate(space, rng, base_choices)
        if c in cache:
            continue
        run.offer(c, run.measure(c, "random"))
    return _finish(run, start)


def _neighbour(cur: Candidate, space: Space, cache: MeasureCache, rng) -> Candidate | None:
    for _ in range(30):
        c = mutate(cur, space, rng)
        if c is not None and c not in cache:
            return c
    return None


def hill_climb(space: Space, cache: MeasureCache, base_choices: tuple[str, ...], *,
               goal: Goal | None = None, budget: Budget | None = None, seed: int = 0,
               on_eval: OnEval | None = None, start: Candidate | None = None) -> SearchResult:
    rng = np.random.default_rng(seed)
    run = _Run(cache, goal or Goal(), budget or Budget(), on_eval)
    first = start or random_candidate(space, rng, base_choices)
    cur = (first, run.measure(first, "seed"))
    start = run.best = cur
    while run.left():
        c = _neighbour(cur[0], space, cache, rng)
        if c is None:  # a local optimum with every neighbour seen: restart
            c = random_candidate(space, rng, base_choices)
            if c in cache:
                continue
            cur = (c, run.measure(c, "restart"))
            continue
        m = run.measure(c, "neighbour")
        run.offer(c, m)
        if run.better(m, cur[1]):
            cur = (c, m)
    return _finish(run, start)


def simulated_annealing(space: Space, cache: MeasureCache, base_choices: tuple[str, ...], *,
                        goal: Goal | None = None, budget: Budget | None = None, seed: int = 0,
                        on_eval: OnEval | None = None, t0: float = 0.2,
                        cooling: float = 0.9, start: Candidate | None = None) -> SearchResult:
    g = goal or Goal()
    rng = np.random.default_rng(seed)
    run = _Run(cache, g, budget or Budget(), on_eval)
    first = start or random_candidate(space, rng, base_choices)
    cur = (first, run.measure(first, "seed"))
    start = run.best = cur
    temp = t0
    while run.left():
        c = _neighbour(cur[0], space, cache, rng)
        if c is None:
            c = random_candidate(space, rng, base_choices)
            if c in cache:
                continue
        m = run.measure(c, "anneal")
        run.offer(c, m)
        loss = 1 - g.value(m) / max(g.value(cur[1]), 1e-12)
        if run.better(m, cur[1]) or rng.random() < math.exp(-max(loss, 0) / max(temp, 1e-6)):
            cur = (c, m)
        temp *= cooling
    return _finish(run, start)


BASELINES = {"random": random_search, "hill_climbing": hill_climb,
             "simulated_annealing": simulated_annealing}
