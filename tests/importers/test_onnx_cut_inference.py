"""Shape inference for the segment cutter runs on the model without its weights' values
(``importers.onnx_cut._weightless``), and types the cut exactly as inference of the whole model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from edgedeploy.importers.onnx_cut import (
    WEIGHTLESS_MIN_ELEMENTS,
    SegmentCutter,
    _weightless,
    _with_value_infos,
)


def _model() -> onnx.ModelProto:
    """A Conv with a large weight, then a Reshape (int64 shape) and a Resize (float scales):
    shape inference reads the last two's values."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 8, 3, 3)).astype(np.float32)  # 4,608 elements
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([1, 64, 8, 8], np.int64), "shape"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Resize", ["r", "", "scales"], ["y"], mode="nearest")]
    return _x_to_y(nodes, inits, [1, 8, 8, 8])


def _x_to_y(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
            x_shape: list[int]) -> onnx.ModelProto:
    """``nodes`` as a model from input ``x`` to output ``y``, declared without a shape."""
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _types(m: onnx.ModelProto) -> list[tuple[str, str]]:
    return sorted((v.name, str(v.type)) for v in [*m.graph.value_info, *m.graph.output])


def test_the_weightless_model_keeps_every_type_and_shape_and_the_values_inference_reads():
    model = _model()
    assert WEIGHTLESS_MIN_ELEMENTS <= 64 * 8 * 9
    light = {t.name: t for t in _weightless(model).graph.initializer}
    assert (light["w"].dims, light["w"].data_type) == ([64, 8, 3, 3], TensorProto.FLOAT)
    assert not light["w"].raw_data and not light["w"].float_data  # its values left out
    for name in ("shape", "scales"):  # read by inference: whole
        assert light[name] == next(t for t in model.graph.initializer if t.name == name)
    assert len(model.graph.initializer[0].raw_data) == 64 * 8 * 9 * 4  # the model untouched


def test_the_cutter_types_tensors_as_inference_of_the_whole_model_does():
    model = _model()
    typed = _with_value_infos(model, ["x", "c", "r", "y"])
    assert _types(typed) == _types(shape_inference.infer_shapes(model))
    y = next(v for v in typed.graph.output if v.name == "y")
    assert [d.dim_value for d in y.type.tensor_type.shape.dim] == [1, 64, 16, 16]
    # the weights are the model's, values and all
    assert typed.graph.initializer[0] == model.graph.initializer[0]
    cut = onnx.load_from_string(SegmentCutter(model)(["c"], ["y"]))
    assert [v.name for v in cut.graph.input] == ["c"]


def _shapeless_output_model() -> onnx.ModelProto:
    """A Conv flattened by a Reshape whose target is gathered at run time (a Range of indices
    into the Conv's Shape, as exporters write a dynamic flatten): inference cannot tell the
    output's rank, so the graph output stays without a shape."""
    w = np.random.default_rng(1).standard_normal((4, 2, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             *(numpy_helper.from_array(np.array(v, np.int64), n)
               for n, v in [("zero", 0), ("two", 2), ("one", 1), ("rest", [-1])])]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Range", ["zero", "two", "one"], ["idx"]),
             helper.make_node("Gather", ["s", "idx"], ["head"]),
             helper.make_node("Concat", ["head", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["c", "target"], ["y"])]
    return _x_to_y(nodes, inits, [1, 2, 5, 5])


def test_a_graph_output_inference_leaves_shapeless_takes_the_shape_the_importer_knows():
    import onnxruntime as ort

    model = _shapeless_output_model()
    inferred = shape_inference.infer_shapes(model)
    assert not inferred.graph.output[0].type.tensor_type.HasField("shape")  # the premise
    cutter = SegmentCutter(model, shapes={"c": (1, 4, 5, 5), "y": (1, 4, 25)})
    cut = onnx.load_from_string(cutter(["x"], ["y"]))  # checker-valid: outputs need a shape
    (y,) = cut.graph.output
    assert [d.dim_value for d in y.type.tensor_type.shape.dim] == [1, 4, 25]
    x = np.ones((1, 2, 5, 5), np.float32)
    got = ort.InferenceSession(cut.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)
