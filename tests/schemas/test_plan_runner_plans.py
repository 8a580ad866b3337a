"""``Plan.runner_plans``: the bundle never carries two plans that run the same pipeline (the
runtime manager flapped between ``plan`` and an identical ``pareto0`` on a board), and the kept
Pareto points keep their lockfile index as their name."""

from __future__ import annotations

from typing import Any

from edgedeploy.schemas.plan import Plan

LAYERS = ["conv0", "conv1", "conv2"]
PRED = {"throughput_fps": 100.0, "latency_ms": 20.0, "energy_mj": None, "power_w": None,
        "period_ms": 10.0}


def _stage(index: int, start: int, stop: int, cpus: list[int], replicas: int = 1) -> dict:
    return {"index": index, "name": f"stage{index}", "start": start, "stop": stop,
            "cluster": "big", "cores": len(cpus), "replicas": replicas, "cpus": cpus,
            "inputs": [], "outputs": [], "predicted_ms": 5.0, "primitive_mix": {}}


def _point(stages: list[tuple[int, int, list[int], list[str]]], fps: float) -> dict:
    return {"stages": [{"start": a, "stop": b, "cluster": "big", "cores": len(cpus),
                        "replicas": 1, "cpus": cpus, "choices": choices}
                       for a, b, cpus, choices in stages],
            "predicted": {**PRED, "throughput_fps": fps}}


def _plan(pareto: list[dict], choice: str = "direct") -> Plan:
    stages = [_stage(0, 0, 2, [0]), _stage(1, 2, 3, [1])]
    layers = [{"name": n, "op": "Conv", "choice": choice, "engine": "native",
               "stage": 0 if i < 2 else 1, "predicted_ms": 1.0} for i, n in enumerate(LAYERS)]
    data: dict[str, Any] = {
        "schema_version": 2, "kind": "edgedeploy-plan", "name": "m", "objective": "throughput",
        "constraints": {}, "pipeline": {}, "primitives": {}, "target": {}, "model": {},
        "inputs": {}, "planner": {}, "predicted": PRED, "stages": stages, "layers": layers,
        "baselines": {}, "pareto": pareto}
    return Plan.model_validate(data)


SAME_AS_PLAN = _point([(0, 2, [0], ["direct", "direct"]), (2, 3, [1], ["direct"])], 100.0)
ONE_STAGE = _point([(0, 3, [0, 1], ["direct"] * 3)], 90.0)
OTHER_CHOICE = _point([(0, 2, [0], ["direct", "winograd"]), (2, 3, [1], ["direct"])], 95.0)


def test_points_identical_to_the_plan_or_an_earlier_point_are_dropped_names_kept() -> None:
    plans = _plan([SAME_AS_PLAN, ONE_STAGE, ONE_STAGE, OTHER_CHOICE]).runner_plans()
    assert [p.name for p in plans] == ["plan", "pareto1", "pareto3"]
    assert plans[1].predicted["throughput_fps"] == 90.0  # pareto1 is the lockfile's pareto[1]
    assert plans[2].choices["conv1"] == "winograd"


def test_a_point_differing_only_in_choices_or_cpus_is_kept() -> None:
    moved = _point([(0, 2, [1], ["direct", "direct"]), (2, 3, [0], ["direct"])], 100.0)
    plans = _plan([OTHER_CHOICE, moved]).runner_plans()
    assert [p.name for p in plans] == ["plan", "pareto0", "pareto1"]


def test_without_duplicates_nothing_changes() -> None:
    plans = _plan([ONE_STAGE]).runner_plans()
    assert [p.name for p in plans] == ["plan", "pareto0"]
    assert [(s.start, s.stop, s.cpus) for s in plans[1].stages] == [(0, 3, (0, 1))]
    assert [(s.name, s.start, s.stop, s.cpus) for s in plans[0].stages] == [
        ("stage0", 0, 2, (0,)), ("stage1", 2, 3, (1,))]
