"""Per-layer timings in the measure answer let the guide fix one layer's primitive, which the
stage-level factors cannot single out."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from edgedeploy.costmodel import CostModel
from edgedeploy.planner.partition import Limits
from edgedeploy.planner.solve import solve_problem
from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.calibrate import stage_samples
from edgedeploy.refine.guide import Guide, family
from edgedeploy.refine.measure import Measurement, RunnerBackend
from edgedeploy.refine.setup import build_context, seeds_from_solution
from edgedeploy.twins import TwinDevice, twin_target

LIMITS = Limits(max_stages=3)
SLOW = 1.6  # the mispriced layer really costs this much more than its best alternative
MARGIN = 1.25  # ... which the model predicts at least this much slower (a clear call)


def _ctx(graph, board: str, deny: tuple[str, ...]):
    tgt = twin_target(board)
    c = build_context(graph, tgt, limits=LIMITS, model=CostModel(tgt), deny=deny)
    c.seeds = seeds_from_solution(c, solve_problem(c.problem, "throughput", LIMITS, (), deny))
    return c


@pytest.fixture(scope="module")
def ctx(small_graph):
    """Native primitives only (onnxruntime denied): the plan uses gemm_1x1 on many layers."""
    return _ctx(small_graph, "rpi4", ("onnxruntime",))


@pytest.fixture(scope="module")
def tx2(small_graph):
    """A plan with onnxruntime segments and a GPU stage."""
    return _ctx(small_graph, "jetson-tx2", ())


def _victim(ctx, plan) -> tuple[int, str, float]:
    """A conv layer of the plan whose family is used by >= 3 other layers of its stage (so a
    family factor cannot blame it alone), with the cheapest predicted alternative at least
    MARGIN slower (a small family-wide shift must not flip it by accident); returns
    (layer, alternative, true factor of its planned primitive)."""
    p = ctx.problem
    best = None
    for s in plan.stages:
        k = ctx._cfg[(s.cluster, s.cores)]
        fams = [family(plan.choices[i]) for i in range(s.start, s.stop)]
        for i in range(s.start, s.stop):
            ch, opts = plan.choices[i], p.layers[i].options
            if ch == "onnxruntime" or fams.count(family(ch)) < 4:
                continue
            alts = [o for o in ctx.space.options_on(i, s.cluster) if o != ch]
            if not alts:
                continue
            ms = {o: float(p.layers[i].ms[opts.index(o), k]) for o in [ch, *alts]}
            alt = min(alts, key=ms.get)
            ratio = ms[alt] / ms[ch]
            if ratio >= MARGIN and (best is None or ratio < best[2]):
                best = (i, alt, ratio)
    assert best is not None, "no layer fits the scenario"
    return best[0], best[1], SLOW * best[2]


class OneLayerWrong:
    """A noise-free device: the planner's costs, except one layer's planned primitive is
    ``factor`` times slower -- on every layer of that shape, as on a real board (identical
    layers run identical kernels). Answers per-layer times only when ``per_layer``."""

    label, simulated = "one-layer-wrong", True

    def __init__(self, ctx, layer: int, choice: str, factor: float, per_layer: bool) -> None:
        self.ctx, self.choice, self.factor = ctx, choice, factor
        self.layers = same_shape(ctx.graph, layer)
        self.per_layer = per_layer

    def _layers(self, cand, s) -> list[float]:
        ms, _hop = self.ctx.stage_prediction(cand, s)
        return [t * (self.factor if i in self.layers and cand.choices[i] == self.choice else 1.0)
                for i, t in zip(range(s.start, s.stop), ms, strict=True)]

    def measure(self, cand, frames, warmup) -> Measurement:
        stage, layers = [], []
        for s in cand.stages:
            ms = self._layers(cand, s)
            stage.append(sum(ms) + self.ctx.stage_prediction(cand, s)[1])
            layers.append([(i, i + 1, t) for i, t in zip(range(s.start, s.stop), ms,
                                                         strict=True)])
        fps = 1000.0 / max(t / s.replicas for t, s in zip(stage, cand.stages, strict=True))
        return Measurement(fps, sum(stage), stage, 0.01, simulated=True, runs=[fps],
                           layer_ms=layers if self.per_layer else None)


def same_shape(graph, layer: int) -> set[int]:
    d = graph.layers[layer].descriptor
    return {i for i, lay in enumerate(graph.layers) if lay.descriptor == d}


def _singled_out(plan, replan, layer: int, graph) -> bool:
    """The re-plan changed this layer's primitive but kept most of its family-mates' (the
    layers of other shapes planned with the same primitive family)."""
    fam = family(plan.choices[layer])
    twins = same_shape(graph, layer)
    mates = [i for i, c in enumerate(plan.choices) if i not in twins and family(c) == fam]
    moved = sum(replan.choices[i] != plan.choices[i] for i in mates) / max(1, len(mates))
    return replan.choices[layer] != plan.choices[layer] and moved < 0.25


@pytest.mark.parametrize("per_layer", [False, True])
def test_per_layer_timings_find_a_wrong_primitive_stage_factors_cannot(ctx, per_layer):
    """Same device, same candidate: with per-layer times the re-plan swaps the one mispriced
    layer's primitive; from stage sums alone the error lands on the whole family (or nowhere)."""
    plan = ctx.seeds[0]
    layer, _alt, factor = _victim(ctx, plan)
    dev = OneLayerWrong(ctx, layer, plan.choices[layer], factor, per_layer)
    guide = Guide(ctx)
    guide.observe(plan, dev.measure(plan, 10, 1))
    replan = guide.replan()[0]
    assert _singled_out(plan, replan, layer, ctx.graph) == per_layer
    if per_layer:
        s = plan.stages[plan.stage_of(layer)]
        assert guide.layers.factor(layer, plan.choices[layer],
                                   ctx._cfg[(s.cluster, s.cores)]) > 1.25


