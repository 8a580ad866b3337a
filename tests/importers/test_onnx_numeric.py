"""The IR means what the ONNX model computes: shapes and per-layer values against onnxruntime.

Each IR layer is rebuilt as a tiny ONNX model from nothing but the IR (op, attrs, weights) and run
on the values onnxruntime computed for its inputs in the original model; its output must equal
what the original model computes for the same tensor name. This checks folding (BN), fusion
(activations, bias, SiLU) and every resolved attribute at once.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.importers.onnx import import_onnx
from edgedeploy.testing import onnx_models as zoo
from edgedeploy.testing.ir_oracle import check_against_onnxruntime

BUILDERS = [zoo.pytorch_style_resnet_block, zoo.tf2onnx_style_mobilenet,
            zoo.paddle_style_detector, zoo.unknown_op_model]


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_every_layer_recomputes_the_original_models_tensor(build):
    model = build()
    check_against_onnxruntime(model, import_onnx(model))


def test_folded_batchnorm_weights_equal_conv_then_bn_in_numpy():
    model = zoo.pytorch_style_resnet_block()
    graph = import_onnx(model)
    conv = graph.layer("/layer1/conv2/Conv")  # conv with its own bias, then BN, no activation
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w, b = inits["layer1.conv2.weight"], inits["layer1.conv2.bias"]
    g, beta = inits["layer1.bn2.weight"], inits["layer1.bn2.bias"]
    mean, var = inits["layer1.bn2.running_mean"], inits["layer1.bn2.running_var"]
    x = np.random.default_rng(1).standard_normal((1, 8, 6, 6)).astype(np.float32)
    ref = _conv_nchw(x, w, b)
    ref = (ref - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * g[:, None, None] \
        + beta[:, None, None]
    got = _conv_nchw(x, graph.weights[conv.weights["weight"]], graph.weights[conv.weights["bias"]])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert conv.outputs == ["/layer1/bn2/BatchNormalization_output_0"]


def _conv_nchw(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3, stride 1, pad 1: a plain sliding-window sum (the oracle is obviously right)."""
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    c_out, _, kh, kw = w.shape
    h, wd = x.shape[2], x.shape[3]
    out = np.zeros((c_out, h, wd))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], xp[:, i:i + h, j:j + wd])
    return (out + b[:, None, None])[None]


@given(
    c_in=st.sampled_from([2, 4, 6]), groups=st.sampled_from([1, 2]), k=st.integers(1, 3),
    stride=st.integers(1, 2), dilation=st.integers(1, 2), pads=st.lists(st.integers(0, 2),
                                                                        min_size=4, max_size=4),
    auto_pad=st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
    bias=st.booleans(), bn=st.booleans(),
    act=st.sampled_from(["none", "Relu", "Sigmoid", "LeakyRelu", "HardSigmoid", "Tanh"]),
)
def test_random_conv_bn_activation_chains_import_exactly(c_in, groups, k, stride, dilation, pads,
                                                         auto_pad, bias, bn, act):
    rng = np.random.default_rng(0)
    dilation = 1 if auto_pad.startswith("SAME") else dilation  # onnxruntime refuses the mix
    c_out = 2 * groups
    inits = {"w": rng.standard_normal((c_out, c_in // groups, k, k)).astype(np.float32)}
    ins = ["x", "w"] + (["b"] if bias else [])
    if bias:
        inits["b"] = rng.standard_normal(c_out).astype(np.float32)
    conv_attrs = {"group": groups, "strides": [stride] * 2, "dilations": [dilation] * 2}
    conv_attrs.update({"pads": pads} if auto_pad == "NOTSET" else {"auto_pad": auto_pad,
                                                                    "kernel_shape": [k, k]})
    nodes = [helper.make_node("Conv", ins, ["c"], "conv", **conv_attrs)]
    last = "c"
    if bn:
        for name in ("s", "bb", "m"):
            inits[name] = rng.standard_normal(c_out).astype(np.float32)
        inits["v"] = rng.uniform(0.5, 2, c_out).astype(np.float32)
        nodes.append(helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"],
                                      "bn"))
        last = "n"
    if act != "none":
        nodes.append(helper.make_node(act, [last], ["a"], "act"))
        last = "a"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, c_in, 9, 8])], [helper.make_tensor_value_info(
            last, TensorProto.FLOAT, None)], [numpy_helper.from_array(v, n)
                                              for n, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    graph = import_onnx(m)
    assert [layer.op for layer in graph.layers] == ["conv2d"]
    assert graph.layers[0].outputs == [last]
    check_against_onnxruntime(m, graph)
