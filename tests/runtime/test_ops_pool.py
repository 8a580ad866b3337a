"""Native pooling and reductions equal onnxruntime's MaxPool, AveragePool, GlobalAveragePool and
ReduceMean on single-node models: windows, strides, pads, dilation, ceil_mode, count_include_pad."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.runtime.ir import Descriptor, Layer
from edgedeploy.runtime.ops import run_op
from edgedeploy.runtime.ops.pool import pool_output_size


def ort_run(node, feeds: dict[str, np.ndarray], initializers: dict[str, np.ndarray] | None = None,
            opset: int = 19) -> list[np.ndarray]:
    """Run one ONNX node in onnxruntime: the reference every native op is held to."""
    graph = helper.make_graph(
        [node], "single",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output],
        initializer=[numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@st.composite
def pool_cases(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = [draw(st.integers(0, k[i % 2] - 1)) for i in range(4)]  # ONNX: pad < kernel
    hw = (draw(st.integers(1, 11)), draw(st.integers(1, 11)))
    for i in range(2):
        assume(hw[i] + pads[i] + pads[i + 2] >= d[i] * (k[i] - 1) + 1)
    return dict(k=k, s=s, d=d, pads=pads, hw=hw, ceil=draw(st.integers(0, 1)),
                include=draw(st.integers(0, 1)), n=draw(st.integers(1, 2)),
                c=draw(st.integers(1, 3)))


def pool_layer(op: str, case: dict, x: np.ndarray) -> Layer:
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = case["k"], case["s"], case["d"], case["pads"]
    desc = Descriptor(op=op, n=x.shape[0], c_in=x.shape[1], h=x.shape[2], w=x.shape[3],
                      c_out=x.shape[1], kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw,
                      pad_top=pt, pad_left=pl, pad_bottom=pb, pad_right=pr,
                      dilation_h=dh, dilation_w=dw)
    attrs = {"ceil_mode": case["ceil"], "count_include_pad": case["include"]}
    return Layer("pool", op, ["x"], ["y"], desc, attrs)


def onnx_pool(op_type: str, case: dict, x: np.ndarray) -> np.ndarray:
    kwargs = dict(kernel_shape=list(case["k"]), strides=list(case["s"]), pads=case["pads"],
                  ceil_mode=case["ceil"], dilations=list(case["d"]))
    if op_type == "AveragePool":
        kwargs["count_include_pad"] = case["include"]
    return ort_run(helper.make_node(op_type, ["x"], ["y"], **kwargs), {"x": x})[0]


@given(pool_cases())
def test_maxpool_matches_onnxruntime_for_any_window(case):
    x = rand(case["n"], case["c"], *case["hw"])
    got = run_op(pool_layer("maxpool", case, x), [x], {})[0]
    np.testing.assert_array_equal(got, onnx_pool("MaxPool", case, x))


@given(pool_cases())
def test_avgpool_matches_onnxruntime_for_any_window_and_divisor_rule(case):
    x = rand(case["n"], case["c"], *case["hw"])
    got = run_op(pool_layer("avgpool", case, x), [x], {})[0]
    np.testing.assert_allclose(got, onnx_pool("AveragePool", case, x), rtol=1e-5, atol=1e-6)


def test_ceil_mode_drops_a_window_that_would_start_in_the_right_padding():
    # 5 wide, kernel 2, stride 2, pad 1 each side: ceil gives 4 windows, the 4th starts at 6 > 5+1.
    assert pool_output_size(5, 2, 2, 1, 1, ceil_mode=True) == 3
    assert pool_output_size(5, 2, 2, 0, 0, ceil_mode=True) == 3
    assert pool_output_size(5, 2, 2, 0, 0, ceil_mode=False) == 2


def test_pooling_does_not_modify_its_input_and_applies_a_fused_activation():
    x = rand(1, 2, 6, 6)
    before = x.copy()
    layer = pool_layer("maxpool", dict(k=(2, 2), s=(2, 2), d=(1, 1), pads=[0, 0, 0, 0],
                                       ceil=0, include=0), x)
    layer.attrs["activation"] = "relu"
    y = run_op(layer, [x], {})[0]
    np.testing.assert_array_equal(x, before)
    assert y.shape == (1, 2, 3, 3) and (y >= 0).all()


def test_global_avgpool_matches_onnxruntime():
    x = rand(2, 5, 7, 3)
    layer = Layer("gap", "global_avgpool", ["x"], ["y"], Descriptor("global_avgpool"))
    want = ort_run(helper.make_node("GlobalAveragePool", ["x"], ["y"]), {"x": x})[0]
    got = run_op(layer, [x], {})[0]
    assert got.shape == (2, 5, 1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("axes", "keepdims"), [([2, 3], 1), ([1], 0), ([-1, 0], 1), (None, 0)])
def test_mean_matches_onnxruntime_reducemean(axes, keepdims):
    x = rand(2, 3, 4, 5)
    layer = Layer("m", "mean", ["x"], ["y"], Descriptor("mean"),
                  {"axes": axes, "keepdims": keepdims})
    inits = {} if axes is None else {"axes": np.array(axes, dtype=np.int64)}
    node = helper.make_node("ReduceMean", ["x", *inits], ["y"], keepdims=keepdims)
    want = ort_run(node, {"x": x}, inits)[0]
    np.testing.assert_allclose(run_op(layer, [x], {})[0], want, rtol=1e-5, atol=1e-6)
