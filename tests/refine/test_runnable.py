"""Refinement proposes only what the device can run, and confirms before it claims: candidates
needing a segment the deployed bundle does not ship, or a LiteRT run that splits a TFLite
operator, are invalid; a winner is re-measured against the start, alternately."""

from __future__ import annotations

import numpy as np

from edgedeploy.costmodel import CostModel
from edgedeploy.planner.partition import Limits
from edgedeploy.planner.solve import solve_problem
from edgedeploy.refine.api import CONFIRM_ROUNDS, confirm
from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.candidate import Candidate
from edgedeploy.refine.measure import RunnerBackend
from edgedeploy.refine.operators import mutate
from edgedeploy.refine.runnable import check_for
from edgedeploy.refine.search import SearchResult
from edgedeploy.refine.setup import build_context, seeds_from_solution
from edgedeploy.runtime.stages import StageIO, segment_key, segments_needed
from edgedeploy.twins import TwinDevice, twin_target


def _ctx(graph, board="rpi4"):
    tgt = twin_target(board)
    ctx = build_context(graph, tgt, limits=Limits(max_stages=3), model=CostModel(tgt))
    seeds = seeds_from_solution(ctx, solve_problem(ctx.problem, "throughput",
                                                   Limits(max_stages=3)))
    return ctx, seeds


def _shipped(graph, space, cand):
    choices = dict(zip(space.layer_names, cand.choices, strict=True))
    return {segment_key(e, i, o) for s in cand.stages
            for e, i, o in segments_needed(graph, StageIO(s.start, s.stop, (), ()), choices)}


def test_only_segments_the_bundle_ships_are_proposed(small_graph):
    ctx, seeds = _ctx(small_graph)
    plan = seeds[0]
    all_ort = Candidate(plan.stages, tuple("onnxruntime" for _ in plan.choices))
    shipped = _shipped(small_graph, ctx.space, all_ort)
    ctx.space.runnable = check_for(small_graph, ctx.space, shipped)
    assert ctx.space.is_valid(all_ort)
    # onnxruntime everywhere but one layer in the middle: two new segments nobody shipped
    k = len(all_ort.choices) // 2
    split = all_ort.with_choice(k, next(o for o in ctx.space.options[k] if o != "onnxruntime"))
    why = ctx.space.violations(split)
    assert why and all("not in the deployed bundle" in w for w in why)
    rng = np.random.default_rng(0)
    for _ in range(30):  # whatever the operators propose stays within what is shipped
        out = mutate(all_ort, ctx.space, rng)
        if out is not None:
            assert _shipped(small_graph, ctx.space, out) <= shipped


def test_a_litert_run_never_splits_a_tflite_operator(tmp_path):
    from tests.importers.test_tflite_cut import branchy

    from edgedeploy import api
    from edgedeploy.importers.tflite_cut import litert_boundaries

    graph = api.load_model(branchy(tmp_path / "b.tflite"))
    ctx, seeds = _ctx(graph)
    ctx.space.runnable = check_for(graph, ctx.space)
    inside = next(k for k in range(1, len(graph.layers)) if k not in litert_boundaries(graph))
    one = seeds[0].stages[:1]
    whole = Candidate(((one[0].__class__)(0, len(graph.layers), one[0].cluster, 1, 1),),
                      tuple("litert" for _ in graph.layers))
    assert ctx.space.is_valid(whole)
    cut = whole.with_choice(inside, "native")  # leaves a litert run ending inside an operator
    assert any("splits a TFLite operator" in w for w in ctx.space.violations(cut))


def test_a_winner_is_confirmed_against_the_start_before_it_counts(small_graph):
    ctx, seeds = _ctx(small_graph)
    device = TwinDevice(twin_target("rpi4"), small_graph, 0)
    cache = MeasureCache(RunnerBackend(ctx.space, device.run, simulated=True), 10, 1)
    start, other = seeds[0], next(s for s in seeds[1:] if s.key != seeds[0].key)
    a, _ = cache.measure(start)
    b, _ = cache.measure(other)
    res = SearchResult(start=(start, a), best=(other, b))
    out = confirm(res, cache)
    assert len(cache.get(start).runs) == len(cache.get(other).runs) == CONFIRM_ROUNDS + 1
    kept = out.best[0]
    assert kept.key in (start.key, other.key)
    assert out.best[1].throughput_fps >= out.start[1].throughput_fps
