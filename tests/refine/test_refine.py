"""Refinement: operators keep candidates valid, the cache prevents re-measuring, the refiner
never returns worse than the plan, profile feedback appends, and the CLI runs on a twin."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.costmodel import CostModel
from edgedeploy.planner.partition import Limits
from edgedeploy.planner.solve import solve_problem
from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.guide import Guide
from edgedeploy.refine.measure import RunnerBackend
from edgedeploy.refine.operators import OPERATORS, mutate, random_candidate
from edgedeploy.refine.search import Budget, guided_search
from edgedeploy.refine.setup import build_context, seeds_from_solution
from edgedeploy.twins import TwinDevice, twin_target


@pytest.fixture(scope="module")
def ctx(small_graph):
    tgt = twin_target("jetson-tx2")
    c = build_context(small_graph, tgt, limits=Limits(max_stages=3), model=CostModel(tgt))
    c.seeds = seeds_from_solution(c, solve_problem(c.problem, "throughput", Limits(max_stages=3)))
    return c


@given(seed=st.integers(0, 10_000), steps=st.integers(1, 25))
def test_every_operator_sequence_keeps_candidates_valid(ctx, seed, steps):
    rng = np.random.default_rng(seed)
    cand = random_candidate(ctx.space, rng, ctx.seeds[0].choices)
    assert ctx.space.is_valid(cand)
    names = list(OPERATORS)
    for _ in range(steps):
        op = OPERATORS[names[int(rng.integers(len(names)))]]
        focus = int(rng.integers(len(cand.stages))) if rng.random() < 0.5 else None
        out = op(cand, ctx.space, rng, focus)
        if out is not None:
            assert ctx.space.violations(out) == []
            cand = out


class CountingBackend:
    label, simulated = "count", True

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def measure(self, cand, frames, warmup):
        self.calls.append(cand.key)
        return self.inner.measure(cand, frames, warmup)


def _backend(ctx, small_graph, seed=0):
    dev = TwinDevice(twin_target("jetson-tx2"), small_graph, seed)
    return CountingBackend(RunnerBackend(ctx.space, dev.run, simulated=True))


def test_cache_never_measures_a_configuration_twice(ctx, small_graph):
    be = _backend(ctx, small_graph)
    cache = MeasureCache(be, 10, 1)
    a, fresh_a = cache.measure(ctx.seeds[0])
    b, fresh_b = cache.measure(ctx.seeds[0])
    assert fresh_a and not fresh_b and a is b and len(be.calls) == 1
    res = guided_search(ctx.seeds, ctx.space, MeasureCache(be, 10, 1), budget=Budget(25, 1e9),
                        guide=Guide(ctx))
    fresh = [r.cand.key for r in res.records if r.origin != "remeasure"]
    assert len(fresh) == len(set(fresh))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refiner_never_returns_worse_than_its_start(ctx, small_graph, seed):
    cache = MeasureCache(_backend(ctx, small_graph, seed), 10, 1)
    res = guided_search(ctx.seeds, ctx.space, cache, budget=Budget(15, 1e9),
                        guide=Guide(ctx), seed=seed)
    assert res.best[1].throughput_fps >= res.start[1].throughput_fps
    assert res.start[0].key == ctx.seeds[0].key
    assert ctx.space.is_valid(res.best[0])


def test_mutate_returns_a_different_valid_candidate(ctx):
    rng = np.random.default_rng(0)
    out = mutate(ctx.seeds[0], ctx.space, rng)
    assert out is not None and out.key != ctx.seeds[0].key and ctx.space.is_valid(out)


@pytest.fixture()
def manifest(tmp_path, monkeypatch):
    from edgedeploy import zoo

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    zoo.export("squeezenet1_1", tmp_path / "m.onnx", size=64)
    (tmp_path / "m.yaml").write_text("name: t\nmodel:\n  path: m.onnx\npipeline:\n  max_stages: 3\n"
                                     "refine:\n  max_evals: 8\n  frames_per_eval: 10\n")
    return tmp_path / "m.yaml"


def test_refine_cli_on_a_twin_writes_a_loadable_refined_plan(manifest, capsys):
    from edgedeploy.cli.main import main
    from edgedeploy.schemas.plan import load_plan

    rc = main(["refine", "-m", str(manifest), "--target", "sim:rpi4", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["simulated"] is True and data["evaluations"] == 8
    assert data["best"]["throughput_fps"] >= data["plan_before"]["measured"]["throughput_fps"]
    assert data["improvement"] >= 1.0
    plan = load_plan(data["plan_file"])
    assert plan.measured["simulated"] is True and plan.stages[0].measured_ms is not None
    assert data["profile"]["samples_added"] > 0


def test_profile_feedback_appends_samples(manifest):
    from edgedeploy.costmodel import open_profile
    from edgedeploy.refine.api import refine

    first = refine(manifest, "sim:rpi4", max_evals=4)
    n1 = len(open_profile(twin_target("rpi4")).select("refine"))
    refine(manifest, "sim:rpi4", max_evals=4)
    n2 = len(open_profile(twin_target("rpi4")).select("refine"))
    assert n1 == first.profile["samples_added"] > 0 and n2 > n1


def test_refine_score_subcommand_is_reachable(capsys):
    from edgedeploy.cli.main import main

    assert main(["refine", "score", "--help"]) == 0
    assert "exhaustive optimum" in capsys.readouterr().out


def test_the_refiner_prices_a_candidate_exactly_as_the_planner_does(small_graph):
    """Replicas at the cluster's measured speed-up and the stages of a split beside each other
    (the pipeline factor), as ``partition.evaluate`` prices every plan the planner writes."""
    from edgedeploy.planner.solve import stage_choices
    from edgedeploy.refine.candidate import Candidate, StageConf

    tgt = twin_target("jetson-tx2")
    limits = Limits(max_stages=3)
    c = build_context(small_graph, tgt, limits=limits, model=CostModel(tgt))
    p = c.problem
    p.replica_scaling = {q.name: {r: 0.8 * r for r in range(2, q.capacity + 1)}
                         for q in p.clusters if not q.is_gpu}
    sol = solve_problem(p, "throughput", limits)
    checked = set()
    for pc in [sol.best, *sol.mapping.candidates]:
        stages = tuple(StageConf(s.start, s.stop, p.configs[s.config].cluster,
                                 p.configs[s.config].cores, s.replicas) for s in pc.stages)
        got = c.predicted_metrics(Candidate(stages, tuple(stage_choices(p, sol.selection, pc))))
        assert got["throughput_fps"] == pytest.approx(pc.metrics.throughput_fps, rel=1e-9)
        assert got["stage_ms"] == pytest.approx(list(pc.metrics.stage_ms), rel=1e-9)
        checked.add((len(pc.stages) > 1, any(s.replicas > 1 for s in pc.stages)))
    assert {True} <= {split for split, _ in checked} and {True} <= {r for _, r in checked}


def test_a_twin_alias_refines_from_its_lockfile_and_sim_board_from_the_cost_model(manifest):
    """A manifest alias whose transport is a twin has a lockfile, and refinement starts from
    it as on a real board; ``sim:<board>`` names no alias, so no lockfile: the cost model's
    plan."""
    from edgedeploy.api import plan
    from edgedeploy.refine.api import refine

    manifest.write_text(manifest.read_text() + "targets:\n  pi: {board: rpi4, transport: sim}\n"
                        "measure: {enabled: false}\n")
    lock = plan(manifest, "pi")[0].plan_file
    assert lock.is_file()
    aliased = refine(manifest, "pi", max_evals=2, feedback=False).summary()
    assert aliased["plan_before"]["file"] == str(lock) and aliased["simulated"] is True
    adhoc = refine(manifest, "sim:rpi4", max_evals=2, feedback=False).summary()
    assert adhoc["plan_before"]["file"] is None
