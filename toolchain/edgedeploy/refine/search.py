"""Measurement-guided evolutionary search from the plan (Soomro et al. 2021; Shisha, 2022).

The population starts from the plan and its Pareto neighbours (the guided start: the cost model's
best guesses, measured first). Each step picks a parent (the incumbent mostly, else a tournament
among the best measured), draws a brood of valid mutants focused on the parent's *measured*
bottleneck stage, and measures the one a surrogate likes best: the cost model's prediction of each
mutant's stages, corrected stage by stage with the parent's measured/predicted ratios -- the model
proposes, the device decides. A small share of steps measures a random mutant instead, so the
surrogate's blind spots still get explored. Close calls (a new best by less than CLOSE) are
re-measured, because devices are noisy. Selection is feasibility first (the manifest's
constraints), then the objective. The search never returns anything measured worse than the
plan: the plan is measured first and only a better measurement replaces the incumbent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.candidate import Candidate, Space
from edgedeploy.refine.measure import Measurement
from edgedeploy.refine.operators import WEIGHTS, mutate

CLOSE = 0.03
BROOD = 16
EXPLORE = 0.15
PRIMITIVE_MOVES = ("change_primitive", "stage_primitive")


@dataclass(frozen=True)
class Goal:
    """The manifest's objective and constraints, as selection sees them."""

    objective: str = "throughput"
    max_latency_ms: float | None = None
    min_throughput_fps: float | None = None
    max_power_w: float | None = None

    def violation(self, m: Measurement) -> float:
        v = 0.0
        if self.max_latency_ms is not None:
            v += max(0.0, m.latency_ms / self.max_latency_ms - 1)
        if self.min_throughput_fps is not None:
            v += max(0.0, 1 - m.throughput_fps / self.min_throughput_fps)
        if self.max_power_w is not None and m.power_w is not None:
            v += max(0.0, m.power_w / self.max_power_w - 1)
        return v

    def key(self, m: Measurement) -> tuple[float, float]:
        """Lower is better: (constraint violation, objective)."""
        if self.objective == "latency":
            obj = m.latency_ms
        elif self.objective == "energy":
            obj = m.energy_mj if m.energy_mj is not None else m.latency_ms
        else:
            obj = -m.throughput_fps
        return (round(self.violation(m), 9), obj)

    def value(self, m: Measurement) -> float:
        """The objective as a 'higher is better' figure (for improvement ratios)."""
        k = self.key(m)[1]
        return -k if self.objective == "throughput" else (1.0 / k if k > 0 else 0.0)


@dataclass
class Budget:
    max_evals: int = 30
    budget_s: float = 300.0


@dataclass
class EvalRecord:
    index: int
    cand: Candidate
    meas: Measurement
    origin: str  # seed | guided | explore | remeasure
    best_value: float


