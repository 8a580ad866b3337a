"""CostModel.predict_table and pipeline composition (no timing asserts: see tests/bench)."""

from __future__ import annotations

import numpy as np
import pytest

from edgedeploy.boards.catalog import load_target
from edgedeploy.costmodel import CoreConfig, CostModel, predict_pipeline
from edgedeploy.runtime import ir
from edgedeploy.zoo import build


@pytest.fixture(scope="module")
def squeezenet() -> ir.Graph:
    from edgedeploy.importers.onnx import import_onnx

    return import_onnx(build("squeezenet1_1", size=96, seed=0))


def test_predict_table_covers_every_layer_candidate_and_config(squeezenet):
    model = CostModel(load_target("jetson-tx2"))
    table = model.predict_table(squeezenet)
    assert table.ms.shape == (len(squeezenet.layers), len(table.primitives), len(model.configs))
    assert "onnxruntime" in table.primitives and "native" in table.primitives
    for i, layer in enumerate(squeezenet.layers):
        cands = table.candidates(i)
        assert {"onnxruntime", "litert"} <= set(cands)  # the planner filters by board/format
        if layer.op == ir.CONV2D:
            assert "im2col_gemm/nchw" in cands and "native" not in cands
        else:
            assert set(cands) <= {"native", "onnxruntime", "litert"}
        finite = table.ms[i][np.isfinite(table.ms[i])]
        assert (finite > 0).all()
    gpu = model.configs.index(CoreConfig("gpu", 1))
    conv = next(i for i, layer in enumerate(squeezenet.layers) if layer.op == ir.CONV2D)
    assert np.isinf(table.ms[conv, table.primitives.index("im2col_gemm/nchw"), gpu])


def test_predict_table_agrees_with_row_by_row_predict(squeezenet):
    model = CostModel(load_target("rk3399"))
    table = model.predict_table(squeezenet, configs=[CoreConfig("big", 2)])
    layer = next(x for x in squeezenet.layers if x.op == ir.CONV2D)
    i = squeezenet.layers.index(layer)
    for prim in table.candidates(i):
        one = model.predict([layer.descriptor], [prim], [CoreConfig("big", 2)])[0]
        assert table.get(layer.name, prim, CoreConfig("big", 2)) == pytest.approx(one)
    assert set(table.to_dict()[layer.name]["big:2"]) == set(table.candidates(i))


def test_best_primitive_is_the_row_minimum(squeezenet):
    model = CostModel(load_target("rpi4"))
    table = model.predict_table(squeezenet)
    cfg = CoreConfig("a72", 4)
    name, ms = table.best(0, cfg)
    assert ms == pytest.approx(np.min(table.ms[0, :, model.configs.index(cfg)]))
    assert name in table.candidates(0)


def test_pipeline_throughput_is_set_by_the_slowest_replicated_stage():
    out = predict_pipeline([10.0, 30.0, 5.0], replicas=[1, 2, 1], transfers_ms=[0.0, 1.0, 1.0])
    assert out["throughput_fps"] == pytest.approx(1000.0 / 15.5)
    assert out["bottleneck_stage"] == 1
    assert out["latency_ms"] == pytest.approx(47.0)


def test_one_stage_pipeline_is_its_own_time_and_bad_input_is_refused():
    assert predict_pipeline([20.0])["throughput_fps"] == pytest.approx(50.0)
    with pytest.raises(ValueError):
        predict_pipeline([1.0, 2.0], replicas=[1])
    with pytest.raises(ValueError):
        predict_pipeline([1.0], replicas=[0])


def test_model_digest_changes_with_calibration():
    target = load_target("rpi4")
    assert CostModel(target).digest() == CostModel(target).digest()
    from edgedeploy.costmodel.fit import Correction

    cal = CostModel(target, Correction(np.zeros(0), 0.1, np.zeros(0), np.ones(0),
                                       np.zeros(0, int)), source="x")
    assert cal.digest() != CostModel(target).digest()
