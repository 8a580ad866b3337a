"""ONNX import: op mapping, folding and fusion rules, opaque nodes, dynamic dims, name contract."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.errors import InputError, ModelError
from edgedeploy.importers.onnx import import_onnx
from edgedeploy.runtime import ir
from edgedeploy.testing import onnx_models as zoo
from edgedeploy.testing.ir_oracle import check_against_onnxruntime

RNG = np.random.default_rng(7)


def w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def model(nodes: Sequence[onnx.NodeProto], inputs: dict[str, Sequence[int | str]],
          outputs: Sequence[str], inits: dict[str, np.ndarray] | None = None,
          opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(
        list(nodes), "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def imported(m: onnx.ModelProto, **kw) -> ir.Graph:
    """Import and check the IR against onnxruntime before any assertion of the test."""
    graph = import_onnx(m, **kw)
    if not kw:
        check_against_onnxruntime(m, graph)
    return graph


def ops(graph: ir.Graph) -> list[str]:
    return [layer.op for layer in graph.layers]


node = helper.make_node
X4 = {"x": [1, 4, 9, 9]}


# --- convolutions -------------------------------------------------------------------------------
def test_conv_descriptor_has_groups_dilation_asymmetric_pads_and_bias():
    m = model([node("Conv", ["x", "w", "b"], ["y"], "c", group=2, dilations=[2, 1],
                    strides=[2, 1], pads=[0, 1, 2, 0])], X4, ["y"], {"w": w(6, 2, 3, 3), "b": w(6)})
    d = imported(m).layers[0].descriptor
    assert (d.op, d.groups, d.dilation, d.stride, d.pads) == ("conv2d", 2, (2, 1), (2, 1),
                                                              (0, 1, 2, 0))
    assert (d.n, d.c_in, d.h, d.w, d.c_out, d.h_out, d.w_out) == (1, 4, 9, 9, 6, 4, 8)
    assert d.has_bias and d.kernel == (3, 3) and d.elems_out == 6 * 4 * 8


@pytest.mark.parametrize(("auto_pad", "pads"), [("SAME_UPPER", (0, 0, 1, 1)),
                                                ("SAME_LOWER", (1, 1, 0, 0)),
                                                ("VALID", (0, 0, 0, 0))])
def test_conv_auto_pad_resolves_to_explicit_pads(auto_pad, pads):
    m = model([node("Conv", ["x", "w"], ["y"], "c", auto_pad=auto_pad, strides=[2, 2],
                    kernel_shape=[3, 3])], {"x": [1, 4, 8, 8]}, ["y"], {"w": w(3, 4, 3, 3)})
    assert imported(m).layers[0].descriptor.pads == pads


def test_depthwise_conv_is_conv2d_with_groups_equal_channels():
    m = model([node("Conv", ["x", "w"], ["y"], "dw", group=4, pads=[1, 1, 1, 1])], X4, ["y"],
              {"w": w(4, 1, 3, 3)})
    layer = imported(m).layers[0]
    assert layer.op == "conv2d" and layer.descriptor.groups == 4
    assert layer.descriptor.is_depthwise


def test_conv_with_activation_weight_input_is_opaque():
    m = model([node("Conv", ["x", "k"], ["y"], "c")], {"x": [1, 2, 5, 5], "k": [3, 2, 1, 1]},
              ["y"])
    layer = imported(m).layers[0]
    assert layer.op == "opaque" and layer.inputs == ["x", "k"]


# --- batch norm folding -------------------------------------------------------------------------
def _bn_inits(c: int, prefix: str = "bn") -> dict[str, np.ndarray]:
    return {f"{prefix}.s": RNG.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}.b": w(c),
            f"{prefix}.m": w(c), f"{prefix}.v": RNG.uniform(0.5, 1.5, c).astype(np.float32)}


def _bn(x: str, y: str, prefix: str = "bn") -> onnx.NodeProto:
    return node("BatchNormalization", [x, f"{prefix}.s", f"{prefix}.b", f"{prefix}.m",
                                       f"{prefix}.v"], [y], prefix, epsilon=1e-3)


def test_batchnorm_after_conv_folds_into_it_and_keeps_the_bn_output_name():
    m = model([node("Conv", ["x", "w"], ["c"], "conv"), _bn("c", "y")], X4, ["y"],
              {"w": w(5, 4, 1, 1), **_bn_inits(5)})
    g = imported(m)
    assert ops(g) == ["conv2d"]
    assert g.layers[0].name == "conv" and g.layers[0].outputs == ["y"]
    assert g.layers[0].descriptor.has_bias and g.layers[0].attrs["fused"] == ["bn"]


def test_batchnorm_is_not_folded_when_the_conv_output_has_two_consumers():
    m = model([node("Conv", ["x", "w"], ["c"], "conv"), _bn("c", "n"),
               node("Add", ["c", "n"], ["y"], "add")], X4, ["y"], {"w": w(4, 4, 1, 1),
                                                                 **_bn_inits(4)})
    g = imported(m)
    assert ops(g) == ["conv2d", "conv2d", "add"]
    standalone = g.layer("bn")
    assert standalone.attrs["folded_from"] == "BatchNormalization"
    assert standalone.descriptor.is_depthwise and standalone.descriptor.kernel == (1, 1)


def test_standalone_batchnorm_becomes_an_exact_depthwise_conv():
    m = model([node("Relu", ["x"], ["r"], "relu"), _bn("r", "y")], X4, ["y"], _bn_inits(4))
    assert ops(imported(m)) == ["activation", "conv2d"]


def test_batchnorm_after_gemm_folds_into_the_dense_layer():
    m = model([node("Gemm", ["x", "fw"], ["f"], "fc", transB=1), _bn("f", "y")],
              {"x": [2, 6]}, ["y"], {"fw": w(3, 6), **_bn_inits(3)})
    assert ops(imported(m)) == ["dense"]


# --- activation fusion --------------------------------------------------------------------------
@pytest.mark.parametrize(("act", "kind", "params"), [
    (node("Relu", ["c"], ["y"]), "relu", {}),
    (node("Clip", ["c", "zero", "six"], ["y"]), "relu6", {}),
    (node("Clip", ["c", "zero"], ["y"]), "relu", {}),
    (node("Clip", ["c", "m1", "six"], ["y"]), "clip", {"min": -1.0, "max": 6.0}),
    (node("Clip", ["c", "", "six"], ["y"]), "clip", {"max": 6.0}),
    (node("Sigmoid", ["c"], ["y"]), "sigmoid", {}),
    (node("Tanh", ["c"], ["y"]), "tanh", {}),
    (node("HardSigmoid", ["c"], ["y"], alpha=0.3, beta=0.4), "hardsigmoid",
     {"alpha": 0.3, "beta": 0.4}),
    (node("HardSwish", ["c"], ["y"]), "hardswish", {}),
    (node("LeakyRelu", ["c"], ["y"], alpha=0.2), "leakyrelu", {"alpha": 0.2}),
    (node("PRelu", ["c", "slope"], ["y"]), "prelu", {}),
])
def test_activation_after_conv_is_fused_with_its_parameters(act, kind, params):
    act.name = "act"
    inits = {"w": w(3, 4, 3, 3), "zero": np.float32(0), "six": np.float32(6),
             "m1": np.float32(-1), "slope": w(3, 1, 1)}
    m = model([node("Conv", ["x", "w"], ["c"], "conv"), act], X4, ["y"], inits)
    (layer,) = imported(m).layers
    assert layer.attrs["activation"] == kind and layer.descriptor.activation == kind
    assert layer.attrs["activation_params"] == pytest.approx(params)
    assert ("slope" in layer.weights) == (kind == "prelu")


def test_clip_attributes_before_opset_11_become_relu6():
    m = model([node("Conv", ["x", "w"], ["c"], "conv"),
               node("Clip", ["c"], ["y"], "clip", min=0.0, max=6.0)], X4, ["y"],
              {"w": w(3, 4, 1, 1)}, opset=9)
    assert imported(m).layers[0].attrs["activation"] == "relu6"


def test_activation_is_not_fused_when_the_conv_output_has_two_consumers():
    m = model([node("Conv", ["x", "w"], ["c"], "conv"), node("Relu", ["c"], ["r"], "relu"),
               node("Add", ["c", "r"], ["y"], "add")], X4, ["y"], {"w": w(4, 4, 1, 1)})
    g = imported(m)
    assert ops(g) == ["conv2d", "activation", "add"]
    assert g.layer("conv").attrs["activation"] == "none"
    assert g.layer("relu").attrs == {"activation": "relu", "activation_params": {}}


def test_activation_is_not_fused_when_the_conv_output_is_a_graph_output():
    m = model([node("Conv", ["x", "w"], ["c"], "conv"), node("Relu", ["c"], ["y"], "relu")],
              X4, ["c", "y"], {"w": w(4, 4, 1, 1)})
    assert ops(imported(m)) == ["conv2d", "activation"]


def test_x_times_sigmoid_x_is_silu_fused_into_the_conv():
    m = model([node("Conv", ["x", "w"], ["c"], "conv"), node("Sigmoid", ["c"], ["s"], "sig"),
               node("Mul", ["s", "c"], ["y"], "mul")], X4, ["y"], {"w": w(4, 4, 1, 1)})
    (layer,) = imported(m).layers
    assert layer.attrs["activation"] == "silu" and layer.outputs == ["y"]


def test_silu_after_a_non_conv_is_a_standalone_activation():
    m = model([node("Sigmoid", ["x"], ["s"], "sig"), node("Mul", ["x", "s"], ["y"], "mul")],
              X4, ["y"])
    (layer,) = imported(m).layers
    assert (layer.op, layer.attrs["activation"], layer.name) == ("activation", "silu", "mul")


# --- dense --------------------------------------------------------------------------------------
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_with_alpha_beta_and_either_weight_layout_is_dense(trans_b):
    wt = w(5, 6) if trans_b else w(6, 5)
    m = model([node("Gemm", ["x", "B", "C"], ["y"], "fc", alpha=0.5, beta=2.0, transB=trans_b)],
              {"x": [3, 6]}, ["y"], {"B": wt, "C": w(5)})
    d = imported(m).layers[0].descriptor
    assert (d.op, d.n, d.c_in, d.c_out, d.has_bias, d.macs) == ("dense", 3, 6, 5, True, 90)


def test_matmul_with_constant_weight_and_bias_add_is_one_dense_layer():
    m = model([node("MatMul", ["x", "B"], ["m"], "mm"), node("Add", ["m", "b"], ["y"], "add"),
               node("Relu", ["y"], ["z"], "relu")], {"x": [2, 6]}, ["z"], {"B": w(6, 4), "b": w(4)})
    (layer,) = imported(m).layers
    assert (layer.op, layer.outputs, layer.attrs["activation"]) == ("dense", ["z"], "relu")
    assert layer.attrs["fused"] == ["add", "relu"]


def test_matmul_of_two_activations_is_opaque():
    m = model([node("MatMul", ["x", "z"], ["y"], "mm")], {"x": [2, 6], "z": [6, 3]}, ["y"])
    assert ops(imported(m)) == ["opaque"]


# --- element-wise, pools, resize, data movement -------------------------------------------------
def test_add_and_mul_with_a_constant_operand_hold_it_as_weight_other():
    m = model([node("Mul", ["k", "x"], ["m"], "mul"), node("Add", ["m", "x"], ["y"], "add")],
              X4, ["y"], {"k": w(1, 4, 1, 1)})
    g = imported(m)
    assert ops(g) == ["mul", "add"]
    assert g.layer("mul").weights == {"other": "k"} and g.layer("mul").inputs == ["x"]
    assert g.layer("add").inputs == ["m", "x"]


def test_pools_carry_window_ceil_mode_and_count_include_pad():
    m = model([node("MaxPool", ["x"], ["a"], "mp", kernel_shape=[3, 3], strides=[2, 2],
                    ceil_mode=1),
               node("AveragePool", ["a"], ["b"], "ap", kernel_shape=[2, 2], pads=[1, 1, 0, 0],
                    count_include_pad=1),
               node("GlobalAveragePool", ["b"], ["y"], "gap"),
               node("GlobalMaxPool", ["b"], ["z"], "gmp")], {"x": [1, 4, 10, 10]}, ["y", "z"])
    g = imported(m)
    assert ops(g) == ["maxpool", "avgpool", "global_avgpool", "maxpool"]
    assert g.layer("mp").attrs["ceil_mode"] == 1 and g.layer("mp").descriptor.h_out == 5
    assert g.layer("ap").attrs["count_include_pad"] == 1
    assert g.layer("ap").descriptor.pads == (1, 1, 0, 0)
    assert g.layer("gmp").descriptor.kernel == (5, 5)


def test_reduce_mean_over_h_w_is_mean_and_over_channels_is_opaque():
    m = model([node("ReduceMean", ["x"], ["y"], "hw", axes=[-1, -2], keepdims=1),
               node("ReduceMean", ["x"], ["z"], "ch", axes=[1])], X4, ["y", "z"], opset=13)
    g = imported(m)
    assert ops(g) == ["mean", "opaque"]
    assert g.layer("hw").attrs["axes"] == [2, 3]


def test_resize_by_sizes_linear_and_upsample_by_scales():
    m = model([node("Resize", ["x", "", "", "sizes"], ["y"], "rs", mode="linear",
                    coordinate_transformation_mode="align_corners")], X4, ["y"],
              {"sizes": np.array([1, 4, 13, 17], dtype=np.int64)})
    layer = imported(m).layers[0]
    assert layer.op == "resize" and layer.attrs["sizes"] == [1, 4, 13, 17]
    assert layer.attrs["coordinate_transformation_mode"] == "align_corners"
    up = model([node("Upsample", ["x", "sc"], ["y"], "up", mode="nearest")], X4, ["y"],
               {"sc": np.array([1, 1, 2, 3], dtype=np.float32)}, opset=9)
    assert imported(up).layers[0].attrs["scales"] == [1, 1, 2, 3]


def test_data_movement_ops_resolve_their_constant_inputs():
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    m = model([
        node("Pad", ["x", "pads", "pv"], ["p"], "pad", mode="constant"),
        node("Slice", ["p", "st", "en", "ax", "sp"], ["s"], "slice"),
        node("Split", ["s", "spl"], ["s0", "s1"], "split", axis=1),
        node("Concat", ["s1", "s0"], ["c"], "concat", axis=-3),
        node("Transpose", ["c"], ["t"], "tr", perm=[0, 2, 3, 1]),
        node("Flatten", ["t"], ["f"], "flat", axis=2),
        node("Softmax", ["f"], ["y"], "sm", axis=1),
    ], X4, ["y"], {"pads": i64(0, 0, 1, 0, 0, 0, 0, 2), "pv": np.float32(0.5),
                   "st": i64(1, 0), "en": i64(10, 100), "ax": i64(2, 3), "sp": i64(2, 3),
                   "spl": i64(1, 3)})
    g = imported(m)
    assert ops(g) == ["pad", "slice", "split", "concat", "transpose", "flatten", "softmax"]
    assert g.layer("pad").attrs == {"pads": [0, 0, 1, 0, 0, 0, 0, 2], "mode": "constant",
                                    "value": 0.5, "target_shape": [1, 4, 10, 11]}
    assert g.layer("slice").attrs["steps"] == [2, 3] and g.layer("split").attrs["split"] == [1, 3]
    assert g.layer("concat").attrs["axis"] == 1 and g.layer("tr").attrs["perm"] == [0, 2, 3, 1]
    assert g.layer("flat").attrs["axis"] == 2 and g.layer("sm").attrs["axis"] == 1


def test_pytorch_flatten_subgraph_folds_into_one_reshape():
    g = imported(zoo.pytorch_style_resnet_block())
    reshape = g.layer("/Reshape")
    assert reshape.attrs["shape"] == [1, -1] and reshape.attrs["target_shape"] == [1, 8]
    assert not any(layer.name in ("/Shape", "/Gather", "/Concat") for layer in g.layers)


def test_identity_and_dropout_are_removed_and_graph_outputs_keep_their_names():
    m = model([node("Relu", ["x"], ["r"], "relu"), node("Dropout", ["r"], ["d"], "drop"),
               node("Identity", ["d"], ["y"], "id")], X4, ["y"])
    g = imported(m)
    assert ops(g) == ["activation"] and g.layers[0].outputs == ["y"]
    assert [t.name for t in g.outputs] == ["y"]


# --- opaque, shapes, names ----------------------------------------------------------------------
def test_unknown_ops_import_as_opaque_with_onnx_type_attrs_and_constant_weights():
    g = imported(zoo.unknown_op_model())
    lrn, einsum = g.layer("lrn0"), g.layer("einsum")
    assert lrn.op == einsum.op == "opaque"
    assert lrn.attrs["onnx_op_type"] == "LRN" and lrn.attrs["onnx_attrs"]["size"] == 3
    assert einsum.attrs["onnx_attrs"]["equation"] == "bc,cd->bd"
    assert einsum.weights == {"input1": "proj"} and einsum.inputs == ["flat"]
    assert einsum.attrs["domain"] == "ai.onnx"


def test_shapes_left_open_by_onnx_inference_come_from_onnxruntime():
    m = model([node("Gelu", ["x"], ["g"], "gelu", domain="com.microsoft"),
               node("Relu", ["g"], ["y"], "relu")], X4, ["y"])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    g = import_onnx(m)
    assert g.tensors["g"].shape == (1, 4, 9, 9)
    assert g.layer("gelu").attrs["domain"] == "com.microsoft"


def test_every_ir_tensor_name_exists_in_the_original_model_and_segments_can_be_cut():
    for build in (zoo.pytorch_style_resnet_block, zoo.tf2onnx_style_mobilenet,
                  zoo.paddle_style_detector):
        m = build()
        g = import_onnx(m)
        names = {i.name for i in m.graph.input} | {o for n in m.graph.node for o in n.output}
        used = {t for layer in g.layers for t in (*layer.inputs, *layer.outputs)}
        assert used | {t.name for t in (*g.inputs, *g.outputs)} <= names
        mid = g.layers[len(g.layers) // 2]
        seg = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(m)).extract_model(
            mid.inputs, mid.outputs)
        assert len(seg.graph.node) >= 1


def test_unnamed_nodes_get_unique_deterministic_names():
    m = model([node("Relu", ["x"], ["a"]), node("Relu", ["a"], ["b"]),
               node("Sigmoid", ["b"], ["y"], "Relu_1")], X4, ["y"])
    names = [layer.name for layer in imported(m).layers]
    assert names == ["Relu_0", "Relu_1", "Relu_1_1"]
    assert names == [layer.name for layer in import_onnx(m).layers]


def test_nodes_stored_out_of_order_are_sorted_topologically():
    m = model([node("Sigmoid", ["a"], ["y"], "second"), node("Relu", ["x"], ["a"], "first")],
              X4, ["y"])
    assert [layer.name for layer in import_onnx(m).layers] == ["first", "second"]


def test_source_records_format_opset_producer_and_hash(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(zoo.paddle_style_detector(), path)
    src = import_onnx(path).source
    assert (src["format"], src["opset"], src["producer"], src["path"]) == (
        "onnx", 14, "PaddlePaddle", str(path))
    assert len(src["sha256"]) == 64


# --- dynamic dims and bad files -----------------------------------------------------------------
def test_dynamic_dims_without_override_name_the_input_and_the_fix():
    with pytest.raises(InputError, match="'x' has dynamic dimensions") as err:
        import_onnx(zoo.dynamic_model())
    assert "--input-shape" in err.value.hint and "manifest" in err.value.hint


def test_a_batch_axis_that_is_the_only_dynamic_dimension_is_taken_as_one_and_said():
    m = zoo.dynamic_model()
    x = m.graph.input[0].type.tensor_type.shape.dim
    x[2].dim_value, x[3].dim_value = 12, 10  # [batch, 3, 12, 10], as most exports have it
    g = imported(m)
    assert g.inputs[0].shape == (1, 3, 12, 10) and g.outputs[0].shape == (1, 2)
    assert g.source["batch_taken_as_1"] == ["x"]
    # given a shape, nothing is assumed
    assert "batch_taken_as_1" not in import_onnx(m, input_shape=(2, 3, 12, 10)).source


def test_a_batch_symbol_taken_as_one_fixes_it_in_every_input_and_other_dims_still_ask():
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    g = imported(model(nodes, {"a": ["n", 4, 5], "b": ["n", 4, 5]}, ["y"]))
    assert [t.shape for t in g.inputs] == [(1, 4, 5), (1, 4, 5)]
    assert g.source["batch_taken_as_1"] == ["a", "b"]
    # a dimension other than a batch axis is still asked for
    with pytest.raises(InputError, match=r"'a' has dynamic dimensions \(t\)"):
        import_onnx(model(nodes, {"a": ["n", "t", 5], "b": ["n", 4, 5]}, ["y"]))


def test_dynamic_dims_take_the_override_and_shapes_follow():
    m = zoo.dynamic_model()
    g = import_onnx(m, input_shape=(2, 3, 12, 10))
    assert g.inputs[0].shape == (2, 3, 12, 10) and g.outputs[0].shape == (2, 2)
    check_against_onnxruntime(m, g)


@pytest.mark.parametrize(("shape", "message"), [((1, 3, 8), "rank"),
                                                ((1, 4, 8, 8), "fixed size 3")])
def test_a_shape_override_that_cannot_apply_is_an_input_error(shape, message):
    with pytest.raises(InputError, match=message):
        import_onnx(zoo.dynamic_model(), input_shape=shape)


def test_an_unknown_input_name_lists_the_real_ones():
    with pytest.raises(InputError, match="no input named 'img'") as err:
        import_onnx(zoo.dynamic_model(), input_shape=(1, 3, 8, 8), input_name="img")
    assert "x" in err.value.hint


@pytest.mark.parametrize("content", [b"\x08\x07garbage" * 9, b"\xff" * 64])
def test_corrupt_files_are_model_errors(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        import_onnx(path)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        import_onnx(tmp_path / "nope.onnx")
