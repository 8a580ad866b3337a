"""Measurement-guided evolutionary search from the plan (Soomro et al. 2021; Shisha, 2022).

The population starts from the plan and its Pareto neighbours (the guided start). After every
measurement a :class:`~edgedeploy.refine.guide.Guide` refits per-cluster, per-(cluster, cores),
per-primitive-family and hand-over factors of the cost model to the measured stage times and
re-solves the planner's selection + mapping on the corrected costs; the corrected re-plan is the
next candidate when it is new and predicted at least as good as the incumbent, else the
best-predicted of the re-plans, the remaining seeds and a brood of mutants (the operators' moves,
two in three focused on the measured bottleneck stage) of the best measured configurations --
the model proposes, the device decides. Close calls (a new best by less than CLOSE) are
re-measured, because devices are noisy; the cache never measures a configuration twice. Selection
is feasibility first (the manifest's constraints), then the objective. The search never returns
anything measured worse than the plan: the plan is measured first and only a better measurement
replaces the incumbent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.candidate import Candidate, Space
from edgedeploy.refine.guide import Guide
from edgedeploy.refine.measure import Measurement
from edgedeploy.refine.operators import mutate

CLOSE = 0.03
BROOD = 24
EXPLORE = 0.15
PARENTS = 3


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
    #: The baselines measured after the plan (name, configuration, measurement).
    baselines: tuple[tuple[str, Candidate, Measurement], ...] = ()

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
                  on_eval: OnEval | None = None, guide: Guide | None = None,
                  baselines: Sequence[tuple[str, Candidate]] = ()) -> SearchResult:
    """Refine from ``seeds[0]`` (the plan); see the module docstring.

    ``baselines`` (what a user would run instead) are measured right after the plan, whatever
    the budget says, and compete as any configuration: the result is never a configuration
    measured slower than one of them.

    With a ``guide`` (refine.guide.Guide) every measurement recalibrates the cost model and the
    next candidate is the corrected re-plan when it is new, else the best-predicted of the
    re-plans, the remaining seeds and the mutants of the best measured configurations. Without
    one, ``predict`` (uncorrected stage times) ranks the mutants, parent-ratio corrected."""
    goal, budget = goal or Goal(), budget or Budget()
    rng = np.random.default_rng(seed)
    run = _Run(cache, goal, budget, on_eval)
    start = seeds[0]
    start_m = run.measure(start, "seed")
    run.best = (start, start_m)
    pop: list[tuple[Candidate, Measurement]] = [(start, start_m)]
    if guide is not None:
        guide.observe(start, start_m)
    measured = []
    for name, cand in baselines:
        m = run.measure(cand, f"baseline:{name}")
        measured.append((name, cand, m))  # its latest (merged) figures are read at the end
        if cand.key == start.key:
            continue  # the plan is this baseline's configuration, measured above
        pop.append((cand, m))
        if guide is not None:
            guide.observe(cand, m)
        run.offer(cand, m)
    pending = [c for c in seeds[1:] if c not in cache]
    stalls = 0
    while run.left() and stalls < 50:
        if guide is not None:
            child, origin = _propose(run, pop, pending, space, cache, rng, guide)
        else:
            child, origin = _propose_unguided(run, pop, space, cache, rng, predict, goal)
        if child is None:
            stalls += 1
            continue
        pending = [c for c in pending if c.key != child.key]
        m = run.measure(child, origin)
        pop.append((child, m))
        if guide is not None:
            guide.observe(child, m)
        run.offer(child, m)
    best = run.best or (start, start_m)
    if goal.key(start_m) <= goal.key(best[1]):  # never worse than the plan, as measured
        best = (start, cache.get(start) or start_m)
    return SearchResult((start, cache.get(start) or start_m), best, run.records,
                        time.perf_counter() - run.t0,
                        tuple((n, c, cache.get(c) or m) for n, c, m in measured))


def _propose(run: _Run, pop, pending: list[Candidate], space: Space, cache: MeasureCache, rng,
             guide: Guide) -> tuple[Candidate | None, str]:
    """The corrected re-plan if new; else the best-predicted re-plan, seed or mutant."""
    replans = [c for c in guide.replan() if c not in cache]
    if replans and guide.value(replans[0]) <= guide.value(run.best[0]) * (1 + CLOSE):
        return replans[0], "replan"
    pool: dict[str, tuple[Candidate, str]] = {c.key: (c, "replan") for c in replans}
    pool.update({c.key: (c, "seed") for c in pending if c not in cache})
    ranked = sorted(pop, key=lambda cm: run.goal.key(cm[1]))
    parents = [run.best, *[p for p in ranked[:PARENTS] if p[0].key != run.best[0].key]]
    for parent in parents:
        for c in _brood(parent, space, cache, rng, None):
            pool.setdefault(c.key, (c, "mutant"))
    if not pool:
        return None, ""
    scored = sorted(pool.values(), key=lambda co: (guide.value(co[0]), co[0].key))
    return scored[0]


def _propose_unguided(run: _Run, pop, space: Space, cache: MeasureCache, rng,
                      predict: StagePredictor | None, goal: Goal) -> tuple[Candidate | None, str]:
    parent = _parent(run, pop, rng)
    brood = _brood(parent, space, cache, rng, None)
    if not brood:
        return None, ""
    if predict is None or rng.random() < EXPLORE:
        return brood[int(rng.integers(len(brood)))], "explore"
    return _pick(brood, parent, predict, goal), "guided"


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


def _brood(parent, space: Space, cache: MeasureCache, rng, op: str | None) -> list[Candidate]:
    cand, m = parent
    focus = bottleneck(cand, m)
    out: dict[str, Candidate] = {}
    for k in range(BROOD):
        f = focus if k % 3 != 2 else None  # two in three mutants act on the bottleneck
        child = mutate(cand, space, rng, f, weights={op: 1.0} if op else None)
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
