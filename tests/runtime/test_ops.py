"""The native op registry and the dense, elementwise, activation, softmax, concat, split and slice
ops: each equals onnxruntime's own kernel on the equivalent single-node ONNX model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.runtime.errors import ExecutionError
from edgedeploy.runtime.ir import Descriptor, Layer
from edgedeploy.runtime.ops import OPS, run_op

NATIVE_OPS = {"dense", "maxpool", "avgpool", "global_avgpool", "mean", "add", "mul",
              "activation", "concat", "split", "slice", "flatten", "reshape", "transpose",
              "pad", "resize", "softmax"}


ort.set_default_logger_severity(3)  # empty slices make onnxruntime warn about shape inference


def ort_run(nodes, feeds: dict[str, np.ndarray], outputs: list[str],
            initializers: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """Run ONNX node(s) in onnxruntime: the reference every native op is held to."""
    graph = helper.make_graph(
        list(nodes), "single",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def layer(op: str, attrs: dict | None = None, n_in: int = 1, n_out: int = 1) -> Layer:
    return Layer(f"{op}_0", op, [f"x{i}" for i in range(n_in)], [f"y{i}" for i in range(n_out)],
                 Descriptor(op), dict(attrs or {}))


def close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.abs(want).max()))


# --- registry --------------------------------------------------------------------------------
def test_registry_holds_exactly_the_non_convolution_ir_ops():
    assert set(OPS) == NATIVE_OPS


@pytest.mark.parametrize("op", ["conv2d", "opaque", "lstm"])
def test_an_op_without_native_implementation_raises_naming_op_layer_and_supported_ops(op):
    with pytest.raises(ExecutionError) as err:
        run_op(Layer("layer7", op, ["x"], ["y"], Descriptor(op)), [rand(1, 2)], {})
    text = str(err.value)
    assert "layer7" in text and repr(op) in text and "maxpool" in text and "softmax" in text


def test_a_shape_error_inside_an_op_becomes_an_execution_error_naming_the_layer():
    bad = layer("dense")
    with pytest.raises(ExecutionError, match="dense_0"):
        run_op(bad, [rand(2, 3)], {"weight": rand(4, 5)})


# --- dense -----------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["none", "relu", "sigmoid", "leakyrelu", "prelu"])
def test_dense_equals_gemm_with_the_fused_activation(activation):
    x, w, b = rand(3, 16), rand(8, 16, seed=1), rand(8, seed=2)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1)]
    inits = {"w": w, "b": b}
    weights = {"weight": w, "bias": b}
    attrs = {"activation": activation}
    if activation == "relu":
        nodes.append(helper.make_node("Relu", ["g"], ["y"]))
    elif activation == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["g"], ["y"]))
    elif activation == "leakyrelu":
        nodes.append(helper.make_node("LeakyRelu", ["g"], ["y"], alpha=0.2))
        attrs["activation_params"] = {"alpha": 0.2}
    elif activation == "prelu":
        slope = np.abs(rand(8, seed=3))
        nodes.append(helper.make_node("PRelu", ["g", "s"], ["y"]))
        inits["s"] = slope
        weights["slope"] = slope
    else:
        nodes[0].output[0] = "y"
    want = ort_run(nodes, {"x": x}, ["y"], inits)[0]
    close(run_op(layer("dense", attrs), [x], weights)[0], want)


def test_dense_without_bias_keeps_leading_dims_like_matmul():
    x, w = rand(2, 5, 16), rand(8, 16, seed=1)
    want = ort_run([helper.make_node("MatMul", ["x", "wt"], ["y"])], {"x": x}, ["y"],
                   {"wt": np.ascontiguousarray(w.T)})[0]
    close(run_op(layer("dense"), [x], {"weight": w})[0], want)


# --- elementwise -----------------------------------------------------------------------------
SHAPE_PAIRS = [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 3, 1, 1)), ((2, 3, 4, 5), (5,)),
               ((1, 3, 1, 5), (2, 1, 4, 1)), ((3, 1, 1), (2, 3, 4, 5))]


@pytest.mark.parametrize(("op", "onnx_op"), [("add", "Add"), ("mul", "Mul")])
@pytest.mark.parametrize(("a_shape", "b_shape"), SHAPE_PAIRS)
def test_add_and_mul_broadcast_like_onnx_with_two_inputs(op, onnx_op, a_shape, b_shape):
    a, b = rand(*a_shape), rand(*b_shape, seed=1)
    want = ort_run([helper.make_node(onnx_op, ["a", "b"], ["y"])], {"a": a, "b": b}, ["y"])[0]
    close(run_op(layer(op, n_in=2), [a, b], {})[0], want)


@pytest.mark.parametrize(("op", "onnx_op"), [("add", "Add"), ("mul", "Mul")])
def test_add_and_mul_take_a_constant_second_operand_from_weight_other(op, onnx_op):
    a, c = rand(2, 3, 4, 4), rand(1, 3, 1, 1, seed=1)
    want = ort_run([helper.make_node(onnx_op, ["a", "c"], ["y"])], {"a": a}, ["y"], {"c": c})[0]
    got = run_op(layer(op), [a], {"other": c.astype(np.float64)})[0]
    assert got.dtype == np.float32
    close(got, want)


def test_add_with_a_fused_relu_does_not_modify_its_inputs():
    a, b = rand(2, 3), rand(2, 3, seed=1)
    a0, b0 = a.copy(), b.copy()
    y = run_op(layer("add", {"activation": "relu"}, n_in=2), [a, b], {})[0]
    np.testing.assert_array_equal(y, np.maximum(a0 + b0, 0))
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


ACTIVATION_NODES = [
    ("relu", {}, "Relu", {}),
    ("sigmoid", {}, "Sigmoid", {}),
    ("tanh", {}, "Tanh", {}),
    ("leakyrelu", {"alpha": 0.1}, "LeakyRelu", {"alpha": 0.1}),
    ("hardsigmoid", {"alpha": 0.25, "beta": 0.4}, "HardSigmoid", {"alpha": 0.25, "beta": 0.4}),
    ("hardswish", {}, "HardSwish", {}),
]


@pytest.mark.parametrize(("kind", "params", "onnx_op", "onnx_attrs"), ACTIVATION_NODES)
def test_activation_layer_equals_the_onnx_activation(kind, params, onnx_op, onnx_attrs):
    x = rand(2, 3, 5, 5) * 4
    x0 = x.copy()
    want = ort_run([helper.make_node(onnx_op, ["x"], ["y"], **onnx_attrs)], {"x": x}, ["y"])[0]
    got = run_op(layer("activation", {"activation": kind, "activation_params": params}),
                 [x], {})[0]
    close(got, want)
    np.testing.assert_array_equal(x, x0)


def test_activation_layer_clip_relu6_silu_and_prelu_equal_onnx():
    x = rand(2, 4, 3, 3) * 5
    lo, hi = np.float32(-1.5), np.float32(2.0)
    want = ort_run([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], {"x": x}, ["y"],
                   {"lo": np.array(lo), "hi": np.array(hi)})[0]
    close(run_op(layer("activation", {"activation": "clip",
                                      "activation_params": {"min": lo, "max": hi}}),
                 [x], {})[0], want)
    close(run_op(layer("activation", {"activation": "relu6"}), [x], {})[0], np.clip(x, 0, 6))
    silu = ort_run([helper.make_node("Sigmoid", ["x"], ["s"]),
                    helper.make_node("Mul", ["x", "s"], ["y"])], {"x": x}, ["y"])[0]
    close(run_op(layer("activation", {"activation": "silu"}), [x], {})[0], silu)
    slope = rand(4, 1, 1, seed=4)
    want = ort_run([helper.make_node("PRelu", ["x", "s"], ["y"])], {"x": x}, ["y"],
                   {"s": slope})[0]
    got = run_op(layer("activation", {"activation": "prelu"}), [x], {"slope": slope})[0]
    close(got, want)


# --- softmax ---------------------------------------------------------------------------------
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data())
def test_softmax_equals_onnx_softmax_13_on_any_axis(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = rand(*shape) * 10
    want = ort_run([helper.make_node("Softmax", ["x"], ["y"], axis=axis)], {"x": x}, ["y"])[0]
    close(run_op(layer("softmax", {"axis": axis}), [x], {})[0], want)


def test_softmax_defaults_to_the_last_axis():
    x = rand(2, 3, 7)
    np.testing.assert_allclose(run_op(layer("softmax"), [x], {})[0].sum(axis=-1), 1, rtol=1e-6)


# --- concat / split / slice -----------------------------------------------------------------
@pytest.mark.parametrize("axis", [1, -1, 0])
def test_concat_equals_onnx_concat(axis):
    xs = [rand(2, 3, 4, 5, seed=i) for i in range(3)]
    feeds = {f"x{i}": x for i, x in enumerate(xs)}
    want = ort_run([helper.make_node("Concat", list(feeds), ["y"], axis=axis)], feeds, ["y"])[0]
    close(run_op(layer("concat", {"axis": axis}, n_in=3), xs, {})[0], want)


@pytest.mark.parametrize(("axis", "sizes", "n_out"),
                         [(1, [2, 4, 2], 3), (-1, None, 2), (2, None, 3), (0, [1, 1], 2)])
def test_split_equals_onnx_split(axis, sizes, n_out):
    x = rand(2, 8, 7, 6)
    outs = [f"y{i}" for i in range(n_out)]
    inputs, inits, kwargs = ["x"], {}, {}
    if sizes is not None:
        inputs.append("split")
        inits["split"] = np.array(sizes, np.int64)
    else:
        kwargs["num_outputs"] = n_out
    want = ort_run([helper.make_node("Split", inputs, outs, axis=axis, **kwargs)], {"x": x},
                   outs, inits)
    got = run_op(layer("split", {"axis": axis, "split": sizes}, n_out=n_out), [x], {})
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


INDEX = st.one_of(st.integers(-12, 12), st.sampled_from([2**63 - 1, -(2**63)]))


@given(data=st.data())
def test_slice_equals_onnx_slice_with_negative_indices_steps_and_clamping(data):
    shape = data.draw(st.lists(st.integers(1, 7), min_size=1, max_size=4))
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1,
                              max_size=len(shape), unique_by=lambda a: a % len(shape)))
    starts = [data.draw(INDEX) for _ in axes]
    ends = [data.draw(INDEX) for _ in axes]
    steps = [data.draw(st.sampled_from([1, 2, 3, -1, -2])) for _ in axes]
    x = rand(*shape)
    inits = {k: np.array(v, np.int64) for k, v in
             {"starts": starts, "ends": ends, "axes": axes, "steps": steps}.items()}
    want = ort_run([helper.make_node("Slice", ["x", *inits], ["y"])], {"x": x}, ["y"], inits)[0]
    got = run_op(layer("slice", {"starts": starts, "ends": ends, "axes": axes, "steps": steps}),
                 [x], {})[0]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_slice_reads_constant_inputs_kept_as_weights():
    x = rand(4, 6)
    got = run_op(layer("slice"), [x], {"starts": np.array([1]), "ends": np.array([-1]),
                                       "axes": np.array([1])})[0]
    np.testing.assert_array_equal(got, x[:, 1:-1])
