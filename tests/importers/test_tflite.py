"""TFLite import, one operator at a time: shapes and values checked against LiteRT.

Every model here is built with :mod:`edgedeploy.testing.tflite_builder`, imported, run in LiteRT
and evaluated on the IR by a naive numpy reference; each tensor both have must agree (NCHW in the
IR, NHWC in LiteRT).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgedeploy.runtime import ir
from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights

try:
    from test_tflite_reference import check_model
except ImportError:  # tests/importers is a package
    from .test_tflite_reference import check_model

Build = Callable[[TFLiteBuilder, int, np.random.Generator], int]


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return he_weights(rng, shape, int(np.prod(shape[1:])))


def _b(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32) * 0.1


CASES: dict[str, tuple[tuple[int, ...], Build]] = {
    "conv_same_stride2_relu6": ((1, 9, 9, 4), lambda b, x, r: b.conv2d(
        x, _w(r, 6, 3, 3, 4), _b(r, 6), stride=2, padding="SAME", activation="relu6")),
    "conv_valid_dilated_no_bias": ((1, 10, 11, 3), lambda b, x, r: b.conv2d(
        x, _w(r, 5, 3, 2, 3), None, padding="VALID", dilation=(2, 1), activation="relu")),
    "conv_same_even_kernel_asymmetric_stride": ((1, 8, 7, 2), lambda b, x, r: b.conv2d(
        x, _w(r, 4, 4, 2, 2), _b(r, 4), stride=(2, 3), padding="SAME", activation="relu_n1_to_1")),
    "conv_1x1": ((2, 5, 5, 8), lambda b, x, r: b.conv2d(x, _w(r, 16, 1, 1, 8), _b(r, 16))),
    "depthwise_same_stride2": ((1, 9, 9, 4), lambda b, x, r: b.depthwise_conv2d(
        x, _w(r, 1, 3, 3, 4), _b(r, 4), stride=2, activation="relu6")),
    "depthwise_multiplier2_valid_dilated": ((1, 9, 8, 3), lambda b, x, r: b.depthwise_conv2d(
        x, _w(r, 1, 3, 3, 6), _b(r, 6), depth_multiplier=2, padding="VALID", dilation=2)),
    "dense_2d": ((3, 12), lambda b, x, r: b.fully_connected(
        x, _w(r, 7, 12), _b(r, 7), activation="relu")),
    "dense_after_4d_flatten": ((2, 3, 4, 5), lambda b, x, r: b.fully_connected(
        x, _w(r, 6, 60), _b(r, 6))),
    "dense_rows_of_channels": ((1, 3, 4, 5), lambda b, x, r: b.fully_connected(
        x, _w(r, 6, 5), None)),
    "dense_keep_num_dims_4d": ((1, 3, 4, 5), lambda b, x, r: b.fully_connected(
        x, _w(r, 6, 5), _b(r, 6), keep_num_dims=True)),
    "dense_keep_num_dims_3d": ((2, 3, 5), lambda b, x, r: b.fully_connected(
        x, _w(r, 4, 5), _b(r, 4), keep_num_dims=True)),
    "add_two_activations_relu": ((1, 4, 4, 3), lambda b, x, r: b.add(
        b.relu(x), b.tanh(x), activation="relu")),
    "add_channel_constant": ((1, 4, 5, 3), lambda b, x, r: b.add(x, b.const("c", _b(r, 3)))),
    "mul_constant_first_full_shape": ((1, 4, 5, 3), lambda b, x, r: b.mul(
        b.const("k", r.standard_normal((1, 4, 5, 3)).astype(np.float32)), x)),
    "mul_broadcast_activations": ((1, 4, 5, 3), lambda b, x, r: b.mul(
        x, b.mean(x, (1, 2), keep_dims=True), activation="relu6")),
    "concat_channels": ((1, 4, 4, 3), lambda b, x, r: b.concat([x, b.relu(x)], axis=3)),
    "concat_height_negative_axis": ((1, 4, 4, 3), lambda b, x, r: b.concat(
        [x, b.relu(x), x], axis=-3)),
    "concat_2d": ((2, 3), lambda b, x, r: b.concat([x, x], axis=1)),
    "pad_asymmetric": ((1, 4, 5, 3), lambda b, x, r: b.pad(
        x, [[0, 0], [1, 2], [0, 3], [1, 0]])),
    "maxpool_same_odd": ((1, 9, 9, 2), lambda b, x, r: b.max_pool2d(
        x, 3, 2, padding="SAME")),
    "avgpool_same_excludes_padding": ((1, 7, 8, 2), lambda b, x, r: b.avg_pool2d(
        x, 3, 2, padding="SAME", activation="relu")),
    "avgpool_valid": ((1, 8, 8, 3), lambda b, x, r: b.avg_pool2d(x, 2, 2)),
    "mean_spatial": ((2, 5, 6, 4), lambda b, x, r: b.mean(x, (1, 2))),
    "mean_spatial_keep_dims": ((1, 5, 6, 4), lambda b, x, r: b.mean(x, (1, 2), keep_dims=True)),
    "reshape_4d_to_2d": ((1, 3, 4, 5), lambda b, x, r: b.reshape(x, (1, -1))),
    "reshape_4d_to_3d": ((2, 3, 4, 5), lambda b, x, r: b.reshape(x, (2, 12, 5))),
    "reshape_4d_to_4d": ((1, 4, 6, 2), lambda b, x, r: b.reshape(x, (1, 8, 3, 2))),
    "reshape_2d_to_4d": ((1, 24), lambda b, x, r: b.reshape(x, (1, 2, 3, 4))),
    "reshape_pooled_needs_no_transpose": ((1, 4, 4, 8), lambda b, x, r: b.reshape(
        b.mean(x, (1, 2), keep_dims=True), (1, 8))),
    "softmax_2d": ((2, 10), lambda b, x, r: b.softmax(x, beta=0.5)),
    "softmax_4d_channels": ((1, 3, 3, 5), lambda b, x, r: b.softmax(x)),
    "relu": ((1, 3, 3, 4), lambda b, x, r: b.relu(x)),
    "relu6": ((1, 3, 3, 4), lambda b, x, r: b.relu6(b.mul(x, b.const("s", np.float32([4]))))),
    "logistic": ((1, 3, 3, 4), lambda b, x, r: b.logistic(x)),
    "tanh": ((1, 3, 3, 4), lambda b, x, r: b.tanh(x)),
    "hard_swish": ((1, 3, 3, 4), lambda b, x, r: b.hard_swish(
        b.mul(x, b.const("s", np.float32([4]))))),
    "leaky_relu": ((1, 3, 3, 4), lambda b, x, r: b.leaky_relu(x, 0.3)),
    "prelu_per_channel": ((1, 3, 3, 4), lambda b, x, r: b.prelu(
        x, r.random((1, 1, 4)).astype(np.float32))),
    "resize_nearest": ((1, 3, 4, 2), lambda b, x, r: b.resize_nearest(x, (6, 8))),
    "resize_nearest_align_corners": ((1, 3, 4, 2), lambda b, x, r: b.resize_nearest(
        x, (7, 5), align_corners=True)),
    "resize_nearest_half_pixel": ((1, 3, 4, 2), lambda b, x, r: b.resize_nearest(
        x, (7, 10), half_pixel_centers=True)),
    "resize_bilinear": ((1, 3, 4, 2), lambda b, x, r: b.resize_bilinear(x, (7, 9))),
    "resize_bilinear_align_corners": ((1, 3, 4, 2), lambda b, x, r: b.resize_bilinear(
        x, (5, 7), align_corners=True)),
    "resize_bilinear_half_pixel": ((1, 3, 4, 2), lambda b, x, r: b.resize_bilinear(
        x, (6, 8), half_pixel_centers=True)),
}

EXPECTED_OPS = {
    "conv": ir.CONV2D, "depthwise": ir.CONV2D, "dense": ir.DENSE, "add": ir.ADD, "mul": ir.MUL,
    "concat": ir.CONCAT, "pad": ir.PAD, "maxpool": ir.MAXPOOL, "avgpool": ir.AVGPOOL,
    "mean_spatial_keep": ir.GLOBAL_AVGPOOL, "mean": ir.MEAN, "reshape": ir.RESHAPE,
    "softmax": ir.SOFTMAX, "resize": ir.RESIZE, "re": ir.ACTIVATION, "logistic": ir.ACTIVATION,
    "tanh": ir.ACTIVATION, "hard": ir.ACTIVATION, "leaky": ir.ACTIVATION, "prelu": ir.ACTIVATION,
}


def _build(tmp_path: Path, case: str) -> Path:
    shape, build = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    b = TFLiteBuilder(case)
    b.output(build(b, b.input("input", shape), rng))
    return b.save(tmp_path / f"{case}.tflite")


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_imports_with_litert_shapes_and_values(tmp_path: Path, case: str) -> None:
    graph = check_model(_build(tmp_path, case))
    ops = [layer.op for layer in graph.layers]
    want = next(op for prefix, op in sorted(EXPECTED_OPS.items(), key=lambda kv: -len(kv[0]))
                if case.startswith(prefix))
    assert want in ops
    assert ir.OPAQUE not in ops


def test_conv_same_padding_puts_the_odd_pixel_at_bottom_right(tmp_path: Path) -> None:
    conv = check_model(_build(tmp_path, "conv_same_stride2_relu6")).layers[0]
    d = conv.descriptor
    # 9 -> ceil(9 / 2) = 5 outputs; (5 - 1) * 2 + 3 - 9 = 2 pads: 1 before, 1 after.
    assert d.pads == (1, 1, 1, 1)
    assert (d.kernel, d.stride, d.activation, d.has_bias) == ((3, 3), (2, 2), "relu6", True)
    even = check_model(_build(tmp_path, "conv_same_even_kernel_asymmetric_stride")).layers[0]
    # H: 8 -> 4 out, (4-1)*2 + 4 - 8 = 2 -> (1, 1); W: 7 -> 3 out, (3-1)*3 + 2 - 7 = 1 -> (0, 1).
    assert even.descriptor.pads == (1, 0, 1, 1)


def test_depthwise_imports_as_conv_with_groups_equal_to_input_channels(tmp_path: Path) -> None:
    graph = check_model(_build(tmp_path, "depthwise_multiplier2_valid_dilated"))
    (conv,) = graph.layers
    d = conv.descriptor
    assert (d.op, d.groups, d.c_in, d.c_out, d.dilation) == (ir.CONV2D, 3, 3, 6, (2, 2))
    assert d.is_depthwise
    assert graph.weights[conv.weights["weight"]].shape == (6, 1, 3, 3)
    assert d.macs == 1 * 6 * 5 * 4 * 1 * 3 * 3


def test_dense_after_4d_input_permutes_weights_instead_of_transposing(tmp_path: Path) -> None:
    graph = check_model(_build(tmp_path, "dense_after_4d_flatten"))
    assert [layer.op for layer in graph.layers] == [ir.FLATTEN, ir.DENSE]
    d = graph.layers[1].descriptor
    assert (d.n, d.c_in, d.c_out, d.has_bias) == (2, 60, 6, True)


def test_reshape_of_nhwc_data_goes_through_nhwc_order(tmp_path: Path) -> None:
    graph = check_model(_build(tmp_path, "reshape_4d_to_4d"))
    assert [(layer.op, layer.attrs.get("perm")) for layer in graph.layers] == [
        (ir.TRANSPOSE, [0, 2, 3, 1]), (ir.RESHAPE, None), (ir.TRANSPOSE, [0, 3, 1, 2])]
    pooled = check_model(_build(tmp_path, "reshape_pooled_needs_no_transpose"))
    assert ir.TRANSPOSE not in [layer.op for layer in pooled.layers]


def test_concat_axis_and_pads_are_converted_to_nchw(tmp_path: Path) -> None:
    concat = check_model(_build(tmp_path, "concat_height_negative_axis")).layers[-1]
    assert concat.attrs["axis"] == 2
    pad = check_model(_build(tmp_path, "pad_asymmetric")).layers[0]
    # NHWC [[0,0],[1,2],[0,3],[1,0]] -> NCHW begins (0,1,1,0), ends (0,0,2,3).
    assert pad.attrs["pads"] == [0, 1, 1, 0, 0, 0, 2, 3]


def test_prelu_slope_and_leaky_alpha_are_kept(tmp_path: Path) -> None:
    graph = check_model(_build(tmp_path, "prelu_per_channel"))
    (layer,) = graph.layers
    assert layer.attrs["activation"] == "prelu"
    assert graph.weights[layer.weights["slope"]].shape == (4,)
    leaky = check_model(_build(tmp_path, "leaky_relu")).layers[0]
    assert leaky.attrs["activation_params"]["alpha"] == pytest.approx(0.3)


def test_resize_records_mode_flags_and_output_size(tmp_path: Path) -> None:
    layer = check_model(_build(tmp_path, "resize_bilinear_half_pixel")).layers[0]
    assert layer.attrs["mode"] == "linear"
    assert layer.attrs["half_pixel_centers"] and not layer.attrs["align_corners"]
    assert layer.attrs["coordinate_transformation_mode"] == "half_pixel"
    assert layer.attrs["sizes"] == [1, 2, 6, 8]
    assert (layer.descriptor.h_out, layer.descriptor.w_out) == (6, 8)


def test_unknown_builtin_stays_as_an_opaque_layer_with_its_shape(tmp_path: Path) -> None:
    b = TFLiteBuilder()
    x = b.input("input", (1, 4, 5, 3))
    b.output(b.unary(b.unary(b.relu(x), "ABS"), "GELU"))
    graph = check_model(b.save(tmp_path / "opaque.tflite"), numerics=False)
    assert [(x.op, x.attrs.get("tflite_op")) for x in graph.layers] == [
        (ir.ACTIVATION, None), (ir.OPAQUE, "ABS"), (ir.OPAQUE, "GELU")]
    assert graph.outputs[0].shape == (1, 3, 4, 5)
    assert graph.source["opaque_ops"] == ["ABS", "GELU"]


def _dynamic_input_model(tmp_path: Path, signature: tuple[int, ...]) -> Path:
    b = TFLiteBuilder()
    x = b.input("samples", (1, 1, 1, 4), signature=signature)
    b.output(b.conv2d(x, _w(np.random.default_rng(0), 2, 1, 1, 4), None))
    return b.save(tmp_path / "dynamic.tflite")


def test_a_dynamic_size_past_the_batch_needs_the_users_shape(tmp_path: Path) -> None:
    from edgedeploy import execute
    from edgedeploy.errors import InputError
    from edgedeploy.importers.tflite import import_tflite
    from edgedeploy.runtime.executor import GraphExecutor, max_rel_error

    path = _dynamic_input_model(tmp_path, (-1, -1, -1, 4))
    with pytest.raises(InputError) as err:  # not the file's placeholder 1x1 image
        import_tflite(path)
    assert "'samples' has dynamic dimensions (?, ?, ?, 4)" in err.value.message  # its own
    assert "--input-shape" in (err.value.hint or "")
    graph = import_tflite(path, input_shape=(1, 6, 5, 4))  # the model's own layout, NHWC
    assert graph.outputs[0].shape == (1, 2, 6, 5)
    feeds = {"samples": np.random.default_rng(1).standard_normal((1, 4, 6, 5), np.float32)}
    _, want = execute.reference_outputs(graph, feeds)  # LiteRT, resized
    got = GraphExecutor(graph).run(feeds)
    assert max_rel_error(got, want) <= 1e-5
    # a dynamic batch alone keeps the file's batch of 1, as LiteRT runs it
    graph = check_model(_dynamic_input_model(tmp_path, (-1, 1, 1, 4)))
    assert graph.inputs[0].shape == (1, 4, 1, 1)


def test_an_empty_constant_is_a_constant(tmp_path: Path) -> None:
    # onnx-tf squeezes an If's condition with a RESHAPE whose target holds no elements, its
    # buffer empty: LiteRT keeps such a RESHAPE (of a bool), and its target is no activation
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    from edgedeploy import execute
    from edgedeploy.importers.segments import segment_provider
    from edgedeploy.runtime.executor import GraphExecutor
    from edgedeploy.runtime.vocab import LITERT

    b = TFLiteBuilder()
    x = b.input("input", (1, 1))
    flag = b.tensor("flag", (1, 1), "bool")
    b.op(schema.BuiltinOperator.GREATER_EQUAL, [b.logistic(x), b.const("half", [[0.5]])],
         [flag])
    target = b.tensor("target", (0,), "int32", data=np.zeros(0, np.int32))
    scalar = b.tensor("scalar", (), "bool")
    options = schema.ReshapeOptionsT()
    options.newShape = []
    b.op(schema.BuiltinOperator.RESHAPE, [flag, target], [scalar],
         schema.BuiltinOptions.ReshapeOptions, options)
    b.output(scalar)
    path = b.save(tmp_path / "scalar.tflite")
    graph = check_model(path, numerics=False)
    assert graph.outputs[0].shape == ()
    assert graph.layers[-1].inputs == ["flag"]  # the target is no activation
    cutter = segment_provider(graph, path)
    whole = Interpreter(model_content=cutter(LITERT, ["input"], ["scalar"]))  # a baseline's cut
    whole.allocate_tensors()
    for value in (-3.0, 3.0):  # runs, LiteRT running the bool operators
        feeds = {"input": np.full((1, 1), value, np.float32)}
        got = GraphExecutor(graph, segment_provider=cutter).run(feeds)
        assert got == execute.reference_outputs(graph, feeds)[1] == {"scalar": value > 0}
        whole.set_tensor(whole.get_input_details()[0]["index"], feeds["input"])
        whole.invoke()
        assert whole.get_tensor(whole.get_output_details()[0]["index"]) == (value > 0)


def test_litert_runs_a_model_whose_placeholder_shape_cannot_be_prepared(tmp_path: Path) -> None:
    # a mel front end holds 1x1 for its dynamic samples: a VALID 3x3 convolution of a 1x1 image
    # fails LiteRT's preparation, so the segments and the whole-model runs must be allocated at
    # the shape the user gave, not resized on a first run
    from edgedeploy import execute
    from edgedeploy.benchmarks.systems import litert_all_cores
    from edgedeploy.importers.segments import segment_provider
    from edgedeploy.importers.tflite import import_tflite
    from edgedeploy.runtime.affinity import available_cpus
    from edgedeploy.runtime.engines.litert import LiteRTModel, LiteRTSegment
    from edgedeploy.runtime.layouts import to_model
    from edgedeploy.runtime.vocab import LITERT

    b = TFLiteBuilder()
    x = b.input("samples", (1, 5, 6, 2), signature=(1, -1, -1, 2))
    b.output(b.conv2d(x, _w(np.random.default_rng(2), 3, 3, 3, 2), None, padding="VALID"))
    b.tensors[x].shape = [1, 1, 1, 2]  # the placeholder the converter writes
    path = b.save(tmp_path / "placeholder.tflite")
    with pytest.raises(Exception, match="prepare"):  # the premise
        LiteRTModel(path)
    graph = import_tflite(path, input_shape=(1, 5, 6, 2))  # the model's own layout, NHWC
    (out,) = graph.outputs
    assert out.shape == (1, 3, 3, 4)
    feeds = {"samples": np.random.default_rng(3).standard_normal((1, 2, 5, 6), np.float32)}
    _, want = execute.reference_outputs(graph, feeds)
    own, want_own = to_model(graph, feeds), to_model(graph, want)  # the model's own layout
    segment = LiteRTSegment(segment_provider(graph, path)(LITERT, ["samples"], [out.name]))
    np.testing.assert_allclose(segment.run(own)[out.name], want_own[out.name], rtol=1e-5,
                               atol=1e-5)
    (got,) = litert_all_cores(graph, path, threads=1).run_one([own["samples"]])  # a baseline
    np.testing.assert_allclose(got, want_own[out.name], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(segment.run_ordered([own["samples"]])[0], got, rtol=1e-6)
    # and the profile's whole-model timing of it
    from edgedeploy.runtime.model_timing import session_ms

    cpus, before = [available_cpus()[0]], os.sched_getaffinity(0)
    try:  # it pins the process, as the profiler's children are pinned
        assert session_ms(str(path), own, cpus, LITERT, reps=3) > 0
    finally:
        os.sched_setaffinity(0, before)
