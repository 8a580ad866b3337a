"""Filling a layer's :class:`Descriptor` from its attrs, weights and the tensor shapes.

Shared by the importers so every format describes layers the same way. Tensors that are not 4-D
map onto N, C, H, W "sensibly": rank 2 ``(N, C)``; rank 3 ``(N, C, L)`` puts L in H; rank 1 is C;
rank 5+ folds the middle dims into H. A dense layer's C is its input features (the last dim) and
its N everything before it, so ``N * C_in * C_out`` stays its MAC count.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.ir import Descriptor, Layer


def nchw(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(N, C, H, W) of a tensor of any rank (see the module docstring)."""
    s = [int(d) for d in shape]
    if len(s) == 0:
        return (1, 1, 1, 1)
    if len(s) == 1:
        return (1, s[0], 1, 1)
    if len(s) == 2:
        return (s[0], s[1], 1, 1)
    if len(s) == 3:
        return (s[0], s[1], s[2], 1)
    if len(s) == 4:
        return (s[0], s[1], s[2], s[3])
    return (s[0], s[1], int(np.prod(s[2:-1])), s[-1])


def _elems(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


_INT8_TYPES = frozenset({"int8", "uint8"})


def precision_of(layer: Layer, dtypes: Mapping[str, str] | None = None) -> str:
    """The arithmetic a layer asks for: the importer's ``attrs["precision"]`` (a QDQ-wrapped
    conv whose weights are int8), else int8 when a tensor it reads or writes is 8-bit integer
    (quantized operators, QuantizeLinear / DequantizeLinear), fp16 when one is float16."""
    given = layer.attrs.get("precision")
    if given in ir.PRECISIONS:
        return str(given)
    kinds = {str((dtypes or {}).get(t, "float32")) for t in [*layer.inputs, *layer.outputs]}
    if kinds & _INT8_TYPES:
        return "int8"
    return "fp16" if "float16" in kinds else "fp32"


def build_descriptor(layer: Layer, shapes: Mapping[str, tuple[int, ...]],
                     weights: Mapping[str, np.ndarray],
                     dtypes: Mapping[str, str] | None = None) -> Descriptor:
    """The descriptor of ``layer`` as it stands (after fusion); ``dtypes`` (tensor name ->
    element type) decides its precision where the importer did not state one."""
    in_shape = shapes[layer.inputs[0]] if layer.inputs else ()
    out_shape = shapes[layer.outputs[0]] if layer.outputs else ()
    n, c, h, w = nchw(in_shape)
    _, c_out, h_out, w_out = nchw(out_shape)
    a = layer.attrs
    fields: dict[str, object] = {
        "n": n, "c_in": c, "h": h, "w": w, "c_out": c_out, "h_out": h_out, "w_out": w_out,
        "elems_in": sum(_elems(shapes[t]) for t in layer.inputs),
        "elems_out": sum(_elems(shapes[t]) for t in layer.outputs),
        "activation": str(a.get("activation", "none")),
        "has_bias": "bias" in layer.weights,
        "precision": precision_of(layer, dtypes),
    }
    if "kernel" in a:
        kh, kw = (int(k) for k in a["kernel"])
        sh, sw = (int(s) for s in a.get("strides", [1, 1]))
        dh, dw = (int(d) for d in a.get("dilations", [1, 1]))
        top, left, bottom, right = (int(p) for p in a.get("pads", [0, 0, 0, 0]))
        fields.update(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, dilation_h=dh,
                      dilation_w=dw, pad_top=top, pad_left=left, pad_bottom=bottom,
                      pad_right=right)
    if layer.op == ir.CONV2D:
        fields["groups"] = int(a.get("group", 1))
    elif layer.op == ir.DENSE:
        weight = weights[layer.weights["weight"]]
        lead = in_shape[:-1] if len(in_shape) >= 1 else ()
        fields.update(n=_elems(tuple(lead)), c_in=int(weight.shape[1]), h=1, w=1,
                      c_out=int(weight.shape[0]), h_out=1, w_out=1)
    return Descriptor(op=layer.op, **fields)  # type: ignore[arg-type]
