"""Winograd F(4,3) written in ONNX operators: the rewritten model computes what onnxruntime's
Conv computes, on any shape the rewrite takes, and leaves every other Conv as it was."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgedeploy import zoo
from edgedeploy.importers.onnx_winograd import conv_sites, winograd_rewrite


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _conv(c_in: int, c_out: int, h: int, w: int, bias: bool, batch: int | str = 1,
          **attrs: object) -> onnx.ModelProto:
    rng = np.random.default_rng(c_in * 7 + c_out)
    k = attrs.pop("kernel", 3)
    inits = [numpy_helper.from_array(
        (rng.standard_normal((c_out, c_in // int(attrs.get("group", 1)), k, k)) * 0.2
         ).astype(np.float32), "w")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b"))
    node = helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["y"], name="conv",
                            **{"pads": [k // 2] * 4, **attrs})
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c_in, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@settings(max_examples=25, deadline=None)
@given(c_in=st.integers(1, 9), c_out=st.integers(1, 9), h=st.integers(1, 13),
       w=st.integers(1, 13), bias=st.booleans(), batch=st.integers(1, 3))
def test_a_rewritten_conv_computes_what_onnxruntimes_conv_computes(c_in, c_out, h, w, bias,
                                                                     batch):
    model = _conv(c_in, c_out, h, w, bias, batch="n")
    rewritten, done = winograd_rewrite(model, ["conv"])
    assert done == ["conv"]
    assert "Conv" in {n.op_type for n in rewritten.graph.node}  # the input transform ...
    assert not any(n.op_type == "Conv" and n.input[1] == "w" for n in rewritten.graph.node)
    assert "w" not in {t.name for t in rewritten.graph.initializer}  # ... not the 3x3 weight
    x = np.random.default_rng(h * 13 + w).standard_normal((batch, c_in, h, w)).astype(np.float32)
    ref = _run(model, x)
    np.testing.assert_allclose(_run(rewritten, x), ref, rtol=1e-4,
                               atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_only_3x3_stride_1_ungrouped_convs_are_sites():
    assert conv_sites(_conv(4, 4, 8, 8, True))[0].c_in == 4
    for attrs in ({"strides": [2, 2]}, {"group": 2}, {"dilations": [2, 2]}, {"kernel": 1},
                  {"kernel": 5}):
        model = _conv(4, 4, 8, 8, True, **attrs)
        assert conv_sites(model) == []
        rewritten, done = winograd_rewrite(model, lambda _s: True)
        assert done == [] and rewritten.graph.node[0].op_type == "Conv"


def test_a_whole_model_keeps_its_outputs_with_the_chosen_layers_rewritten():
    model = zoo.build("vgg16", size=32)
    sites = conv_sites(model)
    assert len(sites) == 13  # every conv of VGG-16 is 3x3, stride 1, padded 1
    wide = [s.node for s in sites if s.c_in >= 256]
    rewritten, done = winograd_rewrite(model, lambda s: s.c_in >= 256)
    assert done == wide and len(done) == 8  # conv3_2 .. conv5_3
    onnx.checker.check_model(rewritten)
    assert [o.name for o in rewritten.graph.output] == [o.name for o in model.graph.output]
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = _run(model, x)
    np.testing.assert_allclose(_run(rewritten, x), ref, rtol=1e-3,
                               atol=1e-4 * float(np.abs(ref).max()))


def test_a_model_older_than_opset_11_is_converted_before_it_is_rewritten():
    """Pad's pads and Slice's bounds became inputs at opset 11 and 10: an opset-9 model (as the
    ONNX model zoo's exports are) is converted first, its unnamed nodes named as before."""
    model = _conv(4, 6, 9, 7, True)
    model.graph.node[0].name = ""
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 9))
    model.ir_version = 4
    rewritten, done = winograd_rewrite(model, ["Conv_0"])
    assert done == ["Conv_0"]
    assert [o.version for o in rewritten.opset_import if o.domain in ("", "ai.onnx")] == [11]
    onnx.checker.check_model(rewritten)
    x = np.random.default_rng(3).standard_normal((1, 4, 9, 7)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-4, atol=1e-4)
