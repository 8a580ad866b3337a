"""Quantized and stateful TFLite operators: which ones LiteRT keeps, and their parameters.

Why: edgedeploy's native primitives compute in float32; LiteRT runs int8/uint8 kernels (per
tensor and per channel) and hybrid ones (float activations, int8 weights) with arithmetic the
float IR cannot reproduce bit for bit. So an operator that reads or writes an integer-quantized
tensor imports as an opaque layer that a LiteRT segment runs (cut from the original file, so
its tensors keep their types and scales), and the quantized tensors keep their element type in
the IR, crossing stage boundaries as int8/uint8. The scales are recorded in
``Graph.source["quantization"]`` for the activations (what a boundary or a caller sees).

Streaming models keep state in resource variables (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE,
initialised by CALL_ONCE): a cut between a variable's writer and its reader would lose the
state, so such a model imports as one opaque layer, the whole model, that LiteRT runs in one
interpreter (each pipeline replica keeps its own state).

Weights stored in another form fold into float32 constants with no layer: DEQUANTIZE of float16
or of int8 with scales, DENSIFY of a sparse constant (densified by :mod:`tflite_sparse`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgedeploy.importers.tflite_context import Context, NotConvertible
from edgedeploy.importers.tflite_ops import Op, converter, opaque

_TT = schema.TensorType
QUANTIZED_TYPES = frozenset({_TT.INT8, _TT.UINT8, _TT.INT16, _TT.INT4, _TT.UINT4, _TT.INT2})
STATEFUL_OPS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"})
#: Operators that only turn stored weights into float (folded on import, no layer).
_WEIGHT_ONLY = frozenset({"DEQUANTIZE", "DENSIFY"})


def quant_params(sg: Any) -> tuple[frozenset[int], dict[int, tuple[np.ndarray, np.ndarray, int]]]:
    """(indices of integer-quantized tensors, index -> (scale, zero_point, axis))."""
    quantized: set[int] = set()
    params: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
    for i, t in enumerate(sg.tensors or []):
        q = t.quantization
        scale = None if q is None or q.scale is None else np.asarray(q.scale, np.float32)
        if t.type in QUANTIZED_TYPES:
            quantized.add(i)
        if scale is not None and scale.size:
            zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.int64)
            params[i] = (scale, zero, int(q.quantizedDimension or 0))
    return frozenset(quantized), params


def stateful_ops(kinds: set[str]) -> list[str]:
    """The resource-variable operators among ``kinds`` (empty for a stateless model)."""
    return sorted(kinds & STATEFUL_OPS)


def litert_only(ctx: Context, op: Op, stateful: list[str]) -> str | None:
    """Why ``op`` must stay a LiteRT operator, or None when the IR may take it."""
    if stateful:
        return f"stateful model (resource variables: {', '.join(stateful)})"
    tensors = [t for t in (*op.inputs, *op.outputs) if t >= 0]
    if op.kind in _WEIGHT_ONLY and all(ctx.is_const(t) for t in op.inputs if t >= 0):
        return None
    if any(t in ctx.quantized for t in tensors):
        return "quantized operator (integer tensors with scales): LiteRT runs its kernel"
    return None


def activation_quantization(ctx: Context) -> dict[str, dict[str, Any]]:
    """Scales of the quantized activation tensors, by IR name (JSON-friendly)."""
    out: dict[str, dict[str, Any]] = {}
    for t, (scale, zero, axis) in sorted(ctx.quant_params.items()):
        if t in ctx.consts or t not in ctx.shapes or t not in ctx.quantized:
            continue
        out[ctx.names[t]] = {"dtype": ctx.dtypes.get(t, "?"),
                             "scale": [float(s) for s in scale],
                             "zero_point": [int(z) for z in zero], "axis": axis}
    return out


def whole_model_layer(ctx: Context, inputs: list[int], outputs: list[int], n_ops: int,
                      stateful: list[str]) -> None:
    """The whole subgraph as one opaque layer (graph inputs to graph outputs) for LiteRT."""
    op = Op(name="litert_model", kind="STATEFUL_MODEL", inputs=inputs, outputs=outputs,
            options=None)
    opaque(ctx, op, f"stateful model (resource variables: {', '.join(stateful)}): runs whole")
    ctx.layers[-1].attrs["tflite_ops"] = [0, max(n_ops - 1, 0)]


@converter("DEQUANTIZE")
def dequantize(ctx: Context, op: Op) -> None:
    """float16 weights behind DEQUANTIZE fold into float32 constants: no layer; so do int8
    weights with their scales (``(q - zero_point) * scale``, per channel along the quantized
    dimension), which is what LiteRT's float kernel after the DEQUANTIZE computes with."""
    src = ctx.const(op.inputs[0])
    if src.dtype == np.float16:
        ctx.consts[op.outputs[0]] = src.astype(np.float32)
        return
    params = ctx.quant_params.get(op.inputs[0])
    if src.dtype.kind not in "iu" or params is None:
        raise NotConvertible(f"dequantize of {src.dtype} without scales")
    ctx.consts[op.outputs[0]] = dequantized(src, *params)


def dequantized(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                axis: int) -> np.ndarray:
    """Real values of a quantized array: per tensor (one scale) or per channel along ``axis``."""
    scale = np.asarray(scale, np.float32).reshape(-1)
    zero = np.asarray(zero_point, np.float32).reshape(-1)
    if scale.size > 1 and q.ndim:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = scale.size
        scale, zero = scale.reshape(shape), np.broadcast_to(zero, scale.shape).reshape(shape)
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


@converter("DENSIFY")
def densify(ctx: Context, op: Op) -> None:
    """A sparse constant was densified on import (:mod:`tflite_sparse`): DENSIFY is a no-op."""
    ctx.consts[op.outputs[0]] = ctx.const(op.inputs[0])
