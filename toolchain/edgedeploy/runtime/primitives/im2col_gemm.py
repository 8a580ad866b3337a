"""im2col + GEMM (Chellapilla et al., 2006): unfold every receptive field into a column, then one
large matmul per group. Applies to every conv2d; costs a K*C_in x H_out*W_out buffer.
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
    # OIHW -> (G, cog, cig*kh*kw): rows match the (cig, tap) order of the column buffer.
    mat = w.reshape(g, d.c_out // g, -1)
    return {"weight": np.ascontiguousarray(mat), **keep_bias_slope(weights)}


def _pack_nhwc(d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
    g = d.groups
    cog, cig = d.c_out // g, d.c_in // g
    w = np.asarray(weights["weight"], dtype=np.float32).reshape(g, cog, cig, d.kernel_h, d.kernel_w)
    # -> (G, kh*kw*cig, cog): rows match the (tap, cig) order of the NHWC column buffer.
    mat = w.transpose(0, 3, 4, 2, 1).reshape(g, -1, cog)
    return {"weight": np.ascontiguousarray(mat), **keep_bias_slope(weights)}


def _workspace(d: Descriptor) -> int:
    cols = d.n * d.c_in * d.kernel_h * d.kernel_w * d.h_out * d.w_out
    return padded_bytes(d) + 4 * (cols + d.n * d.c_out * d.h_out * d.w_out)


def _work(c: Columns) -> dict[str, np.ndarray]:
    """One large GEMM of depth C_in/G x taps; the column buffer is written then read (8 bytes
    per element) besides reading the input and writing the output once."""
    im2col_elems = c["n"] * c["c_in"] * c["taps"] * c["h_out"] * c["w_out"]
    rows, cols = gemm_rows_cols(c)
    return {"gemm": c["flops"], "m": rows, "n": cols, "k": c["cig"] * c["taps"],
            "copy": 8.0 * im2col_elems + c["io"], "calls": c["taps"] + 4}


#: 0.70 of peak: a plain sgemm (OpenBLAS / MLAS reach 70-90 % on large square problems).
COST = CostTerms(gemm_eff=0.70, parallel=0.95, work=_work,
                 same_gemm=SameGemm("gemm_1x1", pointwise))


def _run_nchw(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    g, k = d.groups, d.kernel_h * d.kernel_w
    xp = pad_nchw(x, d)
    cols = np.empty((d.n, d.c_in, k, d.h_out, d.w_out), dtype=np.float32)
    for i in range(d.kernel_h):
        for j in range(d.kernel_w):
            rows, cc = tap_slice(d, i, j)
            cols[:, :, i * d.kernel_w + j] = xp[:, :, rows, cc]
    cols = cols.reshape(d.n, g, (d.c_in // g) * k, d.h_out * d.w_out)
    y = np.matmul(packed["weight"], cols)  # (n, G, cog, P)
    return finish(y.reshape(d.n, d.c_out, d.h_out, d.w_out), packed, act, 1)


def _run_nhwc(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    g, k = d.groups, d.kernel_h * d.kernel_w
    xp = pad_nhwc(x, d)
    p = d.n * d.h_out * d.w_out
    cols = np.empty((d.n, d.h_out, d.w_out, k, d.c_in), dtype=np.float32)
    for i in range(d.kernel_h):
        for j in range(d.kernel_w):
            rows, cc = tap_slice(d, i, j)
            cols[:, :, :, i * d.kernel_w + j] = xp[:, rows, cc, :]
    w = packed["weight"]
    if g == 1:
        y = cols.reshape(p, -1) @ w[0]
    else:
        cg = cols.reshape(p, k, g, d.c_in // g).transpose(2, 0, 1, 3).reshape(g, p, -1)
        y = np.ascontiguousarray(np.matmul(cg, w).transpose(1, 0, 2))
    return finish(y.reshape(d.n, d.h_out, d.w_out, d.c_out), packed, act, 3)


register(Primitive("im2col_gemm/nchw", "im2col_gemm", "conv2d", NCHW, NCHW, is_conv, _pack_nchw,
                   _workspace, _run_nchw, COST))
register(Primitive("im2col_gemm/nhwc", "im2col_gemm", "conv2d", NHWC, NHWC, is_conv, _pack_nhwc,
                   _workspace, _run_nhwc, COST))
