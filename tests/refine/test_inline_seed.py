"""A measured plan that runs inline is refined from itself as deployed: the seed keeps its
``inline`` (cache key, runner variant, the local measurement's mode), only a one-stage candidate
over every CPU may run inline, and ``toggle_inline`` moves between inline and a worker process
where the device measures both."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.refine.candidate import GPU, Candidate, Space, StageConf, from_stages
from edgedeploy.refine.operators import OPERATORS, change_batch, change_cores, toggle_inline
from edgedeploy.runtime.vocab import ONNXRUNTIME

NAMES = [f"l{i}" for i in range(4)]


def _space(**kw) -> Space:
    return Space(NAMES, [(ONNXRUNTIME, "native")] * 4, {"cpu": (0, 1), GPU: ()}, **kw)


def test_the_seed_keeps_inline_and_is_measured_so():
    space = _space()
    doc = [{"start": 0, "stop": 4, "cluster": "cpu", "cores": 2, "replicas": 1, "inline": True}]
    inline = from_stages(space, doc, [ONNXRUNTIME] * 4)
    worker = from_stages(space, [{**doc[0], "inline": False}], [ONNXRUNTIME] * 4)
    assert inline.stages[0].inline and not worker.stages[0].inline
    assert space.is_valid(inline) and inline.key != worker.key  # measured and cached apart
    assert space.variant(inline)["stages"][0]["inline"] is True
    assert inline.describe() == "layers 0..3 on cpu:2 x1, inline"
    assert worker.describe() == "layers 0..3 on cpu:2 x1"
    assert "inline" not in space.variant(worker)["stages"][0]
    # a neighbour that changes primitives only is the same stage, still inline
    assert inline.with_choice(1, "native").stages[0].inline


@pytest.mark.parametrize("stages, why", [
    ((StageConf(0, 2, "cpu", 1, inline=True), StageConf(2, 4, "cpu", 1)), "only stage"),
    ((StageConf(0, 4, "cpu", 1, inline=True),), "over all 2 CPUs"),
    ((StageConf(0, 4, GPU, 1, inline=True),), "only stage"),
])
def test_inline_is_one_stage_over_every_cpu(stages, why):
    cand = Candidate(stages, (ONNXRUNTIME,) * 4)
    assert any("runs inline" in v and why in v for v in _space().violations(cand))


def test_toggle_inline_moves_the_one_stage_where_the_device_measures_both():
    rng = np.random.default_rng(0)
    worker = Candidate((StageConf(0, 4, "cpu", 1, 2),), (ONNXRUNTIME,) * 4)
    space = _space(inline=True)
    inline = toggle_inline(worker, space, rng)
    assert inline is not None and inline.stages[0].inline and space.is_valid(inline)
    back = toggle_inline(inline, space, rng)
    assert back is not None and back.key == worker.key
    assert toggle_inline(worker, _space(), rng) is None  # a twin: not measured inline
    split = Candidate((StageConf(0, 2, "cpu", 1), StageConf(2, 4, "cpu", 1)), (ONNXRUNTIME,) * 4)
    assert toggle_inline(split, space, rng) is None
    half = Candidate((StageConf(0, 4, "cpu", 1),), (ONNXRUNTIME,) * 4)
    assert toggle_inline(half, space, rng) is None  # one core of two: the feeder has both
    # a batch changed keeps it inline (micro-batches run inline in threads); the other moves
    # build worker stages
    batched = change_batch(inline, _space(inline=True, batches=(1, 2, 4)), rng)
    assert batched is not None and batched.stages[0].inline and batched.stages[0].batch > 1
    moved = change_cores(inline, space, rng)
    assert moved is None or not any(s.inline for s in moved.stages)


@given(seed=st.integers(0, 10_000), steps=st.integers(1, 30))
def test_every_move_from_an_inline_seed_stays_valid(seed, steps):
    rng = np.random.default_rng(seed)
    space = _space(inline=True, max_stages=3)
    cand = Candidate((StageConf(0, 4, "cpu", 2, inline=True),), (ONNXRUNTIME,) * 4)
    names = list(OPERATORS)
    for _ in range(steps):
        out = OPERATORS[names[int(rng.integers(len(names)))]](cand, space, rng, None)
        if out is not None:
            assert space.violations(out) == []
            cand = out


def test_an_inline_seed_runs_in_the_measuring_process(small_graph):
    """Measured for real on this host: the inline candidate in this process, its worker twin
    through a worker process, each reported by the executor that ran it; and an inline
    session is priced without the frame's hand-over to a worker."""
    from edgedeploy.costmodel import CostModel
    from edgedeploy.planner.partition import Limits
    from edgedeploy.refine.measure import LocalBackend
    from edgedeploy.refine.setup import build_context
    from edgedeploy.twins import twin_target

    tgt = twin_target("rpi4")
    ctx = build_context(small_graph, tgt, limits=Limits(max_stages=1), model=CostModel(tgt))
    cluster = next(c for c in ctx.space.clusters if c != GPU)
    n = len(ctx.space.clusters[cluster])
    n_layers = ctx.space.n_layers
    worker = Candidate((StageConf(0, n_layers, cluster, n),), (ONNXRUNTIME,) * n_layers)
    inline = worker.with_stages([StageConf(0, n_layers, cluster, n, inline=True)])
    assert ctx.space.is_valid(inline)
    assert ctx.problem.feed_ms(cluster, 1) > 0
    assert ctx.predict(inline)[0] == pytest.approx(
        ctx.predict(worker)[0] - ctx.problem.feed_ms(cluster, 1))

    from edgedeploy.runtime.affinity import available_cpus

    here = Space(ctx.space.layer_names, ctx.space.options, {"cpu": tuple(available_cpus())})
    every = len(here.clusters["cpu"])
    backend = LocalBackend(here, small_graph, small_graph.source["path"], layer_frames=0)
    ran = {c.stages[0].inline: backend.measure(c, frames=6, warmup=1).mode
           for c in (Candidate((StageConf(0, n_layers, "cpu", every, inline=i),),
                               (ONNXRUNTIME,) * n_layers) for i in (True, False))}
    assert ran == {True: "inline", False: "pipeline"}


def test_the_baselines_over_every_cpu_are_measured_inline_too_where_the_device_can():
    from edgedeploy.refine.candidate import baselines_from_plan

    def stage(cores, replicas):
        return {"stages": [{"start": 0, "stop": 4, "cluster": "cpu", "cores": cores,
                            "replicas": replicas, "choices": [ONNXRUNTIME] * 4}]}

    doc = {"baselines": {"onnxruntime_replicas": stage(1, 2), "onnxruntime_threads": stage(2, 1),
                         "one_core": stage(1, 1)}}
    ran, _ = baselines_from_plan(_space(inline=True), doc)
    got = {n: c for n, c in ran}
    assert sorted(got) == ["one_core", "onnxruntime_replicas", "onnxruntime_replicas_inline",
                           "onnxruntime_threads", "onnxruntime_threads_inline"]
    assert got["onnxruntime_threads_inline"].stages[0].inline
    assert not got["onnxruntime_threads"].stages[0].inline
    assert [n for n, _ in baselines_from_plan(_space(), doc)[0]] == [
        "one_core", "onnxruntime_replicas", "onnxruntime_threads"]  # a twin: as written
