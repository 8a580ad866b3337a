"""Direct convolution: one GEMM per kernel tap, accumulated (no im2col buffer).

The baseline that applies to every conv2d. Each tap (i, j) reads a strided view of the padded input
and multiplies it by the (C_out x C_in) slice of the kernel at that tap, grouped convolutions as one
batched matmul over groups.
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
    SameGemm,
    Weights,
    finish,
    gemm_rows_cols,
    is_conv,
    keep_bias_slope,
    pad_nchw,
    pad_nhwc,
    padded_bytes,
    pointwise,
    register,
    tap_slice,
)


def _pack_nchw(d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
    g = d.groups
    w = np.asarray(weights["weight"], dtype=np.float32)
    cog, cig = d.c_out // g, d.c_in // g
    # OIHW -> (taps, G, cog, cig): the per-tap weight matrix of every group.
    taps = w.reshape(g, cog, cig, d.kernel_h * d.kernel_w).transpose(3, 0, 1, 2)
    return {"weight": np.ascontiguousarray(taps), **keep_bias_slope(weights)}


def _pack_nhwc(d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
    packed = _pack_nchw(d, weights)
    # (taps, G, cig, cog): the right-hand side of (pixels x cig) @ (cig x cog)
    packed["weight"] = np.ascontiguousarray(packed["weight"].transpose(0, 1, 3, 2))
    return packed


def _workspace(d: Descriptor) -> int:
    p = d.n * d.h_out * d.w_out
    return padded_bytes(d) + 4 * p * (d.c_in + 2 * d.c_out)


def _work(c: Columns) -> dict[str, np.ndarray]:
    """One GEMM per tap (reduction over C_in/G only); each tap copies its input slice and
    accumulates into the output in separate numpy passes, three calls per tap."""
    taps, p = c["taps"], c["pixels"]
    rows, cols = gemm_rows_cols(c)
    return {"gemm": c["flops"], "m": rows, "n": cols, "k": c["cig"],
            "copy": 4.0 * taps * p * (c["c_in"] + 2.0 * c["c_out"]), "calls": 3.0 * taps + 2}


#: 0.55 of peak: tap GEMMs are short (depth C_in/G) and accumulate into the output.
COST = CostTerms(gemm_eff=0.55, parallel=0.95, work=_work,
                 same_gemm=SameGemm("gemm_1x1", pointwise))


def _run_nchw(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    g = d.groups
    xp = pad_nchw(x, d)
    wt = packed["weight"]
    p = d.h_out * d.w_out
    y = np.zeros((d.n, g, d.c_out // g, p), dtype=np.float32)
    tmp = np.empty_like(y)
    for i in range(d.kernel_h):
        for j in range(d.kernel_w):
            rows, cols = tap_slice(d, i, j)
            xs = xp[:, :, rows, cols].reshape(d.n, g, d.c_in // g, p)
            y += np.matmul(wt[i * d.kernel_w + j], xs, out=tmp)
    return finish(y.reshape(d.n, d.c_out, d.h_out, d.w_out), packed, act, 1)


def _run_nhwc(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    g = d.groups
    xp = pad_nhwc(x, d)
    wt = packed["weight"]
    p = d.n * d.h_out * d.w_out
    cig, cog = d.c_in // g, d.c_out // g
    y = np.zeros((g, p, cog), dtype=np.float32)
    tmp = np.empty_like(y)
    for i in range(d.kernel_h):
        for j in range(d.kernel_w):
            rows, cols = tap_slice(d, i, j)
            xs = xp[:, rows, cols, :].reshape(p, g, cig).transpose(1, 0, 2)
            y += np.matmul(xs, wt[i * d.kernel_w + j], out=tmp)
    out = y.transpose(1, 0, 2) if g > 1 else y
    out = np.ascontiguousarray(out).reshape(d.n, d.h_out, d.w_out, d.c_out)
    return finish(out, packed, act, 3)


register(Primitive("direct/nchw", "direct", "conv2d", NCHW, NCHW, is_conv, _pack_nchw, _workspace,
                   _run_nchw, COST))
register(Primitive("direct/nhwc", "direct", "conv2d", NHWC, NHWC, is_conv, _pack_nhwc, _workspace,
                   _run_nhwc, COST))
