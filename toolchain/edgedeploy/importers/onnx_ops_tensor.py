"""ONNX converters for element-wise, pooling, resizing and data-movement ops.

Constant inputs (shapes, permutations, split sizes, slice bounds, pads, scales) are resolved here
into plain ``attrs`` values so the native runtime never needs the ONNX graph. A non-constant one
makes the node opaque.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from edgedeploy.importers.onnx_ops import (
    Ctx,
    _decode,
    _window,
    attrs_of,
    converter,
    layer,
    opaque,
)
from edgedeploy.runtime import ir
from edgedeploy.runtime.ir import Layer


def _axis(axis: int, rank: int) -> int:
    return int(axis) + rank if int(axis) < 0 else int(axis)


def _ints(values: np.ndarray | list[int]) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


@converter("Add", "Mul")
def _binary(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    op = ir.ADD if node.op_type == "Add" else ir.MUL
    acts = ctx.activations(node)
    if len(acts) == 2:
        return layer(node, op, acts)
    if len(acts) == 1:
        other = next(i for i in node.input if ctx.is_const(i))
        attrs = {"constant_position": list(node.input).index(other)}
        return layer(node, op, acts, attrs, {"other": ctx.weight(other)})
    return opaque(ctx, node)


@converter("Sum")
def _sum(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    """Old exporters' n-ary Sum (Caffe2's ResNets join their residuals with it): two
    activations of one shape are an Add."""
    acts = ctx.activations(node)
    if (len(node.input) == 2 and len(acts) == 2
            and ctx.shape(acts[0]) == ctx.shape(acts[1]) == ctx.shape(node.output[0])):
        return layer(node, ir.ADD, acts)
    return opaque(ctx, node)


@converter("Concat")
def _concat(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    if any(ctx.is_const(i) for i in node.input):
        return opaque(ctx, node)
    rank = len(ctx.shape(node.output[0]))
    return layer(node, ir.CONCAT, list(node.input), {"axis": _axis(attrs_of(node)["axis"], rank)})


@converter("MaxPool", "AveragePool")
def _pool(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    x = node.input[0]
    a = attrs_of(node)
    extra_out = len(node.output) > 1 and node.output[1] and ctx.consumers.get(node.output[1])
    if ctx.is_const(x) or len(ctx.shape(x)) != 4 or extra_out or len(a["kernel_shape"]) != 2:
        return opaque(ctx, node)
    kernel = (int(a["kernel_shape"][0]), int(a["kernel_shape"][1]))
    attrs = _window(a, ctx.shape(x)[2:], kernel)
    attrs["ceil_mode"] = int(a.get("ceil_mode", 0))
    op = ir.MAXPOOL
    if node.op_type == "AveragePool":
        op = ir.AVGPOOL
        attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
    return layer(node, op, [x], attrs)


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    x = node.input[0]
    if ctx.is_const(x) or len(ctx.shape(x)) != 4:
        return opaque(ctx, node)
    if node.op_type == "GlobalAveragePool":
        return layer(node, ir.GLOBAL_AVGPOOL, [x])
    h, w = ctx.shape(x)[2:]  # a max pool whose window is the whole map
    attrs = {"kernel": [h, w], "strides": [1, 1], "dilations": [1, 1], "pads": [0, 0, 0, 0],
             "ceil_mode": 0}
    return layer(node, ir.MAXPOOL, [x], attrs)


@converter("ReduceMean")
def _reduce_mean(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    """Only the spatial mean (axes H, W of an NCHW tensor) is an IR ``mean``."""
    x = node.input[0]
    a = attrs_of(node)
    axes_v = a.get("axes") if ctx.opset < 18 else ctx.opt_const(node, 1)
    if ctx.is_const(x) or axes_v is None or (ctx.opset >= 18 and ctx.has_input(node, 1)
                                             and not ctx.is_const(node.input[1])):
        return opaque(ctx, node)
    rank = len(ctx.shape(x))
    axes = sorted(_axis(v, rank) for v in _ints(axes_v))
    if rank != 4 or axes != [2, 3]:
        return opaque(ctx, node)
    return layer(node, ir.MEAN, [x], {"axes": axes, "keepdims": int(a.get("keepdims", 1))})


@converter("Resize", "Upsample")
def _resize(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    x = node.input[0]
    a = attrs_of(node)
    mode = _decode(a.get("mode", "nearest"))
    if ctx.is_const(x) or mode not in ("nearest", "linear", "bilinear") or a.get("antialias", 0) \
            or "axes" in a or len(ctx.shape(x)) != 4:
        return opaque(ctx, node)
    scales, sizes = _resize_params(ctx, node, a)
    if scales is None and sizes is None:
        return opaque(ctx, node)
    out_shape = ctx.shape(node.output[0])
    attrs: dict[str, Any] = {
        "mode": "linear" if mode == "bilinear" else mode,
        "coordinate_transformation_mode": _decode(
            a.get("coordinate_transformation_mode",
                  "asymmetric" if node.op_type == "Upsample" or ctx.opset < 11 else "half_pixel")),
        "nearest_mode": _decode(a.get("nearest_mode", "round_prefer_floor")),
        "scales": scales, "sizes": sizes or list(out_shape),
        "cubic_coeff_a": float(a.get("cubic_coeff_a", -0.75)),
        "exclude_outside": int(a.get("exclude_outside", 0)),
        "extrapolation_value": float(a.get("extrapolation_value", 0.0)),
    }
    if node.op_type == "Upsample" or ctx.opset < 11:
        attrs["nearest_mode"] = "floor" if mode == "nearest" else attrs["nearest_mode"]
    return layer(node, ir.RESIZE, [x], attrs)


def _resize_params(ctx: Ctx, node: onnx.NodeProto,
                   a: dict[str, Any]) -> tuple[list[float] | None, list[int] | None]:
    if node.op_type == "Upsample" and "scales" in a:
        return [float(s) for s in a["scales"]], None
    scale_idx = 1 if node.op_type == "Upsample" or ctx.opset < 11 else 2
    for idx in (scale_idx, 3):
        if ctx.has_input(node, idx) and not ctx.is_const(node.input[idx]):
            return None, None
    scales = ctx.opt_const(node, scale_idx)
    sizes = ctx.opt_const(node, 3) if scale_idx == 2 else None
    if sizes is not None and sizes.size:
        return None, _ints(sizes)
    if scales is not None and scales.size:
        return [float(s) for s in scales.reshape(-1)], None
    return None, None


@converter("Flatten")
def _flatten(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    rank = len(ctx.shape(node.input[0]))
    axis = _axis(attrs_of(node).get("axis", 1), rank)
    return _movement(ctx, node, ir.FLATTEN, {"axis": axis})


@converter("Reshape")
def _reshape(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    if not ctx.is_const(node.input[1]):
        return opaque(ctx, node)
    attrs = {"shape": _ints(ctx.const(node.input[1])),
             "allowzero": int(attrs_of(node).get("allowzero", 0))}
    return _movement(ctx, node, ir.RESHAPE, attrs)


@converter("Squeeze", "Unsqueeze")
def _squeeze(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    """Squeeze/Unsqueeze only change the shape: an IR reshape to the known output shape."""
    if len(node.input) > 1 and node.input[1] and not ctx.is_const(node.input[1]):
        return opaque(ctx, node)
    return _movement(ctx, node, ir.RESHAPE, {"shape": list(ctx.shape(node.output[0])),
                                              "onnx_op_type": node.op_type})


def _movement(ctx: Ctx, node: onnx.NodeProto, op: str, attrs: dict[str, Any]) -> Layer:
    if ctx.is_const(node.input[0]):
        return opaque(ctx, node)
    attrs.setdefault("target_shape", list(ctx.shape(node.output[0])))
    return layer(node, op, [node.input[0]], attrs)


@converter("Transpose")
def _transpose(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    rank = len(ctx.shape(node.input[0]))
    perm = attrs_of(node).get("perm", list(range(rank))[::-1])
    return _movement(ctx, node, ir.TRANSPOSE, {"perm": [int(p) for p in perm]})


@converter("Split")
def _split(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    """Split sizes are read back from the inferred output shapes: exact whatever the opset."""
    if ctx.has_input(node, 1) and not ctx.is_const(node.input[1]):
        return opaque(ctx, node)
    rank = len(ctx.shape(node.input[0]))
    axis = _axis(attrs_of(node).get("axis", 0), rank)
    split = [ctx.shape(o)[axis] for o in node.output if o]
    if len(split) != len(node.output):
        return opaque(ctx, node)
    return _movement(ctx, node, ir.SPLIT, {"axis": axis, "split": split})


@converter("Slice")
def _slice(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    rank = len(ctx.shape(node.input[0]))
    if ctx.opset < 10:
        a = attrs_of(node)
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        if any(ctx.has_input(node, i) and not ctx.is_const(node.input[i]) for i in range(1, 5)):
            return opaque(ctx, node)
        starts, ends = _ints(ctx.const(node.input[1])), _ints(ctx.const(node.input[2]))
        axes_v, steps_v = ctx.opt_const(node, 3), ctx.opt_const(node, 4)
        axes = _ints(axes_v) if axes_v is not None else list(range(len(starts)))
        steps = _ints(steps_v) if steps_v is not None else [1] * len(starts)
    big = np.iinfo(np.int64).max
    attrs = {"starts": [int(s) for s in starts],
             "ends": [int(min(max(e, -big), big)) for e in ends],
             "axes": [_axis(x, rank) for x in axes], "steps": [int(s) for s in steps]}
    return _movement(ctx, node, ir.SLICE, attrs)


@converter("Softmax")
def _softmax(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    """Before opset 13 Softmax flattened to 2-D at ``axis``: the same as along one axis when
    every other axis from ``axis`` on has size 1 (a classifier's N x 1000 x 1 x 1)."""
    shape = ctx.shape(node.input[0])
    rank = len(shape)
    a = attrs_of(node)
    axis = _axis(a.get("axis", -1 if ctx.opset >= 13 else 1), rank)
    if ctx.opset < 13:
        wide = [k for k in range(axis, rank) if shape[k] != 1]
        if len(wide) > 1:
            return opaque(ctx, node)
        axis = wide[0] if wide else rank - 1
    return _movement(ctx, node, ir.SOFTMAX, {"axis": axis})


@converter("Pad")
def _pad(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    a = attrs_of(node)
    rank = len(ctx.shape(node.input[0]))
    mode = _decode(a.get("mode", "constant"))
    if ctx.opset < 11:
        pads, value = [int(p) for p in a.get("pads", a.get("paddings", []))], a.get("value", 0.0)
    else:
        if any(ctx.has_input(node, i) and not ctx.is_const(node.input[i]) for i in (1, 2, 3)):
            return opaque(ctx, node)
        pads = _ints(ctx.const(node.input[1]))
        value_v = ctx.opt_const(node, 2)
        value = 0.0 if value_v is None or value_v.size == 0 else float(value_v.reshape(-1)[0])
        axes_v = ctx.opt_const(node, 3)
        if axes_v is not None:
            pads = _expand_pads(pads, [_axis(x, rank) for x in _ints(axes_v)], rank)
    if len(pads) != 2 * rank:
        return opaque(ctx, node)
    return _movement(ctx, node, ir.PAD, {"pads": pads, "mode": mode, "value": float(value)})


def _expand_pads(pads: list[int], axes: list[int], rank: int) -> list[int]:
    full = [0] * (2 * rank)
    for i, ax in enumerate(axes):
        full[ax], full[ax + rank] = pads[i], pads[i + len(axes)]
    return full
