"""The refinement score is fair: same start, cache and budget for every method; random search
draws primitives too; the twin has effects the cost model and the guide do not; every figure is
deterministic per seed and summarised over seeds beside the plan's own figures."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edgedeploy.costmodel import CostModel
from edgedeploy.planner.partition import Limits
from edgedeploy.refine import score as score_mod
from edgedeploy.refine.baselines import random_search
from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.candidate import Candidate, StageConf
from edgedeploy.refine.guide import Guide
from edgedeploy.refine.measure import RunnerBackend
from edgedeploy.refine.operators import random_candidate
from edgedeploy.refine.score import METHODS, prepare, run_methods, score
from edgedeploy.refine.search import Budget
from edgedeploy.refine.setup import build_context
from edgedeploy.runtime.vocab import ONNXRUNTIME
from edgedeploy.twins import GroundTruth, TwinDevice, twin_target

pytestmark = pytest.mark.timeout(240)
BOARD, MODEL, SIZE = "rpi4", "alexnet", 64  # alexnet: small and held out (not a tuning model)


@pytest.fixture(scope="module")
def setup0():
    return prepare(BOARD, MODEL, size=SIZE, seed=0, profile_s=10.0)


@pytest.fixture(scope="module")
def tiny():
    """The tiny score run: 1 board x 1 small model, size 64, budget 6, 3 seeds (timed from an
    empty memo: the model's export, the profiles and the plans are part of it). The profiler's
    designed sample is built first: its zoo shapes are a one-time disk cache of an install, which
    this test session starts without."""
    from edgedeploy.twins.profile import twin_shapes

    twin_shapes("designed")
    score_mod._graph.cache_clear()
    score_mod._PROFILES.clear()
    score_mod._PRIOR_PLANS.clear()
    t0 = time.perf_counter()
    res = score([BOARD], [MODEL], size=SIZE, budget=6, seeds=(0, 1, 2), profile_s=10.0)
    return res, time.perf_counter() - t0


def test_random_search_draws_primitives_not_only_structure(setup0):
    space, plan = setup0.ctx.space, setup0.seeds[0]
    rng = np.random.default_rng(0)
    drawn = [random_candidate(space, rng) for _ in range(20)]
    assert all(space.is_valid(c) for c in drawn)
    assert any(c.choices != plan.choices for c in drawn)
    # on a board without a GPU every cluster runs every option: a changed choice was drawn
    assert any(c.choices[i] != plan.choices[i] and plan.choices[i] in space.options_on(
        i, c.stages[c.stage_of(i)].cluster) for c in drawn for i in range(space.n_layers))
    device = TwinDevice(setup0.target, setup0.graph, 0, truth=setup0.truth)
    cache = MeasureCache(RunnerBackend(space, device.run, simulated=True), 10, 2)
    res = random_search(space, cache, budget=Budget(6, float("inf")), starts=[plan])
    assert any(r.cand.choices != plan.choices for r in res.records[1:])


def test_structure_only_draws_keep_the_base_primitives(setup0):
    space, plan = setup0.ctx.space, setup0.seeds[0]
    c = random_candidate(space, np.random.default_rng(3), plan.choices, draw_primitives=False)
    assert c.choices == plan.choices  # rpi4 has no GPU: every choice runs everywhere


def test_every_method_measures_the_same_plan_first_with_a_fresh_cache(setup0):
    results = run_methods(setup0, budget=5, frames=10)
    assert set(results) == set(METHODS)
    for name, res in results.items():
        assert res.records[0].cand == setup0.seeds[0], name
        assert res.records[0].origin == "seed" and res.start[0] == setup0.seeds[0]
        assert 0 < res.evaluations <= 5
    firsts = {res.records[0].meas.throughput_fps for res in results.values()}
    assert len(firsts) == 1  # a fresh twin of the seed each: the same first measurement


def _ort_run(truth: GroundTruth, k: int) -> int:
    """The start of k consecutive layers onnxruntime can run, one a conv followed by a conv."""
    ops = [layer.op for layer in truth.graph.layers]
    return next(a for a in range(len(ops) - k) if ops[a] == ops[a + 1] == "conv2d")


def test_twin_fuses_an_onnxruntime_segment_which_the_model_and_guide_price_as_a_sum(
        small_graph):
    tgt = twin_target("rpi4")
    truth = GroundTruth(tgt, small_graph, 0)
    n, k = len(small_graph.layers), 4
    a = _ort_run(truth, k)
    ort = [ONNXRUNTIME] * n
    solo = sum(truth.layer_time(i, ONNXRUNTIME, "a72", 1) for i in range(a, a + k))
    fused = truth.stage_ms(a, a + k, ort, "a72", 1)
    assert fused < 0.97 * solo  # one segment of k layers is truly faster than its layers alone
    one = truth.pipeline([(0, n, "a72", 1, 1)], ort)["stage_ms"][0]
    assert one < sum(truth.layer_time(i, ONNXRUNTIME, "a72", 1) for i in range(n))

    ctx = build_context(small_graph, tgt, limits=Limits(max_stages=3), model=CostModel(tgt))
    cand = Candidate((StageConf(0, n, "a72", 1, 1),), tuple(ort))
    assert ctx.space.is_valid(cand)
    cfg = next(j for j, c in enumerate(ctx.problem.configs) if (c.cluster, c.cores) == ("a72", 1))
    per_layer = [float(layer.ms[layer.options.index(ONNXRUNTIME), cfg])
                 for layer in ctx.problem.layers]
    fed = sum(per_layer) + ctx.problem.feed_ms("a72", 1)  # the frame from the caller
    assert ctx.predict(cand)[0] == pytest.approx(fed, rel=1e-9)
    assert Guide(ctx).predict(cand)[0] == pytest.approx(fed, rel=1e-9)


def test_native_calls_pay_a_dispatch_only_inside_a_stage(small_graph):
    truth = GroundTruth(twin_target("rpi4"), small_graph, 0)
    i = next(j for j, opts in enumerate(truth.options) if len(opts) > 2)
    prim = next(o for o in truth.options[i] if o != ONNXRUNTIME)
    ch = [prim if j == i else ONNXRUNTIME for j in range(len(small_graph.layers))]
    in_stage = truth.stage_layer_ms(i, i + 1, ch, "a72", 1)[0]
    alone = truth.layer_time(i, prim, "a72", 1)  # what profiling the layer measures
    assert in_stage > alone
    assert truth.unit_ms(small_graph.layers[i].descriptor, prim, "a72", 1) == alone


def test_the_optimum_is_reached_by_its_own_choices_and_beats_every_plan(setup0):
    truth = setup0.truth
    cap = {c: setup0.ctx.space.capacity(c) for c in setup0.ctx.space.clusters}
    opt = truth.optimum(3, True, cap)
    again = truth.pipeline(opt["stages"], opt["choices"])["throughput_fps"]
    assert again == pytest.approx(opt["throughput_fps"], rel=1e-9)
    assert setup0.true_fps(setup0.seeds[0]) <= opt["throughput_fps"] * (1 + 1e-9)


def test_score_is_deterministic_per_seed():
    def run():
        score_mod._PROFILES.clear()
        score_mod._PRIOR_PLANS.clear()
        res = score([BOARD], [MODEL], size=SIZE, budget=5, seeds=(1,), profile_s=10.0)
        return json.dumps(res, sort_keys=True, default=str)

    assert run() == run()


def test_tiny_score_run_is_fast_and_reports_seeds_plan_and_held_out(tiny):
    res, seconds = tiny
    assert seconds < 20.0
    assert res["simulated"] is True and res["seeds"] == [0, 1, 2]
    assert res["held_out_models"] == [MODEL] and MODEL not in res["tuning_models"]
    assert [r["seed"] for r in res["rows"]] == [0, 1, 2]
    for r in res["rows"]:
        assert r["simulated"] and r["held_out"] is True
        for name in METHODS:
            m = r["methods"][name]
            assert m["first_is_plan"] and m["evaluations"] <= 6
            assert m["plan_vs_optimum"] == r["plan_vs_optimum"] == r["plan"]["final_vs_optimum"]
            assert m["plan_near_optimal"] == float(r["plan_vs_optimum"] >= 0.9)
    assert len({r["optimum_fps"] for r in res["rows"]}) == 3  # a seed is a different twin


def test_summary_gives_mean_and_spread_over_seeds_beside_the_plans_own(tiny):
    res, _ = tiny
    s = res["summary"]
    plan_vs = [r["plan_vs_optimum"] for r in res["rows"]]
    assert s["plan"]["final_vs_optimum"]["per_seed"] == pytest.approx(plan_vs)
    assert s["plan"]["final_vs_optimum"]["mean"] == pytest.approx(np.mean(plan_vs))
    assert s["plan"]["final_vs_optimum"]["sd"] == pytest.approx(np.std(plan_vs, ddof=1))
    for name in METHODS:
        block = s[name]
        finals = [r["methods"][name]["final_vs_optimum"] for r in res["rows"]]
        assert block["final_vs_optimum"]["mean"] == pytest.approx(np.mean(finals))
        assert block["plan_vs_optimum"]["mean"] == pytest.approx(np.mean(plan_vs))
        assert len(block["near_optimal_fraction"]["per_seed"]) == 3
        assert block["plan_near_optimal_fraction"] == s["plan"]["near_optimal_fraction"]
    assert set(s["sets"]) == {"held_out"} and s["targets"]["judged_on"] == "held_out"
