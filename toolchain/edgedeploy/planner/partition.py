"""Pipeline mapping: contiguous stages in topological order, each on a core configuration.

Stage ``[a, b)`` on configuration ``c`` (cluster q, n cores) with ``r`` replicas takes ``n * r``
cores of q (a GPU: one unit, never replicated); stages never share cores. Its time is the prefix
sum of the per-configuration selected layer times plus the hand-over from the previous stage
(``transfer_ms`` of the bytes live across the cut) -- for the first stage, of the frame from the
feeding process -- and the stage's own cost a frame (``Problem.frame_ms``), neither of the last
two for replicas, whose measured speed-up holds them; times its cluster's pipeline factor when
the plan has several stages (``Problem.pipeline_factor``: they run beside each other). Period =
max over stages of time / the measured speed-up of its replicas (``Problem.replica_speedup``; r
when never measured); throughput = 1000 / period; latency = sum of stage times; energy per
frame = sum of stage time x busy power + the board's idle power x period (power model from the
target; Pipe-it, TVM-TX2).

The solver is one dynamic programme over (stage count, cut point, cores used per cluster, previous
cluster), vectorised over the next cut and the previous cluster. It minimises either the bottleneck
(throughput) or an additive cost (latency, active energy) under a period cap; an epsilon-constraint
sweep of that cap traces the (period, latency) and (period, energy) frontiers, from which the
objective's best plan under the constraints and the Pareto set are taken. It is exact over the cut
points it is given. Heuristic beyond ``max_cuts``: only ``max_cuts`` candidate cut points are kept
(at equal quantiles of the fastest configuration's cumulative time, each moved within a small window
to the cut with fewest live bytes), which keeps the DP's size independent of the layer count, and
the sweeps stop after ``sweep_limit`` frontier points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedeploy.errors import InfeasibleError
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.select import Selection
from edgedeploy.runtime import ir

MAX_CUTS = 32
SWEEP_LIMIT = 8
OBJECTIVES = ("throughput", "latency", "energy")


@dataclass(frozen=True)
class Stage:
    start: int
    stop: int
    config: int
    replicas: int = 1


@dataclass(frozen=True)
class Limits:
    """The manifest's constraints and pipeline settings, as plain numbers."""

    max_latency_ms: float | None = None
    min_throughput_fps: float | None = None
    max_power_w: float | None = None
    max_stages: int = 4
    allow_replication: bool = True

    @classmethod
    def of(cls, manifest: Any, graph: ir.Graph | None = None) -> Limits:
        """The manifest's limits for ``graph``: a stateful model (its state is the stream of
        frames it has seen) is never replicated -- replicas would each see every other frame."""
        c = manifest.constraints
        stateful = graph is not None and bool(graph.source.get("stateful"))
        return cls(max_latency_ms=c.max_latency_ms, min_throughput_fps=c.min_throughput_fps,
                   max_power_w=c.max_power_w, max_stages=manifest.pipeline.max_stages,
                   allow_replication=manifest.pipeline.allow_replication and not stateful)


@dataclass(frozen=True)
class Metrics:
    stage_ms: tuple[float, ...]
    period_ms: float
    throughput_fps: float
    latency_ms: float
    energy_mj: float
    power_w: float


@dataclass(frozen=True)
class Candidate:
    stages: tuple[Stage, ...]
    metrics: Metrics


@dataclass
class Mapping:
    best: Candidate
    candidates: list[Candidate]
    exact: bool


class StageCosts:
    """Prefix sums of the selection per configuration, and hop costs, for O(1) stage pricing."""

    def __init__(self, problem: Problem, selection: Selection) -> None:
        self.problem = problem
        ms = selection.layer_ms
        finite = np.isfinite(ms)
        zero = np.zeros((1, ms.shape[1]))
        self.prefix = np.vstack([zero, np.cumsum(np.where(finite, ms, 0.0), axis=0)])
        self.bad = np.vstack([zero, np.cumsum(~finite, axis=0)])
        self.bytes = problem.boundary_bytes()
        self.cluster_of = [problem.cluster_index(c.cluster) for c in problem.configs]

    def compute(self, a: int, b: int, config: int) -> float:
        if self.bad[b, config] - self.bad[a, config] > 0:
            return float("inf")
        return float(self.prefix[b, config] - self.prefix[a, config])

    def hop(self, cut: int, src_cluster: int, dst_cluster: int) -> float:
        cl = self.problem.clusters
        return float(self.problem.transfer_ms(int(self.bytes[cut]), cl[src_cluster].name,
                                              cl[dst_cluster].name))

    def feed(self, cluster: int, replicas: int) -> float:
        """The first stage's hand-over of the frame from the caller (``Problem.feed_ms``)."""
        return self.problem.feed_ms(self.problem.clusters[cluster].name, replicas)


