"""Segment-level calibration: whole-run factors per engine and configuration, and their use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.costmodel import CoreConfig
from edgedeploy.costmodel.segments import (
    CALIBRATION_MODELS,
    NATIVE,
    ONNXRUNTIME,
    calibration_models,
    factor,
    load_factors,
    save_factors,
    summarise,
)


def test_factor_is_the_geometric_mean_of_measured_over_predicted_per_engine_and_config():
    runs = [{"config": "cpu:1", ONNXRUNTIME: [5.0, 10.0], NATIVE: [30.0, 20.0]},
            {"config": "cpu:1", ONNXRUNTIME: [2.0, 2.0], NATIVE: [10.0, 10.0]},
            {"config": "cpu:2", ONNXRUNTIME: [3.0, 4.0], NATIVE: [0.0, 5.0]}]  # failed: skipped
    out = summarise(runs)
    assert out[ONNXRUNTIME]["cpu:1"] == pytest.approx(np.sqrt(0.5 * 1.0), rel=1e-3)
    assert out[NATIVE]["cpu:1"] == pytest.approx(np.sqrt(1.5 * 1.0), rel=1e-3)
    assert out[ONNXRUNTIME]["cpu:2"] == pytest.approx(0.75, rel=1e-3)
    assert "cpu:2" not in out[NATIVE]


@given(st.floats(0.0, 600.0), st.floats(0.0, 600.0))
def test_a_longer_profile_calibrates_on_more_models_and_every_profile_on_one(a: float, b: float):
    short, long_ = sorted((a, b))
    few, more = calibration_models(short), calibration_models(long_)
    assert 1 <= len(few) <= len(more)
    assert more[:len(few)] == few == CALIBRATION_MODELS[:len(few)]
    assert calibration_models(30.0) == CALIBRATION_MODELS  # the default quick profile: all


def test_an_unmeasured_core_count_takes_the_nearest_measured_one_of_its_cluster():
    table = {ONNXRUNTIME: {"big:1": 0.5, "big:4": 0.8}}
    assert factor(table, ONNXRUNTIME, CoreConfig("big", 3)) == 0.8
    assert factor(table, ONNXRUNTIME, CoreConfig("big", 2)) == 0.5
    assert factor(table, ONNXRUNTIME, CoreConfig("little", 2)) == 1.0  # never measured: unchanged
    assert factor(table, NATIVE, CoreConfig("big", 1)) == 1.0


def test_factors_round_trip_beside_the_profile_and_a_torn_file_means_none(tmp_path: Path):
    profile = tmp_path / "abc.json"
    path = save_factors(profile, {ONNXRUNTIME: {"cpu:1": 0.6}}, [{"config": "cpu:1"}])
    assert path.name == "abc.segments.json"
    assert load_factors(profile) == {ONNXRUNTIME: {"cpu:1": 0.6}}
    path.write_text("{not json")
    assert load_factors(profile) == {}
    path.write_text(json.dumps({"factors": [1, 2]}))
    assert load_factors(profile) == {}


def test_factors_measured_against_another_prior_are_not_used_nor_kept(tmp_path: Path):
    """A factor is a whole-model run over the prior's predictions of its time: once the prior's
    formulas change (``PRIOR_VERSION``), old factors would misprice every plan, so they read as
    never measured, and storing a model's own factors afterwards does not carry them over."""
    from edgedeploy.costmodel.prior import PRIOR_VERSION
    from edgedeploy.costmodel.profiling import _add_own
    from edgedeploy.costmodel.segments import MODELS, OWN_RULE, RULE, stored

    profile = tmp_path / "abc.json"
    path = save_factors(profile, {ONNXRUNTIME: {"cpu:1": 0.6}}, [{"config": "cpu:1"}])
    data = json.loads(path.read_text())
    assert data["prior_version"] == PRIOR_VERSION
    path.write_text(json.dumps({**data, "prior_version": PRIOR_VERSION - 1}))
    assert load_factors(profile) == {} and stored(profile) == ({}, [])

    class Own:
        sha256 = "f" * 64

    _add_own(profile, Own(), {RULE: OWN_RULE, ONNXRUNTIME: {"cpu:1": 0.9}},
             [{"config": "cpu:1", "own": True}])
    assert load_factors(profile) == {MODELS: {"f" * 64: {ONNXRUNTIME: {"cpu:1": 0.9}}}}
    assert stored(profile)[1] == [{"config": "cpu:1", "own": True}]


def test_the_planner_scales_each_engine_by_its_factor():
    from edgedeploy import zoo
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import CostModel
    from edgedeploy.importers.onnx import import_onnx
    from edgedeploy.planner.adapter import build_problem

    graph = import_onnx(zoo.build("squeezenet1_1", size=32))
    target = load_target("rpi4")
    plain = build_problem(graph, target, CostModel(target))
    model = CostModel(target)
    model.segment_factors = {ONNXRUNTIME: {"a72:1": 0.5}, NATIVE: {"a72:1": 2.0}}
    scaled = build_problem(graph, target, model)
    col = [c.cores for c in plain.configs].index(1)
    for a, b in zip(plain.layers, scaled.layers, strict=True):
        for k, name in enumerate(a.options):
            want = 0.5 if name == ONNXRUNTIME else 2.0
            assert b.ms[k, col] == pytest.approx(a.ms[k, col] * want)
    assert model.digest() != CostModel(target).digest()  # lockfiles see the calibration


