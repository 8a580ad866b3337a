"""load_model dispatch, parse_shape, and the inspect report's numbers on a hand-counted model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.errors import InputError, ModelError
from edgedeploy.importers import detect_format, load_model, parse_shape
from edgedeploy.importers.report import describe
from edgedeploy.testing import onnx_models as zoo


def tiny_vgg() -> onnx.ModelProto:
    """conv3x3(3->8)+relu, maxpool2, conv3x3(8->16)+relu, maxpool2, flatten, fc(1024->10)."""
    rng = np.random.default_rng(0)
    inits = {"w1": (3 * 9, (8, 3, 3, 3)), "b1": (1, (8,)), "w2": (8 * 9, (16, 8, 3, 3)),
             "b2": (1, (16,)), "fw": (1024, (10, 1024)), "fb": (1, (10,))}
    tensors = [numpy_helper.from_array(
        (rng.standard_normal(shape) * np.sqrt(2 / fan)).astype(np.float32), name)
        for name, (fan, shape) in inits.items()]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             n("Relu", ["c1"], ["r1"], "relu1"),
             n("MaxPool", ["r1"], ["p1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
             n("Relu", ["c2"], ["r2"], "relu2"),
             n("MaxPool", ["r2"], ["p2"], "pool2", kernel_shape=[2, 2], strides=[2, 2]),
             n("Flatten", ["p2"], ["f"], "flatten"),
             n("Gemm", ["f", "fw", "fb"], ["y"], "fc", transB=1)]
    g = helper.make_graph(nodes, "tiny_vgg",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], tensors)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_tiny_vgg_totals_match_hand_counted_macs_params_and_flops(tmp_path):
    path = tmp_path / "vgg.onnx"
    onnx.save(tiny_vgg(), path)
    report = describe(load_model(path))
    macs = 8 * 32 * 32 * 3 * 9 + 16 * 16 * 16 * 8 * 9 + 1024 * 10  # conv1 + conv2 + fc
    params = (8 * 27 + 8) + (16 * 72 + 16) + (10240 + 10)
    other_flops = 8 * 16 * 16 + 16 * 8 * 8 + 1024  # one per output element: pool1, pool2, flatten
    t = report["totals"]
    assert (t["layers"], t["macs"], t["params"]) == (6, macs, params)
    assert t["flops"] == 2 * macs + other_flops and t["bytes_weights"] == 4 * params
    assert t["op_counts"] == {"conv2d": 2, "maxpool": 2, "dense": 1, "flatten": 1}
    assert [x["macs"] for x in report["layers"] if x["op"] == "conv2d"] == [221184, 294912]


def test_report_layers_have_the_documented_keys():
    from edgedeploy.importers.onnx import import_onnx

    report = describe(import_onnx(zoo.tf2onnx_style_mobilenet()))
    assert set(report) == {"model", "inputs", "outputs", "layers", "totals"}
    keys = {"name", "op", "descriptor", "macs", "flops", "params", "bytes_in", "bytes_out",
            "bytes_weights", "activation", "inputs", "outputs"}
    for row in report["layers"]:
        assert keys <= set(row)
    dw = next(x for x in report["layers"] if x["name"] == "model/dw1/depthwise")
    assert dw["op"] == "conv2d" and dw["descriptor"]["groups"] == 8 and dw["activation"] == "relu6"
    assert report["model"]["producer"] == "tf2onnx"


def test_format_comes_from_explicit_fmt_then_suffix_then_magic(tmp_path):
    onnx_bytes = zoo.dynamic_model().SerializeToString()
    (tmp_path / "m.bin").write_bytes(onnx_bytes)
    (tmp_path / "t.bin").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    (tmp_path / "x.bin").write_bytes(b"\xff\xfe" * 8)
    assert detect_format(tmp_path / "m.bin") == "onnx"
    assert detect_format(tmp_path / "t.bin") == "tflite"
    assert detect_format(tmp_path / "t.bin", "ONNX") == "onnx"
    assert detect_format(tmp_path / "whatever.tflite") == "tflite"
    with pytest.raises(ModelError, match="cannot tell the format"):
        detect_format(tmp_path / "x.bin")
    with pytest.raises(InputError, match="unknown model format"):
        detect_format(tmp_path / "m.bin", "caffe")


def test_load_model_imports_an_onnx_file_without_suffix(tmp_path):
    path = tmp_path / "model"
    onnx.save(zoo.dynamic_model(), path)
    graph = load_model(path, input_shape=(1, 3, 8, 8))
    assert graph.source["format"] == "onnx" and graph.outputs[0].shape == (1, 2)


@pytest.mark.parametrize("content", [b"", b"not a model at all"])
def test_load_model_rejects_empty_and_corrupt_files_with_model_error(tmp_path, content):
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError) as err:
        load_model(path)
    assert err.value.hint and err.value.exit_code == 2


def test_load_model_rejects_missing_paths_and_directories(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="not a model file"):
        load_model(tmp_path)


@given(st.lists(st.integers(1, 4096), min_size=1, max_size=6))
def test_parse_shape_round_trips_comma_separated_sizes(dims):
    assert parse_shape(",".join(map(str, dims))) == tuple(dims)
    assert parse_shape(" " + "x".join(map(str, dims)) + " ") == tuple(dims)


@pytest.mark.parametrize("text", ["", "1,3,a,4", "1,-3,4", "0,3", ",,", "1.5,2"])
def test_parse_shape_rejects_bad_text_with_an_input_error(text):
    with pytest.raises(InputError, match="bad shape"):
        parse_shape(text)