def evaluate(problem: Problem, costs: StageCosts, stages: tuple[Stage, ...]) -> Metrics:
    """Metrics of a mapping (the one pricing every solver, baseline and test oracle shares)."""
    times = []
    energy = 0.0
    prev = None
    for s in stages:
        q = costs.cluster_of[s.config]
        t = costs.compute(s.start, s.stop, s.config) + problem.overhead_ms(s.replicas)
        t += costs.feed(q, s.replicas) if prev is None else costs.hop(s.start, prev, q)
        if len(stages) > 1:  # stages run beside each other, not alone
            t *= problem.pipeline_factor(q)
        times.append(t)
        energy += t * problem.active_w(s.config)
        prev = q
    period = max(t / problem.replica_speedup(s.config, s.replicas)
                 for t, s in zip(times, stages, strict=True))
    energy += problem.idle_w() * period
    return Metrics(tuple(times), period, 1000.0 / period if period > 0 else float("inf"),
                   float(sum(times)), energy, energy / period if period > 0 else 0.0)


def stage_options(problem: Problem, limits: Limits) -> list[tuple[int, int, int, int]]:
    """(config, replicas, cluster index, units used) for every way one stage can run."""
    out = []
    for c, cfg in enumerate(problem.configs):
        q = problem.cluster_index(cfg.cluster)
        cap = problem.clusters[q].capacity
        max_r = 1 if (problem.clusters[q].is_gpu or not limits.allow_replication) else cap
        for r in range(1, max_r + 1):
            if cfg.cores * r <= cap:
                out.append((c, r, q, cfg.cores * r))
    return out