def test_the_planner_prices_replicas_by_their_measured_speed_up():
    from edgedeploy import zoo
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import CostModel
    from edgedeploy.costmodel.segments import REPLICAS
    from edgedeploy.importers.onnx import import_onnx
    from edgedeploy.planner.adapter import build_problem
    from edgedeploy.planner.partition import Stage, StageCosts, evaluate
    from edgedeploy.planner.problem import MIN_REPLICA_SPEEDUP
    from edgedeploy.planner.select import select

    graph = import_onnx(zoo.build("squeezenet1_1", size=32))
    target = load_target("rpi4")
    model = CostModel(target)
    perfect = build_problem(graph, target, model)
    model.segment_factors = {REPLICAS: {"a72": {"2": 1.5}}}
    measured = build_problem(graph, target, model)
    one = [c.cores for c in perfect.configs].index(1)
    assert perfect.replica_speedup(one, 2) == 2.0 and perfect.replica_speedup(one, 1) == 1.0
    assert measured.replica_speedup(one, 2) == 1.5
    assert measured.replica_speedup(one, 4) == pytest.approx(3.0)  # 2's efficiency, scaled
    # a model so small that the hop to replicas costs more than its call: they are priced as
    # measured, slower than one core's bare call, down to a floor
    model.segment_factors = {REPLICAS: {"a72": {"2": 0.65}}}
    hopping = build_problem(graph, target, model)
    assert hopping.replica_speedup(one, 2) == pytest.approx(0.65)
    assert hopping.replica_speedup(one, 4) == pytest.approx(1.3)
    model.segment_factors = {REPLICAS: {"a72": {"2": 0.01}}}
    assert build_problem(graph, target, model).replica_speedup(one, 2) == MIN_REPLICA_SPEEDUP
    stages = (Stage(0, len(graph.layers), one, 2),)
    fast = evaluate(perfect, StageCosts(perfect, select(perfect)), stages).throughput_fps
    slow = evaluate(measured, StageCosts(measured, select(measured)), stages).throughput_fps
    assert slow == pytest.approx(fast * 0.75, rel=1e-6)


def test_int8_is_priced_by_its_measured_time_over_the_float_models(tmp_path: Path):
    """Runs carry int8 as [int8 ms, float ms]: the factor is their geometric mean ratio, and a
    cost model prices int8 only once a profile measured it."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import CostModel
    from edgedeploy.costmodel.segments import INT8

    runs = [{"config": "cpu:1", ONNXRUNTIME: [5.0, 10.0], NATIVE: [3.0, 3.0], INT8: [2.0, 5.0]},
            {"config": "cpu:1", ONNXRUNTIME: [4.0, 4.0], NATIVE: [3.0, 3.0], INT8: [1.6, 4.0]},
            {"config": "cpu:2", ONNXRUNTIME: [4.0, 4.0], NATIVE: [3.0, 3.0]}]  # no int8 run
    out = summarise(runs)
    assert out[INT8] == {"cpu:1": pytest.approx(0.4, rel=1e-3)}
    save_factors(tmp_path / "p.json", out, runs)
    assert load_factors(tmp_path / "p.json")[INT8] == out[INT8]
    model = CostModel(load_target("local"))
    one = CoreConfig(model.configs[0].cluster, 1)
    assert not model.prices(INT8) and model.precision_factor(INT8, one) == 1.0
    assert model.prices("fp32")
    model.segment_factors = {INT8: {one.key: 0.4}}
    assert model.prices(INT8) and model.precision_factor(INT8, one) == 0.4
    assert model.precision_factor("fp32", one) == 1.0


def test_the_planner_scales_int8_layers_by_the_int8_factor(tmp_path: Path):
    from edgedeploy import zoo
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import CostModel
    from edgedeploy.costmodel.segments import INT8, int8_variant
    from edgedeploy.importers.onnx import import_onnx
    from edgedeploy.planner.adapter import build_problem

    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    int8 = int8_variant(path, import_onnx(path), tmp_path)
    assert int8 is not None
    graph = import_onnx(int8)
    quantized = [layer.descriptor.precision == INT8 for layer in graph.layers]
    assert any(quantized) and not all(quantized)
    target = load_target("rpi4")
    model = CostModel(target)
    plain = build_problem(graph, target, model)
    model.segment_factors = {INT8: {"a72:1": 0.3}}
    scaled = build_problem(graph, target, model)
    col = [c.cores for c in plain.configs].index(1)
    for q, a, b in zip(quantized, plain.layers, scaled.layers, strict=True):
        assert np.allclose(b.ms[:, col], a.ms[:, col] * (0.3 if q else 1.0))
    assert model.digest() != CostModel(target).digest()  # lockfiles see the calibration


def test_a_models_own_entry_of_an_older_rule_is_timed_again_not_priced(tmp_path: Path):
    """What an own-model entry holds changed (``OWN_RULE``): an entry measured by an older
    rule prices no plan and counts as never measured, so the next plan of the model times it
    again, and the board's own factors (another rule's business) stay."""
    from edgedeploy.costmodel.profiling import has_own_factors
    from edgedeploy.costmodel.segments import MODELS, OWN_RULE, RULE, own_factors

    class Own:
        sha256 = "e" * 64

    entry = own_factors([{"config": "cpu:1", ONNXRUNTIME: (2.0, 1.0)}], {})
    assert entry[RULE] == OWN_RULE  # every entry made is stamped
    profile = tmp_path / "p.json"
    older = {k: v for k, v in entry.items() if k != RULE}
    save_factors(profile, {ONNXRUNTIME: {"cpu:1": 0.6}, MODELS: {Own.sha256: older}}, [])
    assert load_factors(profile) == {ONNXRUNTIME: {"cpu:1": 0.6}, MODELS: {}}
    assert not has_own_factors(profile, Own())  # type: ignore[arg-type]
    save_factors(profile, {ONNXRUNTIME: {"cpu:1": 0.6}, MODELS: {Own.sha256: entry}}, [])
    assert has_own_factors(profile, Own())  # type: ignore[arg-type]
    assert RULE not in load_factors(profile)[MODELS][Own.sha256]
