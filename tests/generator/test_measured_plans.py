"""A bundle for refinement on a board ships the segments of the lockfile's baselines (so the
board can measure what a user would run instead) without serving them: the runner's plans, and
so the runtime manager's choices, stay the lockfile's plan and Pareto set."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from tests.generator.conftest import small_build

from edgedeploy import api
from edgedeploy.generator import PlanConfig, StageConfig, build_bundle
from edgedeploy.runtime.stages import boundary_tensors


def _config(root: Path) -> dict:
    return json.loads((root / "app" / "config.json").read_text())


def test_measured_plans_ship_their_segments_and_are_not_served(tmp_path: Path):
    build, graph, model = small_build(tmp_path)
    n = len(graph.layers)
    whole = PlanConfig("onnxruntime_replicas", (StageConfig("stage0", 0, n, cpus=(0,),
                                                            replicas=2),),
                       {layer.name: "onnxruntime" for layer in graph.layers}, {})
    plain = _config(build_bundle(build, graph, model, tmp_path / "plain").root)
    shipped = _config(build_bundle(replace(build, measured_plans=(whole,)), graph, model,
                                   tmp_path / "shipped").root)
    assert sorted(shipped["plans"]) == sorted(plain["plans"]) == ["plan0", "plan1"]
    ends = (boundary_tensors(graph, 0), boundary_tensors(graph, n))

    def keys(cfg: dict) -> set:
        return {(s["format"], tuple(s["inputs"]), tuple(s["outputs"])) for s in cfg["segments"]}

    assert ("onnx", *map(tuple, ends)) not in keys(plain)
    assert keys(shipped) == keys(plain) | {("onnx", *map(tuple, ends))}


def test_a_lockfiles_baseline_plans_are_its_runnable_baselines(tmp_path: Path):
    from edgedeploy import zoo
    from edgedeploy.schemas.plan import load_plan

    zoo.export("squeezenet1_1", tmp_path / "m.onnx", size=32)
    (tmp_path / "m.yaml").write_text("name: m\nmodel: m.onnx\n")
    plan = load_plan(api.plan(tmp_path / "m.yaml", "local", measure=False)[0].plan_file)
    runnable = sorted(n for n, b in plan.baselines.items() if b.stages)
    configs = plan.baseline_plans()
    assert [c.name for c in configs] == runnable == ["onnxruntime_replicas",
                                                     "onnxruntime_threads"]
    for c in configs:
        base = plan.baselines[c.name]
        assert [(s.start, s.stop, s.replicas, tuple(s.cpus)) for s in c.stages] == [
            (s.start, s.stop, s.replicas, tuple(s.cpus)) for s in base.stages]
        assert set(c.choices.values()) == {"onnxruntime"}
        assert len(c.choices) == len(plan.layers)
    with pytest.raises(StopIteration):  # never among the served plans
        next(p for p in plan.runner_plans() if p.name in runnable)