def candidate_cuts(problem: Problem, costs: StageCosts, max_cuts: int) -> list[int]:
    """Every cut when few; else ``max_cuts`` quantile cuts snapped to low-traffic boundaries."""
    n = problem.n_layers
    allowed = problem.cuts
    if len(allowed) <= max_cuts:
        return allowed
    finite_cfg = [c for c in range(len(problem.configs)) if costs.bad[n, c] == 0]
    ref = min(finite_cfg, key=lambda c: costs.prefix[n, c]) if finite_cfg else 0
    prefix = np.maximum.accumulate(costs.prefix[:, ref] + np.arange(n + 1) * 1e-9)
    window = max(1, n // (4 * max_cuts))
    cuts = set()
    for k in range(1, max_cuts + 1):
        mid = int(np.searchsorted(prefix, prefix[-1] * k / (max_cuts + 1)))
        lo, hi = max(1, mid - window), min(n - 1, mid + window)
        if lo > hi:
            continue
        ks = np.array([k for k in range(lo, hi + 1) if k not in problem.no_cut], dtype=int)
        if ks.size:
            cuts.add(int(ks[np.argmin(costs.bytes[ks] + np.abs(ks - mid) * 1e-3)]))
    return sorted(cuts)


class _Dp:
    """The mapping DP over (stages used, cut point, cores used per cluster, previous cluster)."""

    def __init__(self, problem: Problem, costs: StageCosts, cuts: list[int],
                 limits: Limits) -> None:
        self.problem, self.costs = problem, costs
        n = problem.n_layers
        self.pts = np.array([0, *cuts, n])
        npts = len(self.pts)
        caps = [c.capacity for c in problem.clusters]
        self.radix = np.cumprod([1, *[c + 1 for c in caps[:-1]]]).astype(int)
        self.n_states = int(np.prod([c + 1 for c in caps]))
        used = (np.arange(self.n_states)[:, None] // self.radix[None, :]) % (np.array(caps) + 1)
        self.nprev = len(caps) + 1
        self.opts = stage_options(problem, limits)
        self.K = max(1, min(limits.max_stages, npts - 1))
        hop = np.zeros((npts, self.nprev, len(caps)))
        for i in range(1, npts):
            for p in range(len(caps)):
                for q in range(len(caps)):
                    hop[i, p + 1, q] = costs.hop(int(self.pts[i]), p, q)
        base = {}
        for c in {o[0] for o in self.opts}:
            pre = costs.prefix[self.pts, c]
            bad = costs.bad[self.pts, c]
            m = pre[None, :] - pre[:, None]
            ok = (bad[None, :] - bad[:, None] == 0) & (np.arange(npts)[None, :]
                                                        > np.arange(npts)[:, None])
            base[c] = np.where(ok, m, np.inf)
        self.factor = [problem.pipeline_factor(q) for q in range(len(caps))]
        self.T, self.src, self.dst, self.energy = [], [], [], []
        for c, r, q, u in self.opts:
            into = hop[:, :, q].copy()
            into[0, 0] = costs.feed(q, r)  # the first stage's input comes from the caller
            t = (base[c][None, :, :] + into.T[:, :, None]  # (nprev, npts, npts)
                 + problem.overhead_ms(r))
            self.T.append(t)
            self.energy.append(t * problem.active_w(c))
            src = np.nonzero(used[:, q] + u <= caps[q])[0]
            self.src.append(src)
            self.dst.append(src + u * self.radix[q])

    def run(self, kind: str, cap: float = np.inf) -> tuple[Stage, ...] | None:
        """The best mapping for ``kind`` ("bottleneck", "latency", "energy") with period <= cap."""
        return self.run_many(kind, [cap])[0]

    def run_many(self, kind: str, caps: list[float]) -> list[tuple[Stage, ...] | None]:
        """One DP pass for several period caps at once (a leading cap axis on every array)."""
        G, npts, S, P = len(caps), len(self.pts), self.n_states, self.nprev
        cap = np.asarray(caps, dtype=np.float64)[:, None, None]
        V = np.full((G, self.K + 1, npts, S, P), np.inf)
        V[:, 0, 0, 0, 0] = 0.0
        BP = np.full((G, self.K + 1, npts, S, P), -1, dtype=np.int64)
        for k in range(self.K):
            for i in range(npts - 1):
                cur = V[:, k, i]
                if not np.isfinite(cur).any():
                    continue
                for o in range(len(self.opts)):
                    self._relax(kind, cap, k, i, o, cur, V, BP)
        out: list[tuple[Stage, ...] | None] = []
        for g in range(G):
            last = V[g, 1:, npts - 1]
            if not np.isfinite(last).any():
                out.append(None)
                continue
            k, s, p = np.unravel_index(int(np.argmin(last)), last.shape)
            out.append(self._trace(BP[g], int(k) + 1, npts - 1, int(s), int(p)))
        return out

    def _relax(self, kind, cap, k, i, o, cur, V, BP) -> None:
        # Only cuts after i can end this stage, and only the start (k == 0) has no previous cluster.
        prev = slice(0, 1) if k == 0 else slice(1, self.nprev)
        src = self.src[o]
        sub = cur[:, src, prev]  # (G, ns, P')
        if not np.isfinite(sub).any():
            return
        c, r, q, _u = self.opts[o]
        r = self.problem.replica_speedup(c, r)  # measured, not assumed linear
        # a stage beside others takes the cluster's pipeline factor; the first stage ending at
        # the model's end is the plan's only one, and runs alone
        f = np.full(len(self.pts) - i - 1, self.factor[q])
        if k == 0:
            f[-1] = 1.0
        t = self.T[o][prev, i, i + 1:] * f  # (P', npts')
        if kind == "bottleneck":
            val = np.maximum(sub[..., None], (t / r)[None, None])
        else:
            add = t if kind == "latency" else self.energy[o][prev, i, i + 1:] * f
            val = sub[..., None] + np.where((t / r)[None] > cap, np.inf, add[None])[:, None]
        arg = val.argmin(axis=2)  # (G, ns, npts')
        best = val.min(axis=2).transpose(0, 2, 1)  # (G, npts', ns)
        vq = V[:, k + 1, i + 1:, :, q + 1]
        dst = self.dst[o]
        tgt = vq[:, :, dst]
        better = best < tgt
        if better.any():
            vq[:, :, dst] = np.where(better, best, tgt)
            code = ((i * self.n_states + src[None, None, :]) * self.nprev
                    + arg.transpose(0, 2, 1) + prev.start) * len(self.opts) + o
            bq = BP[:, k + 1, i + 1:, :, q + 1]
            bq[:, :, dst] = np.where(better, code, bq[:, :, dst])

    def _trace(self, BP, k: int, j: int, s: int, p: int) -> tuple[Stage, ...]:
        stages = []
        nopt, P, S = len(self.opts), self.nprev, self.n_states
        while k > 0:
            code = int(BP[k, j, s, p])
            o = code % nopt
            code //= nopt
            p_prev = code % P
            code //= P
            s_prev, i = code % S, code // S
            c, r, _q, _u = self.opts[o]
            stages.append(Stage(int(self.pts[i]), int(self.pts[j]), c, r))
            k, j, s, p = k - 1, i, s_prev, p_prev
        return tuple(reversed(stages))


def _meets(m: Metrics, limits: Limits) -> bool:
    tol = 1e-9
    return ((limits.max_latency_ms is None or m.latency_ms <= limits.max_latency_ms * (1 + tol))
            and (limits.min_throughput_fps is None
                 or m.throughput_fps >= limits.min_throughput_fps * (1 - tol))
            and (limits.max_power_w is None or m.power_w <= limits.max_power_w * (1 + tol)))


def objective_key(objective: str):
    """Sort key: the objective first, then the other two as tie-breakers, then fewer stages."""
    def key(c: Candidate):
        m = c.metrics
        order = {"throughput": (m.period_ms, m.latency_ms, m.energy_mj),
                 "latency": (m.latency_ms, m.period_ms, m.energy_mj),
                 "energy": (m.energy_mj, m.period_ms, m.latency_ms)}[objective]
        return (*(round(x, 9) for x in order), len(c.stages),
                tuple((s.start, s.stop, s.config, s.replicas) for s in c.stages))
    return key


def map_stages(problem: Problem, selection: Selection, objective: str = "throughput",
               limits: Limits | None = None, *, max_cuts: int = MAX_CUTS,
               sweep_limit: int = SWEEP_LIMIT) -> Mapping:
    """The objective's best mapping under the limits, and every candidate met on the way."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}")
    limits = limits or Limits()
    costs = StageCosts(problem, selection)
    cuts = candidate_cuts(problem, costs, max_cuts)
    exact = len(cuts) == len(problem.cuts)
    dp = _Dp(problem, costs, cuts, limits)
    found: dict[tuple[Stage, ...], Candidate] = {}

    def add(stages: tuple[Stage, ...] | None) -> Candidate | None:
        if stages is None:
            return None
        found.setdefault(stages, Candidate(stages, evaluate(problem, costs, stages)))
        return found[stages]

    fastest = add(dp.run("bottleneck"))
    if fastest is None:
        raise InfeasibleError("no core configuration of this target can run every layer",
                              hint="check the primitives allow/deny lists and the engines")
    # within the tolerance _meets allows: a plan exactly at the bound is not lost to rounding
    cap0 = (1000.0 / limits.min_throughput_fps * (1 + 1e-9) if limits.min_throughput_fps
            else np.inf)
    if exact:
        exact = _sweep(dp, add, cap0, sweep_limit)
    else:
        _grid(dp, add, cap0, fastest.metrics.period_ms, sweep_limit)
    candidates = sorted(found.values(), key=objective_key(objective))
    feasible = [c for c in candidates if _meets(c.metrics, limits)]
    if not feasible:
        raise infeasible_error(limits, candidates)
    return Mapping(feasible[0], candidates, exact)


def _sweep(dp: _Dp, add, cap0: float, limit: int) -> bool:
    """Epsilon-constraint sweep: each frontier point caps the next run just below its period."""
    for kind in ("latency", "energy"):
        cap = cap0
        for step in range(limit + 1):
            cand = add(dp.run(kind, cap))
            if cand is None:
                break
            if step == limit:
                return False
            cap = cand.metrics.period_ms * (1 - 1e-9)
    return True


def _grid(dp: _Dp, add, cap0: float, fastest_ms: float, points: int) -> None:
    """Heuristic sweep for big problems: one batched DP over a geometric grid of period caps."""
    for kind in ("latency", "energy"):
        top = add(dp.run(kind, cap0))
        if top is None:
            continue
        hi = min(cap0, top.metrics.period_ms)
        if hi <= fastest_ms * (1 + 1e-9):
            continue
        caps = list(np.geomspace(fastest_ms * (1 + 1e-9), hi * (1 - 1e-9), max(points - 1, 1)))
        for stages in dp.run_many(kind, caps):
            add(stages)


def infeasible_error(limits: Limits, candidates: list[Candidate]) -> InfeasibleError:
    """Name the constraint(s) no plan meets, with the best value reachable for each."""
    ms = [c.metrics for c in candidates]
    problems = []
    best_fps = max(m.throughput_fps for m in ms)
    if limits.min_throughput_fps is not None and best_fps < limits.min_throughput_fps * (1 - 1e-9):
        problems.append(f"constraints.min_throughput_fps = {limits.min_throughput_fps:g} "
                        f"(best reachable: {best_fps:.4g} fps)")
    fps_ok = [m for m in ms if limits.min_throughput_fps is None
              or m.throughput_fps >= limits.min_throughput_fps * (1 - 1e-9)] or ms
    best_lat = min(m.latency_ms for m in fps_ok)
    if limits.max_latency_ms is not None and best_lat > limits.max_latency_ms * (1 + 1e-9):
        problems.append(f"constraints.max_latency_ms = {limits.max_latency_ms:g} "
                        f"(best reachable: {best_lat:.4g} ms)")
    best_pw = min(m.power_w for m in fps_ok)
    if limits.max_power_w is not None and best_pw > limits.max_power_w * (1 + 1e-9):
        problems.append(f"constraints.max_power_w = {limits.max_power_w:g} "
                        f"(best reachable: {best_pw:.4g} W)")
    if not problems:
        problems.append("the constraints together (each alone is reachable: latency "
                        f"{best_lat:.4g} ms, throughput {best_fps:.4g} fps, power {best_pw:.4g} W)")
    return InfeasibleError("no plan meets " + "; ".join(problems),
                           hint="relax the constraint in the manifest, or allow more stages, "
                                "replication or primitives")
