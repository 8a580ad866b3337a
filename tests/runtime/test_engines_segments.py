"""Cutting ONNX segments for the onnxruntime engine: two chained segments of a branching model
equal the whole model, and segment_io finds the tensors crossing a boundary (a residual skip)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.errors import InputError
from edgedeploy.importers.onnx_cut import extract_segment, segment_io
from edgedeploy.runtime.engines.onnxruntime import OrtSegment
from edgedeploy.runtime.ir import Descriptor, Graph, Layer, TensorInfo


def branching_model() -> onnx.ModelProto:
    """x -> conv_a -> relu1 (r1) -> conv_b -> relu2 (r2); s = r2 + r1 (residual);
    p = conv_c(r1) (a branch); y = concat(s, p)."""
    rng = np.random.default_rng(0)

    def w(name: str, shape) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["a"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "wb"], ["b"], pads=[1, 1, 1, 1], name="conv_b"),
        helper.make_node("Relu", ["b"], ["r2"], name="relu2"),
        helper.make_node("Add", ["r2", "r1"], ["s"], name="add"),
        helper.make_node("Conv", ["r1", "wc"], ["p"], name="conv_c"),
        helper.make_node("Concat", ["s", "p"], ["y"], axis=1, name="concat"),
    ]
    graph = helper.make_graph(
        nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, 8, 8])],
        initializer=[w("wa", (4, 3, 3, 3)), w("wb", (4, 4, 3, 3)), w("wc", (8, 4, 1, 1))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ir_graph() -> Graph:
    """The IR of branching_model (descriptors do not matter for segment_io)."""
    spec = [("conv_a", "conv2d", ["x"], ["a"]), ("relu1", "activation", ["a"], ["r1"]),
            ("conv_b", "conv2d", ["r1"], ["b"]), ("relu2", "activation", ["b"], ["r2"]),
            ("add", "add", ["r2", "r1"], ["s"]), ("conv_c", "conv2d", ["r1"], ["p"]),
            ("concat", "concat", ["s", "p"], ["y"])]
    layers = [Layer(n, op, i, o, Descriptor(op)) for n, op, i, o in spec]
    return Graph("branchy", [TensorInfo("x", (1, 3, 8, 8))], [TensorInfo("y", (1, 12, 8, 8))],
                 layers)


X = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)


def test_segment_io_carries_the_residual_skip_across_the_boundary():
    g = ir_graph()
    assert segment_io(g, range(0, 2)) == (["x"], ["r1"])
    # relu1's output feeds conv_b, add and conv_c: a cut after conv_b must carry r1 along.
    assert segment_io(g, range(0, 3)) == (["x"], ["r1", "b"])
    assert segment_io(g, (3, 7)) == (["b", "r1"], ["y"])
    assert segment_io(g, range(2, 5)) == (["r1"], ["s"])
    assert segment_io(g, range(0, 7)) == (["x"], ["y"])


@pytest.mark.parametrize("bad", [(3, 3), (-1, 2), (0, 8), range(0, 6, 2)])
def test_segment_io_rejects_empty_out_of_range_or_strided_ranges(bad):
    with pytest.raises(InputError):
        segment_io(ir_graph(), bad)


def test_two_chained_segments_equal_the_whole_model():
    model = branching_model()
    whole = OrtSegment(model.SerializeToString(), threads=1).run({"x": X})["y"]
    g = ir_graph()
    (in1, out1), (in2, out2) = segment_io(g, range(0, 3)), segment_io(g, range(3, 7))
    first = OrtSegment(extract_segment(model, in1, out1), threads=1)
    second = OrtSegment(extract_segment(model, in2, out2), threads=1)
    assert sorted(first.output_names) == ["b", "r1"]
    mid = first.run({"x": X})
    y = second.run({k: mid[k] for k in in2})["y"]
    np.testing.assert_allclose(y, whole, rtol=1e-5, atol=1e-5)


def test_an_extracted_segment_keeps_only_the_initializers_it_needs(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(branching_model(), path)
    sub = onnx.load_from_string(extract_segment(path, ["r1"], ["p"]))
    assert [i.name for i in sub.graph.initializer] == ["wc"]
    assert [n.op_type for n in sub.graph.node] == ["Conv"]


def test_a_boundary_missing_an_input_or_naming_an_unknown_tensor_is_an_input_error():
    model = branching_model()
    with pytest.raises(InputError, match=r"\['x'\]"):
        # Without the skip tensor r1 the cut reaches back to the graph input x, not given.
        extract_segment(model, ["b"], ["y"])
    with pytest.raises(InputError, match="nope"):
        extract_segment(model, ["nope"], ["y"])
