"""Baselines are ordinary plans the planner prices like its own: it never prefers a plan it
predicts slower than the whole model through one engine, threaded or replicated."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy.planner.baselines import engine_baselines
from edgedeploy.planner.partition import Candidate, Limits, Metrics, Stage
from edgedeploy.planner.solve import objective_key, promote_baseline, solve_problem
from edgedeploy.planner.synthetic import clusters_for, random_problem
from edgedeploy.runtime.vocab import NCHW


def _with_engine_everywhere(problem):
    """Every layer also offers onnxruntime (as an ONNX model's layers do)."""
    layers = []
    for layer in problem.layers:
        if "onnxruntime" in layer.options:
            layers.append(layer)
            continue
        ms = np.vstack([layer.ms, layer.ms.min(axis=0, keepdims=True) * 1.3])
        layers.append(replace(layer, options=(*layer.options, "onnxruntime"),
                              layout_in=(*layer.layout_in, NCHW),
                              layout_out=(*layer.layout_out, NCHW),
                              workspace_bytes=(*layer.workspace_bytes, 0), ms=ms))
    return replace(problem, layers=layers)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 9),
       objective=st.sampled_from(["throughput", "latency", "energy"]),
       replication=st.booleans(), clusters=st.integers(1, 2))
def test_the_chosen_plan_is_never_predicted_worse_than_a_runnable_baseline(
        seed, n, objective, replication, clusters):
    problem = _with_engine_everywhere(random_problem(
        np.random.default_rng(seed), n, clusters=clusters_for(clusters)))
    limits = Limits(max_stages=3, allow_replication=replication)
    sol = solve_problem(problem, objective, limits)
    runnable = [b for b in sol.baselines if b.runnable]
    assert {b.name for b in runnable} >= {"onnxruntime_threads"}
    assert ("onnxruntime_replicas" in {b.name for b in runnable}) == replication
    for b in runnable:
        assert objective_key(objective, sol.best.metrics) <= \
            objective_key(objective, b.metrics) + 1e-9, b.name
        assert set(b.choices) == {"onnxruntime"} and len(b.stages) == 1


def test_a_baseline_predicted_better_than_the_solver_best_becomes_the_plan():
    problem = _with_engine_everywhere(random_problem(np.random.default_rng(3), 5))
    found = engine_baselines(problem)
    slow = Metrics((1e3,), 1e3, 1.0, 1e3, 1e3, 1.0)
    worse = Candidate((Stage(0, 5, 0, 1),), slow)
    chosen = promote_baseline("throughput", worse, found, Limits())
    assert chosen is not None and chosen.runnable
    assert chosen.metrics.period_ms == min(b.metrics.period_ms for b in found)
    assert promote_baseline("throughput", worse, found,
                            Limits(min_throughput_fps=1e9)) is None  # limits still hold
