"""Pooling and reductions: ``maxpool``, ``avgpool``, ``global_avgpool``, ``mean``.

Reads:
* maxpool / avgpool (NCHW input): the window comes from the descriptor (``kernel_h/w``,
  ``stride_h/w``, ``pad_top/left/bottom/right``, ``dilation_h/w``); ``attrs["ceil_mode"]``
  (default 0) and, for avgpool, ``attrs["count_include_pad"]`` (default 0).
* global_avgpool: nothing (mean over every axis after the channel axis, dims kept).
* mean: ``attrs["axes"]`` (default: all axes) and ``attrs["keepdims"]`` (default 1), ONNX
  ReduceMean semantics; ``attrs["noop_with_empty_axes"]`` is honoured too.

Output sizes and divisors follow onnxruntime's pooling kernels: in ceil mode a window that would
start in the right padding is dropped; with ``count_include_pad`` the divisor counts window taps
inside the padded extent (never taps beyond it that only ceil mode added).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edgedeploy.runtime.ir import AVGPOOL, GLOBAL_AVGPOOL, MAXPOOL, MEAN, Layer
from edgedeploy.runtime.ops.registry import attr, int_list, register


def pool_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a pooling window along one axis (ONNX/onnxruntime rules)."""
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= size + pad_begin:  # last window must start inside image + pad
        out -= 1
    return out


def _axis_plan(size: int, kernel: int, stride: int, pb: int, pe: int, dil: int,
               ceil_mode: bool) -> tuple[int, int]:
    """(output length, extra end padding needed so every window lies inside the array)."""
    out = pool_output_size(size, kernel, stride, pb, pe, dil, ceil_mode)
    if out < 1:
        raise ValueError(f"pooling window {kernel} (dilation {dil}) larger than padded input "
                         f"{size}+{pb}+{pe}")
    need = (out - 1) * stride + dil * (kernel - 1) + 1 - (size + pb + pe)
    return out, max(0, need)


def _windows(layer: Layer, x: np.ndarray, fill: float):
    """Views of the padded input, one per kernel tap, and the output height and width."""
    d = layer.descriptor
    if x.ndim != 4:
        raise ValueError(f"{layer.op} expects an NCHW input, got shape {x.shape}")
    ceil_mode = bool(layer.attrs.get("ceil_mode", 0))
    oh, eh = _axis_plan(x.shape[2], d.kernel_h, d.stride_h, d.pad_top, d.pad_bottom,
                        d.dilation_h, ceil_mode)
    ow, ew = _axis_plan(x.shape[3], d.kernel_w, d.stride_w, d.pad_left, d.pad_right,
                        d.dilation_w, ceil_mode)
    xp = np.pad(x, ((0, 0), (0, 0), (d.pad_top, d.pad_bottom + eh),
                    (d.pad_left, d.pad_right + ew)), constant_values=fill)
    taps = []
    for i in range(d.kernel_h):
        r0 = i * d.dilation_h
        for j in range(d.kernel_w):
            c0 = j * d.dilation_w
            taps.append(xp[:, :, r0:r0 + (oh - 1) * d.stride_h + 1:d.stride_h,
                           c0:c0 + (ow - 1) * d.stride_w + 1:d.stride_w])
    return taps, oh, ow


@register(MAXPOOL)
def maxpool(layer: Layer, inputs: list[np.ndarray],
            weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    # onnxruntime starts every window at the lowest finite value, so an all-padding window
    # yields that value, not -inf.
    lowest = np.finfo(x.dtype).min if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    taps, _, _ = _windows(layer, x, lowest)
    y = np.maximum(taps[0], lowest)
    for t in taps[1:]:
        np.maximum(y, t, out=y)
    return [y]


def _tap_counts(size: int, out: int, kernel: int, stride: int, pb: int, pe: int, dil: int,
                include_pad: bool) -> np.ndarray:
    """Per output position along one axis: how many taps the divisor counts."""
    starts = np.arange(out)[:, None] * stride - pb + np.arange(kernel)[None, :] * dil
    lo, hi = (-pb, size + pe) if include_pad else (0, size)
    return ((starts >= lo) & (starts < hi)).sum(axis=1)


@register(AVGPOOL)
def avgpool(layer: Layer, inputs: list[np.ndarray],
            weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    d = layer.descriptor
    taps, oh, ow = _windows(layer, x, 0.0)
    acc = taps[0].astype(np.result_type(x.dtype, np.float32), copy=True)
    for t in taps[1:]:
        acc += t
    include = bool(layer.attrs.get("count_include_pad", 0))
    ch = _tap_counts(x.shape[2], oh, d.kernel_h, d.stride_h, d.pad_top, d.pad_bottom,
                     d.dilation_h, include)
    cw = _tap_counts(x.shape[3], ow, d.kernel_w, d.stride_w, d.pad_left, d.pad_right,
                     d.dilation_w, include)
    divisor = np.maximum(np.outer(ch, cw), 1).astype(acc.dtype)
    acc /= divisor
    return [acc]


@register(GLOBAL_AVGPOOL)
def global_avgpool(layer: Layer, inputs: list[np.ndarray],
                   weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    return [x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype)]


@register(MEAN)
def mean(layer: Layer, inputs: list[np.ndarray],
         weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    axes = int_list(attr(layer, weights, "axes"))
    keepdims = bool(layer.attrs.get("keepdims", 1))
    if not axes:
        if layer.attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.ndim))
    axis = tuple(a % x.ndim for a in axes)
    return [x.mean(axis=axis, keepdims=keepdims, dtype=x.dtype)]
