"""The model-guided loop: measured stage times recalibrate the planner's costs, and the corrected
re-plan is what gets measured next."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgedeploy.costmodel import CostModel
from edgedeploy.planner.partition import Limits
from edgedeploy.planner.solve import solve_problem
from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.guide import Guide
from edgedeploy.refine.measure import Measurement
from edgedeploy.refine.search import Budget, guided_search
from edgedeploy.refine.setup import build_context, seeds_from_solution
from edgedeploy.twins import twin_target

LIMITS = Limits(max_stages=3)


@pytest.fixture(scope="module")
def ctx(small_graph):
    tgt = twin_target("jetson-tx2")
    c = build_context(small_graph, tgt, limits=LIMITS, model=CostModel(tgt))
    c.seeds = seeds_from_solution(c, solve_problem(c.problem, "throughput", LIMITS))
    return c


class ScaledTruth:
    """A noise-free 'device' whose truth is the planner's own costs with one cluster slower by
    ``factor``: a single multiplicative per-cluster error separates model and truth."""

    label, simulated = "scaled", True

    def __init__(self, ctx, cluster: str, factor: float) -> None:
        self.ctx, self.cluster, self.factor = ctx, cluster, factor
        self.calls = 0

    def stage_ms(self, cand) -> list[float]:
        out = []
        for s in cand.stages:
            ms, hop = self.ctx.stage_prediction(cand, s)
            out.append(sum(ms) * (self.factor if s.cluster == self.cluster else 1.0) + hop)
        return out

    def fps(self, cand) -> float:
        t = self.stage_ms(cand)
        return 1000.0 / max(x / s.replicas for x, s in zip(t, cand.stages, strict=True))

    def measure(self, cand, frames, warmup) -> Measurement:
        self.calls += 1
        t = self.stage_ms(cand)
        fps = self.fps(cand)
        return Measurement(fps, sum(t), t, 0.01, simulated=True, runs=[fps])

    def scaled_problem(self):
        p = self.ctx.problem
        f = np.array([self.factor if c.cluster == self.cluster else 1.0 for c in p.configs])
        return dataclasses.replace(p, layers=[dataclasses.replace(lay, ms=lay.ms * f[None, :])
                                              for lay in p.layers])


def test_correction_moves_predictions_towards_measurements(ctx):
    plan = ctx.seeds[0]
    guide = Guide(ctx)
    pred0 = np.array(guide.predict(plan))
    meas = pred0 * np.array([2.0 ** (k + 1) for k in range(len(pred0))])  # every stage slower
    guide.observe(plan, Measurement(1.0, float(meas.sum()), list(meas)))
    guide.measured_stage.clear()  # judge the factors, not the memorised stages
    pred1 = np.array(guide.predict(plan))
    assert np.all(np.abs(np.log(meas / pred1)) < np.abs(np.log(meas / pred0)))
    assert np.all(np.abs(np.log(meas / pred1)) < 0.35)


def test_guided_step_proposes_the_true_optimum_after_a_per_cluster_error(ctx):
    plan = ctx.seeds[0]
    cluster = max(plan.stages, key=lambda s: s.stop - s.start).cluster
    dev = ScaledTruth(ctx, cluster, 4.0)
    true_opt = solve_problem(dev.scaled_problem(), "throughput", LIMITS)
    best_fps = true_opt.best.metrics.throughput_fps
    assert dev.fps(plan) < 0.8 * best_fps  # the plan is really wrong on this 'board'
    res = guided_search(ctx.seeds, ctx.space, MeasureCache(dev, 10, 1), budget=Budget(4, 1e9),
                        guide=Guide(ctx))
    assert res.records[1].origin == "replan"
    got = max(dev.fps(r.cand) for r in res.records[:3])
    assert got >= 0.99 * best_fps


def test_without_recalibration_the_same_budget_misses_it(ctx, monkeypatch):
    """The loop is what finds it: with the factor fit switched off the guided step stays on the
    uncorrected plan's neighbourhood."""
    plan = ctx.seeds[0]
    cluster = max(plan.stages, key=lambda s: s.stop - s.start).cluster
    dev = ScaledTruth(ctx, cluster, 4.0)
    best_fps = solve_problem(dev.scaled_problem(), "throughput", LIMITS).best.metrics \
        .throughput_fps
    monkeypatch.setattr(Guide, "fit", lambda self: None)
    res = guided_search(ctx.seeds, ctx.space, MeasureCache(dev, 10, 1), budget=Budget(3, 1e9),
                        guide=Guide(ctx))
    assert max(dev.fps(r.cand) for r in res.records) < 0.99 * best_fps