def test_per_layer_corrections_shrink_towards_the_stage_factors(ctx):
    """One noisy observation moves a layer's factor part of the way, not all of it."""
    plan = ctx.seeds[0]
    layer, _alt, _f = _victim(ctx, plan)
    dev = OneLayerWrong(ctx, layer, plan.choices[layer], 3.0, True)
    guide = Guide(ctx)
    guide.observe(plan, dev.measure(plan, 10, 1))
    s = plan.stages[plan.stage_of(layer)]
    f = guide.layers.factor(layer, plan.choices[layer], ctx._cfg[(s.cluster, s.cores)])
    assert 1.5 < f < 3.0


def test_per_layer_samples_go_into_the_profile_as_measured(ctx, small_graph):
    plan = ctx.seeds[0]
    layer, _alt, _f = _victim(ctx, plan)
    dev = OneLayerWrong(ctx, layer, plan.choices[layer], 3.0, True)
    m = dev.measure(plan, 10, 1)
    samples = stage_samples(ctx.problem, small_graph, plan, m, ctx.stage_prediction)
    assert len(samples) == len(small_graph.layers)
    s = plan.stages[plan.stage_of(layer)]
    pred = ctx.stage_prediction(plan, s)[0][layer - s.start]
    got = [x.ms for x in samples if x.descriptor is small_graph.layers[layer].descriptor
           and x.primitive == plan.choices[layer]]
    assert got and all(ms == pytest.approx(3.0 * pred) for ms in got)


def test_twin_answers_per_layer_times_for_every_stage(tx2, small_graph):
    ctx = tx2
    plan = ctx.seeds[0]
    dev = TwinDevice(ctx.target, small_graph, 0)
    backend = RunnerBackend(ctx.space, dev.run, simulated=True)
    out = json.loads(dev.run(backend.argv(plan, 10, 2)))
    assert out["simulated"] and "simulated" in out["layer_ms_source"]
    m = MeasureCache(backend, 10, 2).measure(plan)[0]
    assert m.layer_ms is not None and len(m.layer_ms) == len(plan.stages)
    for s, entries in zip(plan.stages, m.layer_ms, strict=True):
        assert entries[0][0] == s.start and entries[-1][1] == s.stop
        assert all(a < b and ms > 0 for a, b, ms in entries)
        assert all(e[1] == n[0] for e, n in itertools.pairwise(entries))
        for a, b, ms in entries:  # one step per layer, except onnxruntime segments
            assert b - a == 1 or all(plan.choices[i] == "onnxruntime" for i in range(a, b))
            true = sum(dev.truth.layer_time(i, plan.choices[i], s.cluster, s.cores)
                       for i in range(a, b))
            assert abs(np.log(ms / true)) < 0.5
