"""ONNX node -> IR layer converters: a registry keyed by op type, one small function per op.

Every converter returns one :class:`Layer` named after the node, with the node's own output names,
its activation inputs as ``inputs`` and its constant inputs resolved into ``attrs`` or weights. A
converter that meets a case the IR cannot express returns :func:`opaque` instead, so onnxruntime
runs the node and the import never fails on a valid model. Descriptors are filled in later
(:mod:`edgedeploy.importers.descriptor`), after fusion has changed what a layer computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from edgedeploy.importers.onnx_prep import Prepared, outer_scope_inputs
from edgedeploy.runtime import ir
from edgedeploy.runtime.ir import Descriptor, Layer

Converter = Callable[["Ctx", onnx.NodeProto], Layer]
CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    """Register a converter for ONNX op types of the default domain."""
    def wrap(fn: Converter) -> Converter:
        for op in op_types:
            CONVERTERS[op] = fn
        return fn
    return wrap


@dataclass
class Ctx:
    """What converters see: shapes, constants, and the weight store they add to."""

    prep: Prepared
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)

    @property
    def opset(self) -> int:
        return self.prep.opset

    def shape(self, name: str) -> tuple[int, ...]:
        return self.prep.shapes[name]

    def is_const(self, name: str) -> bool:
        return bool(name) and name in self.prep.consts

    def const(self, name: str) -> np.ndarray:
        return self.prep.consts[name]

    def opt_const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """A constant optional input, None when absent ('' or missing)."""
        if len(node.input) > index and node.input[index] and self.is_const(node.input[index]):
            return self.const(node.input[index])
        return None

    def has_input(self, node: onnx.NodeProto, index: int) -> bool:
        return len(node.input) > index and bool(node.input[index])

    def weight(self, name: str) -> str:
        """Use a constant tensor as a weight under its own (original) name."""
        self.weights.setdefault(name, np.asarray(self.const(name)))
        return name

    def derived(self, owner: str, role: str, value: np.ndarray) -> str:
        """Store a weight computed at import time under a fresh deterministic key."""
        key, k = f"{owner}::{role}", 1
        while key in self.weights or key in self.prep.consts:
            key, k = f"{owner}::{role}{k}", k + 1
        self.weights[key] = np.ascontiguousarray(value)
        return key

    def activations(self, node: onnx.NodeProto) -> list[str]:
        return [i for i in node.input if i and not self.is_const(i)]


def attrs_of(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _decode(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def layer(node: onnx.NodeProto, op: str, inputs: list[str], attrs: dict[str, Any] | None = None,
          weights: dict[str, str] | None = None) -> Layer:
    return Layer(name=node.name, op=op, inputs=list(inputs),
                 outputs=[o for o in node.output if o], descriptor=Descriptor(op),
                 attrs=dict(attrs or {}), weights=dict(weights or {}))


def opaque(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    """Keep a node as it is, for onnxruntime: constant inputs become weights ``input<i>``."""
    weights = {f"input{i}": ctx.weight(n) for i, n in enumerate(node.input) if ctx.is_const(n)}
    attrs = {
        "onnx_op_type": node.op_type,
        "domain": node.domain or "ai.onnx",
        "onnx_attrs": {a.name: _jsonable_attr(a) for a in node.attribute},
        "onnx_inputs": list(node.input),
    }
    acts = ctx.activations(node)
    acts += [t for t in outer_scope_inputs(node) if not ctx.is_const(t) and t not in acts]
    return layer(node, ir.OPAQUE, acts, attrs, weights)


def _jsonable_attr(a: onnx.AttributeProto) -> Any:
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return "<subgraph>"
    value = onnx.helper.get_attribute_value(a)
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value).tolist()
    if isinstance(value, (list, tuple)):
        return [_decode(v) if not isinstance(v, onnx.TensorProto) else "<tensor>" for v in value]
    if hasattr(value, "SerializeToString"):
        return f"<{type(value).__name__}>"
    return _decode(value)


def convert(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    fn = CONVERTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    return fn(ctx, node) if fn else opaque(ctx, node)


def act_attrs(kind: str, **params: float) -> dict[str, Any]:
    return {"activation": kind, "activation_params": {k: float(v) for k, v in params.items()}}


# --- windows (conv and pools) -----------------------------------------------------------------
def resolve_pads(a: dict[str, Any], in_hw: tuple[int, int], kernel: tuple[int, int],
                 strides: list[int], dilations: list[int]) -> list[int]:
    """[top, left, bottom, right] from ``pads`` or ``auto_pad`` (SAME_UPPER: odd pixel last)."""
    auto = _decode(a.get("auto_pad", "NOTSET"))
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        return [int(p) for p in pads] if len(pads) == 4 else [0, 0, 0, 0]
    if auto == "VALID":
        return [0, 0, 0, 0]
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return [begin[0], begin[1], end[0], end[1]]


def _window(a: dict[str, Any], in_hw: tuple[int, int], kernel: tuple[int, int]) -> dict[str, Any]:
    strides = [int(s) for s in a.get("strides", [1, 1])]
    dilations = [int(d) for d in a.get("dilations", [1, 1])]
    return {"kernel": list(kernel), "strides": strides, "dilations": dilations,
            "pads": resolve_pads(a, in_hw, kernel, strides, dilations)}


@converter("Conv")
def _conv(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    x, w = node.input[0], node.input[1]
    has_b = ctx.has_input(node, 2)
    if (ctx.is_const(x) or not ctx.is_const(w) or ctx.const(w).ndim != 4
            or len(ctx.shape(x)) != 4 or (has_b and not ctx.is_const(node.input[2]))):
        return opaque(ctx, node)
    a = attrs_of(node)
    wv = ctx.const(w)
    attrs = _window(a, ctx.shape(x)[2:], (int(wv.shape[2]), int(wv.shape[3])))
    attrs.update(group=int(a.get("group", 1)), **act_attrs("none"))
    weights = {"weight": _float_weight(ctx, node, "weight", w)}
    if has_b:
        weights["bias"] = _float_weight(ctx, node, "bias", node.input[2])
    return layer(node, ir.CONV2D, [x], attrs, weights)


def _float_weight(ctx: Ctx, node: onnx.NodeProto, role: str, name: str) -> str:
    value = ctx.const(name)
    if value.dtype == np.float32:
        return ctx.weight(name)
    return ctx.derived(node.name, role, value.astype(np.float32))


@converter("Gemm")
def _gemm(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    a = attrs_of(node)
    x, b = node.input[0], node.input[1]
    if (a.get("transA", 0) or ctx.is_const(x) or not ctx.is_const(b) or ctx.const(b).ndim != 2
            or len(ctx.shape(x)) != 2):
        return opaque(ctx, node)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    bv = ctx.const(b)
    w = bv if a.get("transB", 0) else bv.T
    c_out = w.shape[0]
    weights: dict[str, str] = {}
    if alpha == 1.0 and a.get("transB", 0) and bv.dtype == np.float32:
        weights["weight"] = ctx.weight(b)
    else:
        weights["weight"] = ctx.derived(node.name, "weight", (alpha * w).astype(np.float32))
    if ctx.has_input(node, 2):
        cv = ctx.opt_const(node, 2)
        if cv is None or cv.size not in (1, c_out) or (cv.ndim == 2 and cv.shape[0] != 1):
            return opaque(ctx, node)
        bias = np.broadcast_to((beta * cv).reshape(-1), (c_out,)).astype(np.float32)
        weights["bias"] = ctx.derived(node.name, "bias", bias)
    return layer(node, ir.DENSE, [x], act_attrs("none"), weights)


@converter("MatMul")
def _matmul(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    x, b = node.input
    if ctx.is_const(x) or not ctx.is_const(b) or ctx.const(b).ndim != 2 or len(ctx.shape(x)) < 2:
        return opaque(ctx, node)
    w = ctx.derived(node.name, "weight", ctx.const(b).T.astype(np.float32))
    return layer(node, ir.DENSE, [x], act_attrs("none"), {"weight": w})


# --- activations ------------------------------------------------------------------------------
def _activation(node: onnx.NodeProto, kind: str, weights: dict[str, str] | None = None,
                **params: float) -> Layer:
    return layer(node, ir.ACTIVATION, [node.input[0]], act_attrs(kind, **params), weights)


@converter("Relu", "Sigmoid", "Tanh", "HardSwish")
def _simple_act(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    if ctx.is_const(node.input[0]):
        return opaque(ctx, node)
    return _activation(node, node.op_type.lower())


@converter("LeakyRelu")
def _leaky(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    return _activation(node, "leakyrelu", alpha=attrs_of(node).get("alpha", 0.01))


@converter("HardSigmoid")
def _hardsigmoid(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    a = attrs_of(node)
    return _activation(node, "hardsigmoid", alpha=a.get("alpha", 0.2), beta=a.get("beta", 0.5))


@converter("PRelu")
def _prelu(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    if ctx.is_const(node.input[0]) or not ctx.is_const(node.input[1]):
        return opaque(ctx, node)
    return _activation(node, "prelu", {"slope": ctx.weight(node.input[1])})


@converter("Clip")
def _clip(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    """Clip(0, 6) is ReLU6, Clip(0, inf) is ReLU; min/max are inputs from opset 11 on."""
    if ctx.is_const(node.input[0]):
        return opaque(ctx, node)
    if ctx.opset < 11:
        a = attrs_of(node)
        lo, hi = a.get("min"), a.get("max")
    else:
        if any(ctx.has_input(node, i) and not ctx.is_const(node.input[i]) for i in (1, 2)):
            return opaque(ctx, node)
        lo_v, hi_v = ctx.opt_const(node, 1), ctx.opt_const(node, 2)
        lo = None if lo_v is None else float(lo_v)
        hi = None if hi_v is None else float(hi_v)
    if lo == 0.0 and hi == 6.0:
        return _activation(node, "relu6")
    if lo == 0.0 and (hi is None or math.isinf(hi)):
        return _activation(node, "relu")
    params = {k: float(v) for k, v in (("min", lo), ("max", hi)) if v is not None}
    return _activation(node, "clip", **params)


@converter("BatchNormalization")
def _batchnorm(ctx: Ctx, node: onnx.NodeProto) -> Layer:
    """Inference-mode BN: an opaque layer marked ``bn`` that :mod:`fold` folds or rewrites."""
    base = opaque(ctx, node)
    a = attrs_of(node)
    extra_used = any(o and ctx.consumers.get(o) for o in node.output[1:])
    params = node.input[1:5]
    if a.get("training_mode", 0) or extra_used or len(params) != 4 \
            or not all(ctx.is_const(p) for p in params) or ctx.is_const(node.input[0]):
        return base
    base.outputs = [node.output[0]]
    roles = ("scale", "bias", "mean", "var")
    base.weights = {role: ctx.weight(p) for role, p in zip(roles, params, strict=True)}
    base.attrs["bn"] = {"epsilon": float(a.get("epsilon", 1e-5))}
    return base
