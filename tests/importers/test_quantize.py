"""The quantizer on models exported at an old opset, as PaddlePaddle's exporter writes them.

onnxruntime's quantizer writes a per-channel ``axis`` on DequantizeLinear whatever the model's
opset, and only opset 13 has that attribute: unconverted, an opset-11 model came out invalid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.errors import ModelError
from edgedeploy.importers import quantize as quantizer


def _conv_net(path: Path, opset: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, 8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["output"], name="relu")], "net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)


def _frames() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"input": rng.random((1, 3, 8, 8), dtype=np.float32)} for _ in range(4)]


def test_an_opset_11_model_is_converted_and_quantizes_to_a_valid_model(tmp_path: Path) -> None:
    _conv_net(tmp_path / "net.onnx", 11)
    quantizer.quantize(tmp_path / "net.onnx", tmp_path / "int8.onnx", _frames())
    model = onnx.load(str(tmp_path / "int8.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {13}
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    sess = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    frame = _frames()[0]
    want = ort.InferenceSession(str(tmp_path / "net.onnx"),
                                providers=["CPUExecutionProvider"]).run(None, frame)[0]
    got = sess.run(None, frame)[0]
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 0.05


def test_an_invalid_quantized_model_is_a_model_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the conversion the quantizer writes an invalid model: a clear error (exit 2)
    naming the model, not an internal error when onnxruntime later loads it."""
    monkeypatch.setattr(quantizer, "PER_CHANNEL_OPSET", 1)
    _conv_net(tmp_path / "net.onnx", 11)
    with pytest.raises(ModelError, match=r"could not quantize net\.onnx") as info:
        quantizer.quantize(tmp_path / "net.onnx", tmp_path / "int8.onnx", _frames())
    assert "axis" in str(info.value)
    assert not (tmp_path / "int8.onnx").exists()


def test_prepare_names_every_node_uniquely(tmp_path: Path) -> None:
    """The planner keeps nodes fp32 by name: an exporter's unnamed nodes get names."""
    _conv_net(tmp_path / "net.onnx", 13)
    model = onnx.load(str(tmp_path / "net.onnx"))
    for node in model.graph.node:
        node.name = ""
    model.graph.node[1].name = "Relu_0"  # a name the default scheme would also pick
    onnx.save(model, tmp_path / "unnamed.onnx")
    prepared = onnx.load(str(quantizer.prepare(tmp_path / "unnamed.onnx",
                                               str(tmp_path / "pre.onnx"))))
    names = [n.name for n in prepared.graph.node]
    assert all(names) and len(set(names)) == len(names)


def test_a_model_the_quantizer_leaves_all_float_is_a_model_error(tmp_path: Path) -> None:
    """Convs inside an If body are not quantized: the 'int8' model would be the fp32 one, and a
    plan of it would claim int8 (a real VAD model is built so)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    branch = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["y"], pads=[1, 1, 1, 1])], "branch", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])])
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["input"], ["m"], keepdims=0),
         helper.make_node("Greater", ["m", "zero"], ["cond"]),
         helper.make_node("If", ["cond"], ["output"], then_branch=branch, else_branch=branch)],
        "gated", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 8, 8])],
        [w, numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "gated.onnx")
    with pytest.raises(ModelError, match="quantized no node of gated"):
        quantizer.quantize(tmp_path / "gated.onnx", tmp_path / "int8.onnx", _frames())
    assert not (tmp_path / "int8.onnx").exists()
