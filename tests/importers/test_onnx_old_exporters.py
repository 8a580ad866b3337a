"""What the ONNX model zoo's old Caffe2 exports carry (IR 3, opset 9) imports as the IR's own ops.

A small model written the way those files are: weights listed as graph inputs too, built by
``ConstantOfShape`` and ``Unsqueeze``d (axes an attribute before opset 13) into per-channel
``Mul``/``Add``, residuals joined by ``Sum``, ``Dropout`` naming a mask nothing reads, and an
opset-9 ``Softmax`` over axis 1 of an N x C x 1 x 1 tensor.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.importers.onnx import import_onnx
from edgedeploy.importers.onnx_cut import extract_segment
from edgedeploy.runtime import ir
from edgedeploy.testing.ir_oracle import check_against_onnxruntime

C = 8


def _caffe2_style():
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((C, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((C, C, 3, 3)).astype(np.float32) * 0.2
    shape = numpy_helper.from_array(np.array([C], np.int64), "scale_shape")
    nodes = [
        helper.make_node("ConstantOfShape", ["scale_shape"], ["scale"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
        helper.make_node("Unsqueeze", ["scale"], ["scale_u"], axes=[1, 2]),
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c1", "scale_u"], ["m1"]),
        helper.make_node("Add", ["m1", "scale_u"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Sum", ["c2", "r1"], ["s"]),
        helper.make_node("Dropout", ["s"], ["d", "d_mask"], ratio=0.5),
        helper.make_node("GlobalAveragePool", ["d"], ["g"]),
        helper.make_node("Softmax", ["g"], ["prob"], axis=1),
    ]
    weights = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), shape]
    graph = helper.make_graph(
        nodes, "caffe2_style",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6]),
         *(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in weights)],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, C, 1, 1])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    return model


def test_a_caffe2_style_model_imports_without_opaque_layers_and_computes_the_same():
    model = _caffe2_style()
    graph = import_onnx(model)
    ops = [layer.op for layer in graph.layers]
    assert ir.OPAQUE not in ops, [(la.name, la.attrs) for la in graph.layers]
    assert ir.ADD in ops and ir.SOFTMAX in ops
    softmax = next(la for la in graph.layers if la.op == ir.SOFTMAX)
    assert softmax.attrs["axis"] == 1
    check_against_onnxruntime(model, import_onnx(model))


def test_a_segment_cut_from_an_ir3_model_is_valid_and_runs():
    model = _caffe2_style()
    graph = import_onnx(model)
    relu = next(la for la in graph.layers if la.op == ir.ACTIVATION)
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    model.graph.output.append(helper.make_tensor_value_info(relu.outputs[0], TensorProto.FLOAT,
                                                            None))
    whole = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want, want_mid = whole.run(["prob", relu.outputs[0]], {"x": x})
    head = extract_segment(model, ["x"], [relu.outputs[0]])
    tail = extract_segment(model, [relu.outputs[0]], ["prob"])
    run = [ort.InferenceSession(s, providers=["CPUExecutionProvider"]) for s in (head, tail)]
    (mid,) = run[0].run(None, {"x": x})
    (got,) = run[1].run(None, {relu.outputs[0]: mid})
    np.testing.assert_allclose(mid, want_mid, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.ptp(want) > 0
