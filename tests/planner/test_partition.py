"""Pipeline mapping equals brute force on small graphs; random DAGs always give valid plans."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy.errors import InfeasibleError
from edgedeploy.planner.brute import brute_best, brute_mappings
from edgedeploy.planner.document import assign_cpus
from edgedeploy.planner.pareto import dominates, pareto_front
from edgedeploy.planner.partition import Limits, map_stages
from edgedeploy.planner.select import select
from edgedeploy.planner.synthetic import clusters_for, random_problem

VALUE = {"throughput": "period_ms", "latency": "latency_ms", "energy": "energy_mj"}


def _problem(seed, n, dag, n_clusters, gpu=False, shared=False):
    """A random problem; ``shared``: its clusters' cores measured to share (two one-core
    replicas 0.5-2.0x one: under one where the hop to them costs more than a tiny model), which
    slows replicas and every stage of a pipeline."""
    rng = np.random.default_rng(seed)
    p = random_problem(rng, n, n_options=3, dag=dag,
                       clusters=clusters_for(n_clusters, cores=2, gpu=gpu))
    if shared:
        p.replica_scaling = {c.name: {2: float(rng.uniform(0.5, 2.0))} for c in p.clusters
                             if not c.is_gpu}
    p.frame_ms = float(rng.choice([0.0, rng.uniform(0.0, 0.2)]))  # a stage's own cost a frame
    return p


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(3, 7), dag=st.booleans(),
       n_clusters=st.integers(1, 2), objective=st.sampled_from(sorted(VALUE)),
       max_stages=st.integers(1, 3), replication=st.booleans(), shared=st.booleans())
def test_mapping_equals_brute_force(seed, n, dag, n_clusters, objective, max_stages, replication,
                                    shared):
    p = _problem(seed, n, dag, n_clusters, shared=shared)
    sel = select(p)
    limits = Limits(max_stages=max_stages, allow_replication=replication)
    got = map_stages(p, sel, objective, limits, sweep_limit=200)
    want = brute_best(p, sel, objective, limits)
    key = VALUE[objective]
    assert getattr(got.best.metrics, key) == pytest.approx(getattr(want.metrics, key), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(3, 6), objective=st.sampled_from(
    ["throughput", "latency"]), frac=st.floats(0.3, 1.5), shared=st.booleans())
def test_constrained_mapping_equals_brute_force(seed, n, objective, frac, shared):
    """Throughput under a latency bound, latency under a throughput bound: exact sweeps."""
    p = _problem(seed, n, True, 2, shared=shared)
    sel = select(p)
    base = Limits(max_stages=3)
    free = brute_best(p, sel, objective, base)
    if objective == "throughput":
        limits = Limits(max_stages=3, max_latency_ms=free.metrics.latency_ms * frac)
    else:
        limits = Limits(max_stages=3, min_throughput_fps=free.metrics.throughput_fps / frac)
    want = brute_best(p, sel, objective, limits)
    if want is None:
        with pytest.raises(InfeasibleError):
            map_stages(p, sel, objective, limits, sweep_limit=200)
        return
    got = map_stages(p, sel, objective, limits, sweep_limit=200)
    key = VALUE[objective]
    assert getattr(got.best.metrics, key) == pytest.approx(getattr(want.metrics, key), rel=1e-9)


def _assert_valid(p, cand, limits):
    stages = cand.stages
    assert stages[0].start == 0 and stages[-1].stop == p.n_layers
    assert all(a.stop == b.start for a, b in itertools.pairwise(stages))
    assert all(s.stop > s.start for s in stages)
    assert len(stages) <= limits.max_stages
    cpus = [c for ids in assign_cpus(p, cand) for c in ids]
    assert len(cpus) == len(set(cpus)), "cores shared between stages"
    gpu_stages = [s for s in stages if p.configs[s.config].cluster == "gpu"]
    assert len(gpu_stages) <= 1 and all(s.replicas == 1 for s in gpu_stages)
    m = cand.metrics
    if limits.max_latency_ms is not None:
        assert m.latency_ms <= limits.max_latency_ms * (1 + 1e-9)
    if limits.min_throughput_fps is not None:
        assert m.throughput_fps >= limits.min_throughput_fps * (1 - 1e-9)
    if limits.max_power_w is not None:
        assert m.power_w <= limits.max_power_w * (1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(3, 60), objective=st.sampled_from(sorted(VALUE)),
       lat=st.one_of(st.none(), st.floats(1.0, 200.0)), fps=st.one_of(st.none(), st.floats(1, 500)),
       power=st.one_of(st.none(), st.floats(0.5, 20.0)), max_stages=st.integers(1, 5))
def test_random_dags_give_valid_plans_or_a_named_infeasible_constraint(
        seed, n, objective, lat, fps, power, max_stages):
    p = _problem(seed, n, True, 2, gpu=True)
    sel = select(p)
    limits = Limits(max_latency_ms=lat, min_throughput_fps=fps, max_power_w=power,
                    max_stages=max_stages)
    try:
        got = map_stages(p, sel, objective, limits, max_cuts=16)
    except InfeasibleError as exc:
        assert "best reachable" in str(exc) or "together" in str(exc)
        return
    _assert_valid(p, got.best, limits)
    for cand in got.candidates:
        _assert_valid(p, cand, Limits(max_stages=max_stages))


def test_infeasible_throughput_names_the_constraint_and_the_best_reachable_value():
    p = _problem(4, 5, False, 2)
    sel = select(p)
    best = max(c.metrics.throughput_fps for c in brute_mappings(p, sel, Limits()))
    with pytest.raises(InfeasibleError) as err:
        map_stages(p, sel, "throughput", Limits(min_throughput_fps=best * 10))
    text = str(err.value)
    assert "min_throughput_fps" in text and f"{best:.4g} fps" in text
    assert err.value.exit_code == 3


def test_infeasible_latency_names_the_constraint_and_the_lowest_latency():
    p = _problem(9, 5, True, 2)
    sel = select(p)
    low = min(c.metrics.latency_ms for c in brute_mappings(p, sel, Limits()))
    with pytest.raises(InfeasibleError) as err:
        map_stages(p, sel, "throughput", Limits(max_latency_ms=low / 2))
    assert "max_latency_ms" in str(err.value) and f"{low:.4g} ms" in str(err.value)


def test_pareto_front_is_non_dominated_and_contains_the_best_throughput():
    p = _problem(21, 7, True, 2, gpu=True)
    sel = select(p)
    m = map_stages(p, sel, "throughput", Limits(max_stages=3), sweep_limit=50)
    front = pareto_front(m.candidates)
    assert all(not dominates(a, b) for a in front for b in front)
    assert front[0].metrics.throughput_fps == pytest.approx(m.best.metrics.throughput_fps)


def test_a_pipelines_stages_share_their_cluster_as_replicas_do():
    """Measured sharing (two one-core replicas 1.5x one) slows every stage of a plan of
    several stages by 2 / 1.5, a plan of one stage not at all."""
    from edgedeploy.planner.partition import Stage, StageCosts, evaluate

    p = _problem(3, 6, False, 1)
    sel = select(p)
    costs = StageCosts(p, sel)
    one = next(c for c, cfg in enumerate(p.configs) if cfg.cores == 1)
    split = (Stage(0, 3, one, 1), Stage(3, 6, one, 1))
    whole = (Stage(0, 6, one, 1),)
    alone_split, alone_whole = evaluate(p, costs, split), evaluate(p, costs, whole)
    p.replica_scaling = {p.clusters[0].name: {2: 1.5}}
    shared_split, shared_whole = evaluate(p, costs, split), evaluate(p, costs, whole)
    assert p.pipeline_factor(0) == pytest.approx(2 / 1.5)
    assert shared_split.stage_ms == pytest.approx([t * 2 / 1.5 for t in alone_split.stage_ms])
    assert shared_whole == alone_whole


def test_replication_is_the_lever_on_a_homogeneous_two_core_host():
    """One cluster of 2 cores, no transfers help: 2 replicas x 1 core beat 1 stage x 2 cores
    when the cost model says threading scales sub-linearly."""
    p = _problem(2, 6, False, 1)
    sel = select(p)
    m = map_stages(p, sel, "throughput", Limits(max_stages=2))
    assert m.best.metrics.throughput_fps >= max(
        c.metrics.throughput_fps for c in brute_mappings(p, sel, Limits(max_stages=2))) * (1 - 1e-9)
    assert sum(s.replicas * p.configs[s.config].cores for s in m.best.stages) <= 2


def test_the_first_stage_pays_the_frames_hand_over_from_the_caller_but_replicas_do_not():
    """A worker stage receives its frame through the feeding process's ring as a later stage
    receives its input: the same hop, priced on the graph inputs' bytes. Replicas' measured
    speed-up was measured through that hop, so it is not added to them a second time."""
    from edgedeploy.planner.partition import Stage, StageCosts, evaluate
    from edgedeploy.planner.problem import fixed_transfer

    p = _problem(3, 6, False, 1)
    sel = select(p)
    one = next(c for c, cfg in enumerate(p.configs) if cfg.cores == 1)
    stages = {r: (Stage(0, 6, one, r),) for r in (1, 2)}
    p.transfer_ms = fixed_transfer(0.0, 0.0)
    free = {r: evaluate(p, StageCosts(p, sel), s) for r, s in stages.items()}
    p.transfer_ms = fixed_transfer(0.5, 0.0)
    fed = {r: evaluate(p, StageCosts(p, sel), s) for r, s in stages.items()}
    assert fed[1].period_ms == pytest.approx(free[1].period_ms + 0.5)
    assert fed[1].latency_ms == pytest.approx(free[1].latency_ms + 0.5)
    assert fed[2] == free[2]
    split = (Stage(0, 3, one, 1), Stage(3, 6, one, 1))  # the cut's hop, and the feed
    p.transfer_ms = fixed_transfer(0.0, 0.0)
    none = evaluate(p, StageCosts(p, sel), split)
    p.transfer_ms = fixed_transfer(0.5, 0.0)
    assert evaluate(p, StageCosts(p, sel), split).latency_ms == pytest.approx(
        none.latency_ms + 2 * 0.5)


def test_a_stage_pays_its_own_cost_a_frame_but_replicas_do_not():
    """``frame_ms`` (measured on the model: a stage's work a frame around its layers) is added
    to every one-replica stage; replicas' measured speed-up already holds it."""
    from edgedeploy.planner.partition import Stage, StageCosts, evaluate

    p = _problem(4, 6, False, 1)
    p.frame_ms = 0.0
    sel = select(p)
    one = next(c for c, cfg in enumerate(p.configs) if cfg.cores == 1)
    plans = [(Stage(0, 6, one, 1),), (Stage(0, 6, one, 2),),
             (Stage(0, 3, one, 1), Stage(3, 6, one, 1))]
    before = [evaluate(p, StageCosts(p, sel), s) for s in plans]
    p.frame_ms = 0.25
    after = [evaluate(p, StageCosts(p, sel), s) for s in plans]
    assert after[0].latency_ms == pytest.approx(before[0].latency_ms + 0.25)
    assert after[1] == before[1]
    assert after[2].latency_ms == pytest.approx(before[2].latency_ms + 2 * 0.25)
    # and the DP prices it as evaluate does
    got = map_stages(p, sel, "throughput", Limits(max_stages=2), sweep_limit=200)
    want = brute_best(p, sel, "throughput", Limits(max_stages=2))
    assert got.best.metrics.period_ms == pytest.approx(want.metrics.period_ms, rel=1e-9)
