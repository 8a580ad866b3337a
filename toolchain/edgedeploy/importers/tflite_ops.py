"""TFLite operator converters: one function per builtin op, registered by name.

Each converter reads its operands' IR shapes from the :class:`Context`, records its outputs' IR
shapes and emits layers with attrs named as the ONNX importer names them (``kernel``, ``strides``,
``pads`` as [top, left, bottom, right], ``group``, ``activation``...), so the runtime and the
descriptors treat both formats alike. A converter raises :class:`NotConvertible` for a form the IR
cannot express; the importer then keeps the operator as an ``opaque`` layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgedeploy.importers.tflite_context import (
    TO_NCHW,
    Context,
    NotConvertible,
    ir_axis,
    same_order,
    to_ir_shape,
    to_tflite_shape,
)
from edgedeploy.runtime import ir


@dataclass
class Op:
    """One TFLite operator as the converters see it."""

    name: str  # the IR layer name
    kind: str  # the builtin op name, e.g. "CONV_2D"
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    options: Any  # the builtin options object (``schema.*OptionsT``) or None

    def opt(self, field: str, default: Any = 0) -> Any:
        value = getattr(self.options, field, None) if self.options is not None else None
        return default if value is None else value


Converter = Callable[[Context, Op], None]
CONVERTERS: dict[str, Converter] = {}

_FUSED: dict[int, tuple[str, dict[str, float]]] = {
    schema.ActivationFunctionType.NONE: ("none", {}),
    schema.ActivationFunctionType.RELU: ("relu", {}),
    schema.ActivationFunctionType.RELU_N1_TO_1: ("clip", {"min": -1.0, "max": 1.0}),
    schema.ActivationFunctionType.RELU6: ("relu6", {}),
}
# Fused TANH and SIGN_BIT are left out on purpose: LiteRT's float kernels clamp only to the
# ReLU ranges and silently skip them, so the faithful import of such an op is an opaque one.


def converter(*kinds: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for kind in kinds:
            CONVERTERS[kind] = fn
        return fn
    return register


def act_attrs(kind: str, params: dict[str, float] | None = None) -> dict[str, Any]:
    return {"activation": kind, "activation_params": dict(params or {})}


def fused(op: Op) -> dict[str, Any]:
    code = op.opt("fusedActivationFunction", 0)
    if code not in _FUSED:
        raise NotConvertible(f"fused activation {code} is not one LiteRT's kernels apply")
    return act_attrs(*_FUSED[code])


def _bias(ctx: Context, op: Op) -> dict[str, np.ndarray]:
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        return {"bias": ctx.const(op.inputs[2]).reshape(-1)}
    return {}


def _image(ctx: Context, t: int) -> tuple[int, int, int, int]:
    shape = ctx.shape(t)
    if len(shape) != 4:
        raise NotConvertible(f"expected a rank-4 image tensor, got shape {list(shape)}")
    n, c, h, w = shape
    return n, c, h, w


def window(op: Op, hw: tuple[int, int], kernel: tuple[int, int]) -> dict[str, Any]:
    """Window attrs; TFLite SAME pads like TF: the odd pixel goes at the end (bottom/right)."""
    strides = [int(op.opt("strideH", 1)) or 1, int(op.opt("strideW", 1)) or 1]
    dilations = [int(op.opt("dilationHFactor", 1)) or 1, int(op.opt("dilationWFactor", 1)) or 1]
    begin, end = [0, 0], [0, 0]
    if op.opt("padding", schema.Padding.SAME) == schema.Padding.SAME:
        for i in range(2):
            out = math.ceil(hw[i] / strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - hw[i])
            begin[i], end[i] = total // 2, total - total // 2
    return {"kernel": list(kernel), "strides": strides, "dilations": dilations,
            "pads": [begin[0], begin[1], end[0], end[1]]}


def _window_out(n: int, c: int, hw: tuple[int, int], a: dict[str, Any]) -> tuple[int, ...]:
    t, left, b, r = a["pads"]
    ho = ir.conv_output_size(hw[0], a["kernel"][0], a["strides"][0], t, b, a["dilations"][0])
    wo = ir.conv_output_size(hw[1], a["kernel"][1], a["strides"][1], left, r, a["dilations"][1])
    return (n, c, ho, wo)


def _conv(ctx: Context, op: Op, w_oihw: np.ndarray, group: int) -> None:
    x = op.inputs[0]
    n, _, h, w = _image(ctx, x)
    attrs = window(op, (h, w), (int(w_oihw.shape[2]), int(w_oihw.shape[3])))
    attrs.update(group=group, **fused(op))
    out = ctx.set_output(op.outputs[0], _window_out(n, int(w_oihw.shape[0]), (h, w), attrs))
    ctx.emit(op.name, ir.CONV2D, [ctx.names[x]], [out], attrs,
             {"weight": w_oihw, **_bias(ctx, op)})


@converter("CONV_2D")
def conv_2d(ctx: Context, op: Op) -> None:
    """OHWI weights -> OIHW; a C_in that is a multiple of the weights' I is a grouped conv."""
    w = ctx.const(op.inputs[1])
    c = _image(ctx, op.inputs[0])[1]
    if w.ndim != 4 or c % w.shape[3]:
        raise NotConvertible(f"weights {list(w.shape)} do not fit {c} input channels")
    _conv(ctx, op, w.transpose(0, 3, 1, 2), c // int(w.shape[3]))


@converter("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(ctx: Context, op: Op) -> None:
    """Weights (1, kH, kW, C*M) -> (C*M, 1, kH, kW) with groups = C: output channel c*M + m
    reads input channel c in both formats."""
    w = ctx.const(op.inputs[1])
    c = _image(ctx, op.inputs[0])[1]
    if w.ndim != 4 or w.shape[0] != 1 or w.shape[3] % c:
        raise NotConvertible(f"depthwise weights {list(w.shape)} do not fit {c} channels")
    _conv(ctx, op, w[0].transpose(2, 0, 1)[:, None], c)


@converter("MAX_POOL_2D", "AVERAGE_POOL_2D")
def pool_2d(ctx: Context, op: Op) -> None:
    """TFLite's average pool leaves the padding out of the count (count_include_pad = 0)."""
    x = op.inputs[0]
    n, c, h, w = _image(ctx, x)
    kernel = (int(op.opt("filterHeight", 1)), int(op.opt("filterWidth", 1)))
    attrs = window(op, (h, w), kernel)
    attrs.update(ceil_mode=0, **fused(op))
    kind = ir.MAXPOOL if op.kind == "MAX_POOL_2D" else ir.AVGPOOL
    if kind == ir.AVGPOOL:
        attrs["count_include_pad"] = 0
    out = ctx.set_output(op.outputs[0], _window_out(n, c, (h, w), attrs))
    ctx.emit(op.name, kind, [ctx.names[x]], [out], attrs)


@converter("FULLY_CONNECTED")
def fully_connected(ctx: Context, op: Op) -> None:
    """TFLite flattens the input row-major to (-1, K). For a rank-4 NHWC input flattened whole we
    permute the weights' K axis from (H, W, C) to (C, H, W) order, so the IR flattens NCHW data
    with no transpose; any other layout goes through TFLite's element order explicitly."""
    if op.opt("weightsFormat", 0) != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        raise NotConvertible("shuffled weights format")
    x, w = op.inputs[0], ctx.const(op.inputs[1])
    if w.ndim != 2:
        raise NotConvertible(f"weights of shape {list(w.shape)}")
    units, k = (int(d) for d in w.shape)
    shape, keep = ctx.shape(x), bool(op.opt("keepNumDims", False))
    weights = {"weight": w, **_bias(ctx, op)}
    total = int(np.prod(shape))
    if total % k:
        raise NotConvertible(f"{total} input elements do not split into rows of {k}")
    rows = total // k
    if len(shape) == 4 and not keep and k == total // shape[0]:
        n, c, h, wd = shape
        if not same_order(to_tflite_shape(shape)):
            weights["weight"] = w.reshape(units, h, wd, c).transpose(0, 3, 1, 2).reshape(units, k)
        flat = ctx.add_intermediate(f"{ctx.names[x]}/flatten", (n, k))
        ctx.emit(f"{op.name}/flatten", ir.FLATTEN, [ctx.names[x]], [flat],
                 {"axis": 1, "target_shape": [n, k]})
        out = ctx.set_output(op.outputs[0], (n, units))
        ctx.emit(op.name, ir.DENSE, [flat], [out], fused(op), weights)
        return
    src, src_shape = ctx.to_tflite_order(op.name, x)
    if tuple(src_shape) != (rows, k):
        mid = ctx.add_intermediate(f"{ctx.names[x]}/rows", (rows, k))
        ctx.reshape(f"{op.name}/rows", src, src_shape, (rows, k), mid)
        src = mid
    out_tfl = (*to_tflite_shape(shape)[:-1], units) if keep else (rows, units)
    if len(out_tfl) == 2:
        ctx.emit(op.name, ir.DENSE, [src], [ctx.set_output(op.outputs[0], out_tfl)], fused(op),
                 weights)
        return
    y = ctx.add_intermediate(f"{ctx.names[op.outputs[0]]}/rows", (rows, units))
    ctx.emit(op.name, ir.DENSE, [src], [y], fused(op), weights)
    ctx.reshape_to_output(f"{op.name}/keep_dims", y, (rows, units), op.outputs[0], out_tfl)


@converter("ADD", "MUL")
def binary(ctx: Context, op: Op) -> None:
    """A constant operand becomes weight ``other`` in IR layout (broadcast as TFLite would:
    a (C,) constant against NHWC data becomes (1, C, 1, 1))."""
    kind = ir.ADD if op.kind == "ADD" else ir.MUL
    a, b = op.inputs[:2]
    attrs = fused(op)
    consts = [t for t in (a, b) if ctx.is_const(t)]
    if len(consts) == 2:
        raise NotConvertible("both operands are constants")
    if consts:
        act = b if consts[0] == a else a
        other = np.asarray(ctx.const(consts[0]), dtype=np.float32)
        rank = ctx.rank(act)
        if other.ndim > rank:
            raise NotConvertible("the constant has a higher rank than the activation")
        if rank == 4:
            other = other.reshape((1,) * (4 - other.ndim) + other.shape).transpose(TO_NCHW)
        out_shape = np.broadcast_shapes(ctx.shape(act), other.shape)
        attrs["constant_position"] = op.inputs.index(consts[0])
        out = ctx.set_output(op.outputs[0], out_shape)
        ctx.emit(op.name, kind, [ctx.names[act]], [out], attrs, {"other": other})
        return
    ra, rb = ctx.rank(a), ctx.rank(b)
    if ra != rb and 4 in (ra, rb):
        raise NotConvertible("broadcasting a rank-4 tensor against another rank")
    out = ctx.set_output(op.outputs[0], np.broadcast_shapes(ctx.shape(a), ctx.shape(b)))
    ctx.emit(op.name, kind, [ctx.names[a], ctx.names[b]], [out], attrs)


@converter("CONCATENATION")
def concatenation(ctx: Context, op: Op) -> None:
    if any(ctx.is_const(t) for t in op.inputs):
        raise NotConvertible("constant inputs")
    shapes = [ctx.shape(t) for t in op.inputs]
    rank = len(shapes[0])
    axis = ir_axis(int(op.opt("axis", 0)), rank)
    out_shape = list(shapes[0])
    out_shape[axis] = sum(s[axis] for s in shapes)
    out = ctx.set_output(op.outputs[0], out_shape)
    ctx.emit(op.name, ir.CONCAT, [ctx.names[t] for t in op.inputs], [out],
             {"axis": axis, **fused(op)})


@converter("PAD", "PADV2")
def pad(ctx: Context, op: Op) -> None:
    """Paddings (rank, 2) in TFLite dim order -> ONNX-style [begins..., ends...] in IR order."""
    x = op.inputs[0]
    shape = ctx.shape(x)
    p = np.asarray(ctx.const(op.inputs[1]), dtype=np.int64).reshape(len(shape), 2)
    if len(shape) == 4:
        p = p[list(TO_NCHW)]
    value = 0.0
    if op.kind == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = float(np.asarray(ctx.const(op.inputs[2])).reshape(-1)[0])
    out_shape = [int(d + p[i, 0] + p[i, 1]) for i, d in enumerate(shape)]
    out = ctx.set_output(op.outputs[0], out_shape)
    attrs = {"pads": [int(v) for v in p[:, 0]] + [int(v) for v in p[:, 1]], "mode": "constant",
             "value": value, "target_shape": out_shape}
    ctx.emit(op.name, ir.PAD, [ctx.names[x]], [out], attrs)


@converter("MEAN")
def mean(ctx: Context, op: Op) -> None:
    """The spatial mean (NHWC axes 1, 2): ``global_avgpool`` with keep_dims, else ``mean``
    over NCHW axes [2, 3] to (N, C). Other reductions stay opaque, as in the ONNX importer."""
    x = op.inputs[0]
    n, c, _, _ = _image(ctx, x)
    axes = sorted({int(a) % 4 for a in np.asarray(ctx.const(op.inputs[1])).reshape(-1)})
    if axes != [1, 2]:
        raise NotConvertible(f"mean over axes {axes}")
    if op.opt("keepDims", False):
        out = ctx.set_output(op.outputs[0], (n, c, 1, 1))
        ctx.emit(op.name, ir.GLOBAL_AVGPOOL, [ctx.names[x]], [out])
        return
    out = ctx.set_output(op.outputs[0], (n, c))
    ctx.emit(op.name, ir.MEAN, [ctx.names[x]], [out], {"axes": [2, 3], "keepdims": 0})


def _target_shape(total: int, shape: list[int]) -> list[int]:
    if shape.count(-1) > 1:
        raise NotConvertible(f"reshape to {shape}")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = total // known if known else 0
    if int(np.prod(shape)) != total:
        raise NotConvertible(f"cannot reshape {total} elements to {shape}")
    return shape


@converter("RESHAPE", "SQUEEZE")
def reshape(ctx: Context, op: Op) -> None:
    """A reshape acts on TFLite's (NHWC) element order: data of a rank-4 input goes to NHWC
    first and a rank-4 result comes back to NCHW (transposes skipped where the orders agree)."""
    x = op.inputs[0]
    tfl_in = to_tflite_shape(ctx.shape(x))
    total = int(np.prod(tfl_in))
    if op.kind == "SQUEEZE":
        dims = {int(d) % len(tfl_in) for d in op.opt("squeezeDims", None) or []}
        target = [d for i, d in enumerate(tfl_in) if not (d == 1 and (not dims or i in dims))]
    elif len(op.inputs) > 1 and op.inputs[1] >= 0 and ctx.is_const(op.inputs[1]):
        target = [int(d) for d in np.asarray(ctx.const(op.inputs[1])).reshape(-1)]
    elif op.opt("newShape", None) is not None:
        target = [int(d) for d in op.opt("newShape")]
    else:
        target = list(ctx.tflite_shapes[op.outputs[0]])
    if target and target[0] == ctx.tflite_shapes[x][0] != tfl_in[0] and -1 not in target:
        target[0] = tfl_in[0]  # a batch the caller overrode
    resized = ctx.resized.get(op.outputs[0])
    if resized is not None and int(np.prod(resized)) == total:
        target = list(resized)  # LiteRT's own answer for the overridden input shapes
    target = _target_shape(total, target)
    src, src_shape = ctx.to_tflite_order(op.name, x)
    ctx.reshape_to_output(op.name, src, src_shape, op.outputs[0], target)


@converter("SOFTMAX")
def softmax(ctx: Context, op: Op) -> None:
    """TFLite's softmax runs over the last axis (C of NHWC: axis 1 in the IR); beta scales."""
    x = op.inputs[0]
    shape = ctx.shape(x)
    attrs: dict[str, Any] = {"axis": ir_axis(-1, len(shape)), "target_shape": list(shape)}
    beta = float(op.opt("beta", 1.0))
    if beta != 1.0:
        attrs["beta"] = beta
    out = ctx.set_output(op.outputs[0], shape)
    ctx.emit(op.name, ir.SOFTMAX, [ctx.names[x]], [out], attrs)


_UNARY = {"RELU": "relu", "RELU6": "relu6", "LOGISTIC": "sigmoid", "TANH": "tanh",
          "HARD_SWISH": "hardswish", "RELU_N1_TO_1": "clip", "LEAKY_RELU": "leakyrelu"}


@converter(*_UNARY)
def activation(ctx: Context, op: Op) -> None:
    x = op.inputs[0]
    kind = _UNARY[op.kind]
    params = {"alpha": float(op.opt("alpha", 0.2))} if kind == "leakyrelu" else {}
    if kind == "clip":
        params = {"min": -1.0, "max": 1.0}
    out = ctx.set_output(op.outputs[0], ctx.shape(x))
    ctx.emit(op.name, ir.ACTIVATION, [ctx.names[x]], [out], act_attrs(kind, params))


@converter("PRELU")
def prelu(ctx: Context, op: Op) -> None:
    """The slope must be one value or one per channel (TF exports (1, 1, C) for images)."""
    x = op.inputs[0]
    shape = ctx.shape(x)
    alpha = np.asarray(ctx.const(op.inputs[1]), dtype=np.float32)
    channels = to_tflite_shape(shape)[-1]
    if alpha.size == 1:
        slope = alpha.reshape(1)
    elif alpha.size == channels and alpha.shape[-1] == channels and len(shape) in (2, 4):
        slope = alpha.reshape(-1)
    else:
        raise NotConvertible(f"slope of shape {list(alpha.shape)} is not per-channel")
    out = ctx.set_output(op.outputs[0], shape)
    ctx.emit(op.name, ir.ACTIVATION, [ctx.names[x]], [out], act_attrs("prelu"), {"slope": slope})


@converter("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR")
def resize(ctx: Context, op: Op) -> None:
    """Also states the ONNX Resize equivalent of TF's flags (coordinate mode, nearest rounding)."""
    x = op.inputs[0]
    n, c, _, _ = _image(ctx, x)
    size = [int(d) for d in np.asarray(ctx.const(op.inputs[1])).reshape(-1)]
    align, half = bool(op.opt("alignCorners", False)), bool(op.opt("halfPixelCenters", False))
    nearest = op.kind == "RESIZE_NEAREST_NEIGHBOR"
    if align:
        coord, rounding = "align_corners", "round_prefer_ceil"
    elif half:
        coord, rounding = ("tf_half_pixel_for_nn" if nearest else "half_pixel"), "floor"
    else:
        coord, rounding = "asymmetric", "floor"
    out_shape = (n, c, size[0], size[1])
    attrs = {"mode": "nearest" if nearest else "linear", "coordinate_transformation_mode": coord,
             "nearest_mode": rounding, "scales": None, "sizes": list(out_shape),
             "align_corners": align, "half_pixel_centers": half}
    out = ctx.set_output(op.outputs[0], out_shape)
    ctx.emit(op.name, ir.RESIZE, [ctx.names[x]], [out], attrs)


def opaque(ctx: Context, op: Op, reason: str | None = None) -> None:
    """Keep the operator for LiteRT: activation inputs stay inputs (NCHW in the IR, so an engine
    transposes rank-4 ones to NHWC), constant inputs become weights ``input<i>``."""
    acts = [t for t in op.inputs if t >= 0 and t in ctx.shapes]
    consts = {f"input{i}": ctx.consts[t] for i, t in enumerate(op.inputs) if t in ctx.consts}
    attrs: dict[str, Any] = {"tflite_op": op.kind, "layout": "NHWC",
                             "tflite_inputs": [ctx.names[t] if t >= 0 else None
                                               for t in op.inputs]}
    if reason:
        attrs["reason"] = reason
    outs = [ctx.set_output(t, to_ir_shape(ctx.resized.get(t, ctx.tflite_shapes[t])))
            for t in op.outputs]
    ctx.emit(op.name, ir.OPAQUE, [ctx.names[t] for t in acts], outs, attrs, consts)