@dataclass
class SearchResult:
    start: tuple[Candidate, Measurement]
    best: tuple[Candidate, Measurement]
    records: list[EvalRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def evaluations(self) -> int:
        return len(self.records)

    def tested(self) -> list[Candidate]:
        """Distinct configurations measured, in order."""
        seen: dict[str, Candidate] = {}
        for r in self.records:
            seen.setdefault(r.cand.key, r.cand)
        return list(seen.values())


StagePredictor = Callable[[Candidate], list[float] | None]
OnEval = Callable[[EvalRecord], None]


class _Run:
    """Book-keeping shared by every search: budget, records, incumbent."""

    def __init__(self, cache: MeasureCache, goal: Goal, budget: Budget,
                 on_eval: OnEval | None) -> None:
        self.cache, self.goal, self.budget, self.on_eval = cache, goal, budget, on_eval
        self.records: list[EvalRecord] = []
        self.t0 = time.perf_counter()
        self.device_s = 0.0
        self.best: tuple[Candidate, Measurement] | None = None

    def left(self, need: int = 1) -> bool:
        elapsed = max(time.perf_counter() - self.t0, self.device_s)
        return len(self.records) + need <= self.budget.max_evals and elapsed < self.budget.budget_s

    def better(self, a: Measurement, b: Measurement) -> bool:
        return self.goal.key(a) < self.goal.key(b)

    def measure(self, cand: Candidate, origin: str) -> Measurement:
        m, fresh = self.cache.measure(cand)
        if fresh:
            self._record(cand, m, origin)
        return m

    def remeasure(self, cand: Candidate) -> Measurement:
        m = self.cache.remeasure(cand)
        self._record(cand, m, "remeasure")
        return m

    def _record(self, cand: Candidate, m: Measurement, origin: str) -> None:
        self.device_s += m.seconds
        if self.best is None or self.better(m, self.best[1]) or self.best[0].key == cand.key:
            self.best = (cand, self.cache.get(cand) or m)
        rec = EvalRecord(len(self.records) + 1, cand, m, origin, self.goal.value(self.best[1]))
        self.records.append(rec)
        if self.on_eval:
            self.on_eval(rec)

    def offer(self, cand: Candidate, m: Measurement) -> None:
        """A new measurement challenges the incumbent; a close call is measured again."""
        inc_c, inc_m = self.best  # type: ignore[misc]
        if inc_c.key == cand.key or not self.better(m, inc_m):
            return
        margin = abs(self.goal.value(m) / max(self.goal.value(inc_m), 1e-12) - 1)
        if margin < CLOSE and self.left(2):
            m = self.remeasure(cand)
            inc_m = self.remeasure(inc_c) if len(inc_m.runs) < 2 else inc_m
            self.best = (cand, m) if self.better(m, inc_m) else (inc_c, inc_m)
        else:
            self.best = (cand, m)


def guided_search(seeds: Sequence[Candidate], space: Space, cache: MeasureCache, *,
                  goal: Goal | None = None, budget: Budget | None = None,
                  predict: StagePredictor | None = None, seed: int = 0,
                  on_eval: OnEval | None = None) -> SearchResult:
    """Refine from ``seeds[0]`` (the plan); see the module docstring."""
    goal, budget = goal or Goal(), budget or Budget()
    rng = np.random.default_rng(seed)
    run = _Run(cache, goal, budget, on_eval)
    start = seeds[0]
    start_m = run.measure(start, "seed")
    run.best = (start, start_m)
    pop: list[tuple[Candidate, Measurement]] = [(start, start_m)]
    for cand in seeds[1:]:
        if not run.left():
            break
        m = run.measure(cand, "seed")
        pop.append((cand, m))
        run.offer(cand, m)
    stalls = 0
    wins = {op: 1.0 for op in WEIGHTS}
    tries = {op: 2.0 for op in WEIGHTS}
    while run.left() and stalls < 200:
        parent = _parent(run, pop, rng)
        op = _operator(wins, tries, rng)
        brood = _brood(parent, space, cache, rng, op)
        if not brood:
            stalls += 1
            continue
        # the cost model ranks structure moves; it is what mis-ranks primitives, so the device
        # alone judges primitive moves (and a share of random picks keeps exploring)
        explore = predict is None or op in PRIMITIVE_MOVES or rng.random() < EXPLORE
        child = brood[int(rng.integers(len(brood)))] if explore else \
            _pick(brood, parent, predict, goal)
        m = run.measure(child, "explore" if explore else "guided")
        pop.append((child, m))
        tries[op] += 1
        if run.better(m, parent[1]):
            wins[op] += 1
        run.offer(child, m)
    best = run.best or (start, start_m)
    if goal.key(start_m) <= goal.key(best[1]):  # never worse than the plan, as measured
        best = (start, cache.get(start) or start_m)
    return SearchResult((start, cache.get(start) or start_m), best, run.records,
                        time.perf_counter() - run.t0)


def _parent(run: _Run, pop, rng) -> tuple[Candidate, Measurement]:
    if run.best is not None and rng.random() < 0.7:
        return run.best
    ranked = sorted(pop, key=lambda cm: run.goal.key(cm[1]))[:4]
    return ranked[int(rng.integers(len(ranked)))]


def bottleneck(cand: Candidate, m: Measurement) -> int | None:
    if len(m.stage_ms) != len(cand.stages):
        return None
    per = [t / s.replicas for t, s in zip(m.stage_ms, cand.stages, strict=True)]
    return int(np.argmax(per))


def _operator(wins: dict[str, float], tries: dict[str, float], rng) -> str:
    """Adaptive operator selection: a move's weight grows with its measured success rate."""
    names = list(WEIGHTS)
    p = np.array([WEIGHTS[n] * wins[n] / tries[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _brood(parent, space: Space, cache: MeasureCache, rng, op: str) -> list[Candidate]:
    cand, m = parent
    focus = bottleneck(cand, m)
    out: dict[str, Candidate] = {}
    for k in range(BROOD):
        f = focus if k % 3 != 2 else None  # two in three mutants act on the bottleneck
        child = mutate(cand, space, rng, f, weights={op: 1.0})
        if child is not None and rng.random() < 0.3:  # sometimes a double move
            child = mutate(child, space, rng, None) or child
        if child is not None and child not in cache:
            out.setdefault(child.key, child)
    return list(out.values())


def _pick(brood: list[Candidate], parent, predict: StagePredictor, goal: Goal) -> Candidate:
    """The mutant whose corrected predicted objective is best."""
    pc, pm = parent
    p_pred = predict(pc)
    ratios = ([m / p if p > 0 else 1.0 for m, p in zip(pm.stage_ms, p_pred, strict=True)]
              if p_pred is not None and len(pm.stage_ms) == len(p_pred) else [])
    default = float(np.median(ratios)) if ratios else 1.0

    def score(c: Candidate) -> float:
        pred = predict(c)
        if pred is None:
            return float("inf")
        est = []
        for s, t in zip(c.stages, pred, strict=True):
            r = default
            for ps, ratio in zip(pc.stages, ratios, strict=False):
                overlap = min(s.stop, ps.stop) - max(s.start, ps.start)
                if overlap > 0 and (ps.cluster, ps.cores) == (s.cluster, s.cores):
                    r = ratio
                    break
            est.append(t * r)
        period = max(e / s.replicas for e, s in zip(est, c.stages, strict=True))
        lat = sum(est)
        return lat if goal.objective == "latency" else period

    return min(brood, key=score)
