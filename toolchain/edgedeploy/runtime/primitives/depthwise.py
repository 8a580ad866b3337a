"""Depthwise convolution (one filter per input channel, depth multiplier M >= 1).

A GEMM has nothing to reduce over here, so every kernel tap is one broadcast multiply-add over all
channels and pixels: memory-bound, and the natural choice for MobileNet-style layers.
"""

from __future__ import annotations

import numpy as np

from ..ir import Descriptor
from .registry import (
    NCHW,
    NHWC,
    Activation,
    Columns,
    CostTerms,
    Primitive,
    Weights,
    finish,
    is_conv,
    keep_bias_slope,
    pad_nchw,
    pad_nhwc,
    padded_bytes,
    register,
    tap_slice,
)


def _applies(d: Descriptor) -> bool:
    return is_conv(d) and d.groups == d.c_in and d.c_out % d.c_in == 0


def _taps(d: Descriptor, weights: Weights) -> np.ndarray:
    """OIHW (C*M, 1, kh, kw) -> (taps, C, M): output channel c*M + m reads input channel c."""
    w = np.asarray(weights["weight"], dtype=np.float32)
    mult = d.c_out // d.c_in
    return w.reshape(d.c_in, mult, d.kernel_h * d.kernel_w).transpose(2, 0, 1)


def _pack_nchw(d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
    taps = _taps(d, weights)[..., None, None]  # broadcast over (Ho, Wo)
    return {"weight": np.ascontiguousarray(taps), **keep_bias_slope(weights)}


def _pack_nhwc(d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
    return {"weight": np.ascontiguousarray(_taps(d, weights)), **keep_bias_slope(weights)}


def _workspace(d: Descriptor) -> int:
    return padded_bytes(d) + 4 * d.n * d.c_out * d.h_out * d.w_out  # padded input, one temporary


def _work(c: Columns) -> dict[str, np.ndarray]:
    """No GEMM: every tap is a broadcast multiply into a temporary and an add (12 bytes per
    output element and tap), two numpy calls per tap."""
    return {"copy": 12.0 * c["taps"] * c["c_out"] * c["pixels"] + c["io"],
            "calls": 2.0 * c["taps"] + 3}


#: Memory-bound numpy passes on one thread: nothing for BLAS, nothing parallel.
COST = CostTerms(gemm_eff=0.0, parallel=0.0, work=_work)


def _run_nchw(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    xp = pad_nchw(x, d)
    wt = packed["weight"]
    y = np.zeros((d.n, d.c_in, wt.shape[2], d.h_out, d.w_out), dtype=np.float32)
    tmp = np.empty_like(y)
    for i in range(d.kernel_h):
        for j in range(d.kernel_w):
            rows, cols = tap_slice(d, i, j)
            y += np.multiply(xp[:, :, None, rows, cols], wt[i * d.kernel_w + j], out=tmp)
    return finish(y.reshape(d.n, d.c_out, d.h_out, d.w_out), packed, act, 1)


def _run_nhwc(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    xp = pad_nhwc(x, d)
    wt = packed["weight"]
    y = np.zeros((d.n, d.h_out, d.w_out, d.c_in, wt.shape[2]), dtype=np.float32)
    tmp = np.empty_like(y)
    for i in range(d.kernel_h):
        for j in range(d.kernel_w):
            rows, cols = tap_slice(d, i, j)
            y += np.multiply(xp[:, rows, cols, :, None], wt[i * d.kernel_w + j], out=tmp)
    return finish(y.reshape(d.n, d.h_out, d.w_out, d.c_out), packed, act, 3)


register(Primitive("depthwise/nchw", "depthwise", "conv2d", NCHW, NCHW, _applies, _pack_nchw,
                   _workspace, _run_nchw, COST))
register(Primitive("depthwise/nhwc", "depthwise", "conv2d", NHWC, NHWC, _applies, _pack_nhwc,
                   _workspace, _run_nhwc, COST))
