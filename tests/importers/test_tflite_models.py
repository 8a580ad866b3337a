"""TFLite import of whole models in the styles real exporters produce, and of bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.errors import InputError, ModelError
from edgedeploy.importers.tflite import import_tflite
from edgedeploy.runtime import ir
from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights

try:
    from test_tflite_reference import check_model
except ImportError:  # tests/importers is a package
    from .test_tflite_reference import check_model


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return he_weights(rng, shape, int(np.prod(shape[1:])))


def _z(n: int) -> np.ndarray:
    return np.full(n, 0.05, np.float32)


def mobilenet_like(path: Path, *, float16: bool = False) -> Path:
    """What the TF converter makes of a small MobileNetV2-style classifier: fused ReLU6, depthwise
    blocks, a residual ADD, a two-branch CONCATENATION, MEAN, FULLY_CONNECTED and SOFTMAX."""
    rng = np.random.default_rng(7)
    b = TFLiteBuilder("mobilenet_like")
    x = b.input("serving_default_input:0", (1, 32, 32, 3))
    x = b.conv2d(x, _w(rng, 8, 3, 3, 3), _z(8), stride=2, activation="relu6", float16=float16,
                 name="model/stem/Relu6")
    y = b.depthwise_conv2d(x, _w(rng, 1, 3, 3, 8), _z(8), activation="relu6", float16=float16)
    y = b.conv2d(y, _w(rng, 8, 1, 1, 8), _z(8), float16=float16, name="model/project")
    x = b.add(x, y, name="model/add")
    left = b.conv2d(x, _w(rng, 6, 1, 1, 8), _z(6), activation="relu6", float16=float16)
    right = b.depthwise_conv2d(x, _w(rng, 1, 3, 3, 16), _z(16), depth_multiplier=2, stride=2,
                               activation="relu6", float16=float16)
    right = b.resize_nearest(right, (16, 16))
    x = b.concat([left, right], axis=3, name="model/concat")
    x = b.mean(x, (1, 2), name="model/gap")
    x = b.fully_connected(x, _w(rng, 10, 22), _z(10), float16=float16, name="model/logits")
    b.output(b.softmax(x, name="Identity"))
    return b.save(path)


def detection_head_like(path: Path) -> Path:
    """A YOLO-style two-scale head: upsample + concat, per-anchor logistic, reshape to boxes."""
    rng = np.random.default_rng(11)
    b = TFLiteBuilder("detector_like")
    x = b.input("images", (1, 16, 16, 3))
    c1 = b.conv2d(x, _w(rng, 8, 3, 3, 3), _z(8), stride=2, activation="relu")  # 8x8
    c2 = b.conv2d(c1, _w(rng, 16, 3, 3, 8), _z(16), stride=2, activation="relu")  # 4x4
    up = b.resize_bilinear(c2, (8, 8), half_pixel_centers=True)
    fused = b.concat([c1, up], axis=-1)
    heads = []
    for feat, cin in ((c2, 16), (fused, 24)):
        raw = b.conv2d(feat, _w(rng, 2 * 7, 1, 1, cin), _z(14))  # 2 anchors x (4 box + 3 cls)
        h, w = b.shape(raw)[1:3]
        boxes = b.reshape(raw, (1, h * w * 2, 7))
        heads.append(b.logistic(boxes))
    b.output(b.concat(heads, axis=1, name="detections"))
    return b.save(path)


def test_tf_converted_mobilenet_style_model_imports_with_correct_shapes(tmp_path: Path) -> None:
    graph = check_model(mobilenet_like(tmp_path / "m.tflite"))
    assert graph.inputs[0].shape == (1, 3, 32, 32)
    assert graph.outputs == [ir.TensorInfo("Identity", (1, 10))]
    convs = [x.descriptor for x in graph.layers if x.op == ir.CONV2D]
    assert [d.groups for d in convs] == [1, 8, 1, 1, 8]
    assert [d.activation for d in convs] == ["relu6", "relu6", "none", "relu6", "relu6"]
    depthwise = [d for d in convs if d.is_depthwise]
    assert [(d.c_in, d.c_out) for d in depthwise] == [(8, 8), (8, 16)]
    assert {x.op for x in graph.layers} >= {ir.ADD, ir.CONCAT, ir.MEAN, ir.DENSE, ir.SOFTMAX}
    assert graph.source["format"] == "tflite" and graph.source["input_layout"] == "NHWC"
    assert graph.source["inputs"] == [{"name": "serving_default_input:0",
                                       "shape": [1, 32, 32, 3], "layout": "NHWC",
                                       "to_ir_perm": [0, 3, 1, 2]}]
    assert len(graph.source["sha256"]) == 64
    totals = graph.totals()
    assert totals["macs"] == sum(x.descriptor.macs for x in graph.layers) > 0


def test_detection_head_style_model_imports_with_correct_shapes(tmp_path: Path) -> None:
    graph = check_model(detection_head_like(tmp_path / "d.tflite"))
    assert graph.outputs[0].shape == (1, 2 * 16 + 2 * 64, 7)
    ops = [x.op for x in graph.layers]
    assert ops.count(ir.RESIZE) == 1 and ops.count(ir.CONCAT) == 2
    assert ops.count(ir.TRANSPOSE) == 2  # one before each reshape to boxes


def test_float16_weights_behind_dequantize_import_as_float32(tmp_path: Path) -> None:
    graph = check_model(mobilenet_like(tmp_path / "f16.tflite", float16=True))
    ref = import_tflite(mobilenet_like(tmp_path / "f32.tflite"))
    assert "DEQUANTIZE" not in str([x.attrs for x in graph.layers])
    assert [x.name for x in graph.layers] != [x.name for x in ref.layers]  # op indices shift
    for got, want in zip(graph.layers, ref.layers, strict=True):
        assert got.op == want.op
        for role, key in got.weights.items():
            w16, w32 = graph.weights[key], ref.weights[want.weights[role]]
            assert w16.dtype == np.float32
            np.testing.assert_array_equal(w16, w32.astype(np.float16).astype(np.float32)
                                          if role == "weight" else w32)


def int8_model(path: Path) -> Path:
    rng = np.random.default_rng(3)
    b = TFLiteBuilder("int8")
    x = b.input("input", (1, 8, 8, 3))
    q = b.quantize(x, 0.05, 0, name="input_int8")
    c = b.conv2d_int8(q, _w(rng, 4, 3, 3, 3), _z(4), out_scale=0.1, activation="relu",
                      name="conv_int8")
    b.output(b.dequantize(c, name="output"))
    return b.save(path)


def test_int8_model_imports_as_litert_operators_with_int8_tensors(tmp_path: Path) -> None:
    graph = import_tflite(int8_model(tmp_path / "q.tflite"))
    assert [x.op for x in graph.layers] == [ir.OPAQUE] * 3
    assert [x.attrs["tflite_op"] for x in graph.layers] == ["QUANTIZE", "CONV_2D", "DEQUANTIZE"]
    assert {x.descriptor.precision for x in graph.layers} == {"int8"}
    assert graph.tensors["conv_int8"].dtype == "int8"
    assert graph.source["quantization"]["conv_int8"]["scale"] == pytest.approx([0.1])


def test_the_int8_test_model_is_itself_valid_for_litert(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(int8_model(tmp_path / "q.tflite")))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.ones((1, 8, 8, 3), np.float32))
    it.invoke()
    assert it.get_tensor(it.get_output_details()[0]["index"]).shape == (1, 8, 8, 4)


def test_input_shape_override_is_in_the_models_own_nhwc_and_propagates(tmp_path: Path) -> None:
    path = mobilenet_like(tmp_path / "m.tflite")
    graph = import_tflite(path, input_shape=(4, 64, 48, 3))  # as the file and LiteRT have it
    assert graph.source["inputs"][0]["shape"] == [4, 64, 48, 3]
    assert graph.tensors["model/stem/Relu6"].shape == (4, 8, 32, 24)
    assert graph.outputs[0].shape == (4, 10)
    same = import_tflite(path, input_shape={"serving_default_input:0": (1, 32, 32, 3)})
    assert same.to_dict()["layers"] == import_tflite(path).to_dict()["layers"]
    with pytest.raises(InputError, match=r"does not fit .* of shape \[1, 32, 32, 3\]"):
        import_tflite(path, input_shape=(1, 32, 32))
    with pytest.raises(InputError, match="unknown inputs"):
        import_tflite(path, input_shape={"nope": (1, 3, 8, 8)})


def test_import_is_deterministic_and_names_are_unique(tmp_path: Path) -> None:
    b = TFLiteBuilder()
    x = b.input("x", (1, 4, 4, 2))
    y, z = b.relu(x), b.relu6(x)
    b.tensors[y].name = b.tensors[z].name = ""  # unnamed tensors, as some exporters leave them
    b.output(b.add(y, z, name="x_1"))
    path = b.save(tmp_path / "names.tflite")
    first, second = import_tflite(path), import_tflite(path)
    assert first.to_dict() == second.to_dict()
    names = [t for layer in first.layers for t in layer.outputs]
    assert len(names) == len(set(names))
    assert names[:2] == ["tensor_1", "tensor_2"]


# --- bad files ------------------------------------------------------------------------------------
def test_missing_empty_and_foreign_files_get_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        import_tflite(tmp_path / "absent.tflite")
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ModelError, match="not a TFLite model"):
        import_tflite(tmp_path / "empty.tflite")
    (tmp_path / "onnx.tflite").write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))
    with pytest.raises(ModelError, match="not a TFLite model"):
        import_tflite(tmp_path / "onnx.tflite")
    with pytest.raises(ModelError, match="cannot read"):
        import_tflite(tmp_path)


_GOOD: list[bytes] = []


def good_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The mobilenet-like model's bytes, built once (not a fixture: hypothesis would print it)."""
    if not _GOOD:
        _GOOD.append(mobilenet_like(tmp_path_factory.mktemp("m") / "m.tflite").read_bytes())
    return _GOOD[0]


@given(cut=st.floats(min_value=0.0, max_value=0.999))
def test_truncated_file_gets_a_model_error(tmp_path_factory: pytest.TempPathFactory,
                                           cut: float) -> None:
    good = good_bytes(tmp_path_factory)
    path = tmp_path_factory.mktemp("cut") / "cut.tflite"
    path.write_bytes(good[:int(len(good) * cut)])
    with pytest.raises(ModelError):
        import_tflite(path)


@given(st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(1, 255)), min_size=1, max_size=4))
def test_corrupted_bytes_give_a_graph_or_a_model_error_never_a_crash(
        tmp_path_factory: pytest.TempPathFactory, flips: list[tuple[float, int]]) -> None:
    data = bytearray(good_bytes(tmp_path_factory))
    for where, mask in flips:
        data[8 + int((len(data) - 8) * where)] ^= mask  # keep the identifier intact
    path = tmp_path_factory.mktemp("flip") / "flip.tflite"
    path.write_bytes(bytes(data))
    try:
        graph = import_tflite(path)
    except ModelError:
        return
    graph.validate()
