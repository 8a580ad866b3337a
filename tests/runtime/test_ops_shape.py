"""Native flatten, reshape, transpose and pad equal onnxruntime's Flatten, Reshape, Transpose and
Pad (constant, reflect, edge, wrap; negative pads; Pad-18 axes) on single-node models."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.runtime.errors import ExecutionError
from edgedeploy.runtime.ir import Descriptor, Layer
from edgedeploy.runtime.ops import run_op


def ort_run(node, x: np.ndarray, initializers: dict[str, np.ndarray] | None = None) -> np.ndarray:
    graph = helper.make_graph(
        [node], "single", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def native(op: str, x: np.ndarray, attrs: dict, weights: dict | None = None) -> np.ndarray:
    layer = Layer(f"{op}_0", op, ["x"], ["y"], Descriptor(op), attrs)
    return run_op(layer, [x], weights or {})[0]


def rand(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, 2, 3, 4, -1, -3])
def test_flatten_equals_onnx_flatten_for_every_axis(axis):
    x = rand(2, 3, 4, 5)
    want = ort_run(helper.make_node("Flatten", ["x"], ["y"], axis=axis), x)
    np.testing.assert_array_equal(native("flatten", x, {"axis": axis}), want)


def test_flatten_defaults_to_axis_1():
    assert native("flatten", rand(2, 3, 4), {}).shape == (2, 12)


@pytest.mark.parametrize("shape", [[0, -1], [-1], [2, 0, 20], [0, 0, 5, 4], [6, -1, 1], [120]])
def test_reshape_copies_zero_dims_and_infers_minus_one_like_onnx(shape):
    x = rand(2, 3, 4, 5)
    want = ort_run(helper.make_node("Reshape", ["x", "s"], ["y"]), x,
                   {"s": np.array(shape, np.int64)})
    np.testing.assert_array_equal(native("reshape", x, {"shape": shape}), want)
    np.testing.assert_array_equal(native("reshape", x, {}, {"shape": np.array(shape)}), want)


def test_reshape_to_an_impossible_shape_is_an_execution_error():
    with pytest.raises(ExecutionError, match="reshape_0"):
        native("reshape", rand(2, 3), {"shape": [4, -1]})


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [3, 2, 1, 0], None])
def test_transpose_equals_onnx_transpose_and_is_contiguous(perm):
    x = rand(2, 3, 4, 5)
    kwargs = {} if perm is None else {"perm": perm}
    want = ort_run(helper.make_node("Transpose", ["x"], ["y"], **kwargs), x)
    got = native("transpose", x, {"perm": perm})
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous


@st.composite
def pad_cases(draw):
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    mode = draw(st.sampled_from(["constant", "reflect", "edge", "wrap"]))
    pads = []
    for end in (False, True):
        for i, d in enumerate(shape):
            lo = -(d - 1) if mode == "constant" else 0  # negative pads (crop) with constant mode
            hi = d - 1 if mode == "reflect" else 4  # reflect cannot pad past the edge
            begin_crop = pads[i] if end else 0
            p = draw(st.integers(lo, hi))
            if p < 0 and begin_crop < 0:
                p = max(p, -(d - 1 + begin_crop))
            pads.append(p)
    return shape, mode, pads, draw(st.floats(-3, 3, width=32))


@given(pad_cases())
def test_pad_equals_onnx_pad_for_every_mode(case):
    shape, mode, pads, value = case
    x = rand(*shape)
    inits = {"pads": np.array(pads, np.int64)}
    names = ["x", "pads"]
    if mode == "constant":
        inits["value"] = np.array(value, np.float32)
        names.append("value")
    want = ort_run(helper.make_node("Pad", names, ["y"], mode=mode), x, inits)
    assume(want.size > 0)
    got = native("pad", x, {"pads": pads, "mode": mode, "value": value})
    np.testing.assert_array_equal(got, want)


def test_pad_with_axes_pads_only_those_axes():
    x = rand(1, 2, 3, 4)
    inits = {"pads": np.array([1, 2, 0, 1], np.int64), "axes": np.array([2, -1], np.int64)}
    want = ort_run(helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], mode="edge"), x,
                   inits)
    got = native("pad", x, {"pads": [1, 2, 0, 1], "axes": [2, -1], "mode": "edge"})
    np.testing.assert_array_equal(got, want)


def test_pad_with_an_unknown_mode_names_it():
    with pytest.raises(ExecutionError, match="circular"):
        native("pad", rand(2, 2), {"pads": [1, 1, 1, 1], "mode": "circular"})
