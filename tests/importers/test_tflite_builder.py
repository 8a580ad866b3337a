"""The shipped .tflite builder writes files LiteRT's own reader and interpreter accept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights


def _read(data: bytes) -> schema.ModelT:
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))


def test_files_carry_the_identifier_an_empty_buffer_zero_and_both_opcode_fields() -> None:
    b = TFLiteBuilder()
    x = b.input("x", (1, 4))
    b.output(b.unary(b.relu(x), "GELU"))  # GELU = 150, past the deprecated int8 field
    data = b.to_bytes()
    assert data[4:8] == b"TFL3"
    model = _read(data)
    assert model.buffers[0].data is None or len(model.buffers[0].data) == 0
    codes = [(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    assert codes == [(schema.BuiltinOperator.RELU, schema.BuiltinOperator.RELU),
                     (schema.BuiltinOperator.GELU, 127)]


def test_a_built_model_runs_in_litert_with_the_shapes_the_builder_recorded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    b = TFLiteBuilder()
    x = b.input("x", (1, 10, 10, 3))
    y = b.conv2d(x, he_weights(rng, (4, 3, 3, 3), 27), None, stride=2, float16=True)
    y = b.depthwise_conv2d(y, he_weights(rng, (1, 3, 3, 8), 9), None, depth_multiplier=2)
    y = b.avg_pool2d(b.pad(y, [[0, 0], [1, 0], [0, 1], [0, 0]]), 2, 2, padding="SAME")
    b.output(b.softmax(b.fully_connected(b.reshape(y, (1, -1)), he_weights(rng, (5, 72), 72))))
    it = Interpreter(model_path=str(b.save(tmp_path / "m.tflite")))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.ones((1, 10, 10, 3), np.float32))
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])
    assert out.shape == (1, 5) and np.isclose(out.sum(), 1.0)
    for d in it.get_tensor_details():
        assert tuple(d["shape"]) == b.shape(d["index"]), d["name"]


def test_float16_constants_sit_behind_a_dequantize_op() -> None:
    b = TFLiteBuilder()
    x = b.input("x", (1, 2))
    b.output(b.add(x, b.const("c", np.float32([[0.1, 0.2]]), float16=True)))
    model = _read(b.to_bytes())
    kinds = [model.operatorCodes[op.opcodeIndex].builtinCode for op in model.subgraphs[0].operators]
    assert kinds == [schema.BuiltinOperator.DEQUANTIZE, schema.BuiltinOperator.ADD]
    types = {t.name.decode(): t.type for t in model.subgraphs[0].tensors}
    assert types["c_fp16"] == schema.TensorType.FLOAT16 and types["c"] == schema.TensorType.FLOAT32
