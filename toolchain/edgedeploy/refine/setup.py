"""From (graph, target, planner settings) to what the refiner needs: the space, the plan's
seeds and a stage predictor -- all through the planner's own problem, so the refiner prices a
candidate exactly as the planner would."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edgedeploy.planner.partition import Limits
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.solve import Solution, stage_choices
from edgedeploy.refine.candidate import GPU, Candidate, Space, StageConf
from edgedeploy.runtime import ir


@dataclass
class Context:
    graph: ir.Graph
    target: object
    problem: Problem
    space: Space
    model: object  # CostModel
    limits: Limits = field(default_factory=Limits)
    allow: Sequence[str] = ()
    deny: Sequence[str] = ()
    max_memory_mb: float | None = None

    def stage_prediction(self, cand: Candidate, s: StageConf) -> tuple[list[float], float]:
        """(predicted ms of each layer of stage ``s``, predicted hand-over into it)."""
        p = self.problem
        ci = self._cfg[(s.cluster, s.cores)]
        ms = []
        for i in range(s.start, s.stop):
            layer = p.layers[i]
            o = layer.options.index(cand.choices[i]) if cand.choices[i] in layer.options else -1
            ms.append(float(layer.ms[o, ci]) if o >= 0 else float("inf"))
        k = cand.stages.index(s)
        if k == 0:  # the frame from the caller (none to hand over to a session inline)
            inline = s.inline and s.replicas == s.batch == 1
            return ms, 0.0 if inline else p.feed_ms(s.cluster, s.replicas)
        prev = cand.stages[k - 1].cluster
        return ms, p.transfer_ms(int(self._bytes[s.start]), prev, s.cluster)

    def predict(self, cand: Candidate) -> list[float] | None:
        """Predicted stage times (hand-over included; the stages of a plan of several beside
        each other, as ``partition.evaluate`` prices them); None if a layer cannot run."""
        p = self.problem
        out = []
        for s in cand.stages:
            ms, hop = self.stage_prediction(cand, s)
            t = sum(ms) + hop + p.overhead_ms(s.replicas)
            if t == float("inf"):
                return None
            if len(cand.stages) > 1:
                config = p.configs[self._cfg[(s.cluster, s.cores)]]
                t *= p.pipeline_factor(p.cluster_index(config.cluster))
            out.append(t)
        return out

    def predicted_metrics(self, cand: Candidate) -> dict[str, float]:
        """The planner's metrics of ``cand``: replicas at the cluster's measured speed-up."""
        times = self.predict(cand) or [float("inf")]
        period = max(t / self.problem.replica_speedup(self._cfg[(s.cluster, s.cores)],
                                                      s.replicas)
                     for t, s in zip(times, cand.stages, strict=False))
        return {"throughput_fps": 1000.0 / period if period > 0 else 0.0,
                "latency_ms": float(sum(times)), "period_ms": period,
                "stage_ms": times}

    def __post_init__(self) -> None:
        self._cfg = {(c.cluster, c.cores): k for k, c in enumerate(self.problem.configs)}
        self._bytes = self.problem.boundary_bytes()


def build_context(graph: ir.Graph, target, *, limits: Limits | None = None,
                  allow=(), deny=(), max_memory_mb: float | None = None,
                  model=None) -> Context:
    """The planner's problem for ``target`` and the refiner's space over it."""
    from edgedeploy.costmodel import CostModel
    from edgedeploy.planner.adapter import build_problem
    from edgedeploy.planner.half import half_clusters
    from edgedeploy.planner.select import option_mask

    limits = limits or Limits()
    model = model or CostModel.for_target(target)
    problem = build_problem(graph, target, model)
    ws = max_memory_mb * 2**20 if max_memory_mb is not None else None
    masks = option_mask(problem, allow, deny, ws)
    options = [tuple(o for o, ok in zip(layer.options, m, strict=True) if ok)
               for layer, m in zip(problem.layers, masks, strict=True)]
    # the planner's own pools (a GPU's feeding core is not one a stage may take)
    clusters = {GPU if c.is_gpu else c.name: tuple(c.cpu_ids) for c in problem.clusters}
    space = Space([layer.name for layer in graph.layers], options, clusters,
                  limits.max_stages, limits.allow_replication, no_cut=problem.no_cut,
                  half=half_clusters(graph, target))
    return Context(graph, target, problem, space, model, limits, tuple(allow), tuple(deny),
                   max_memory_mb)


def seeds_from_solution(ctx: Context, sol: Solution, limit: int = 4) -> list[Candidate]:
    """The plan and its Pareto neighbours as candidates (the guided start)."""
    out: list[Candidate] = []
    for cand in [sol.best, *sol.pareto]:
        names = stage_choices(ctx.problem, sol.selection, cand)
        stages = tuple(StageConf(s.start, s.stop, ctx.problem.configs[s.config].cluster,
                                 ctx.problem.configs[s.config].cores, s.replicas)
                       for s in cand.stages)
        c = Candidate(stages, tuple(names))
        if ctx.space.is_valid(c) and c.key not in {x.key for x in out}:
            out.append(c)
        if len(out) >= limit:
            break
    return out
