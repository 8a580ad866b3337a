"""1x1 convolution as one GEMM: no unfolding at all (a strided 1x1 subsamples first).

Applies to 1x1 kernels without padding or dilation and with one group — the pointwise layers that
carry most of the MACs of bottleneck and MobileNet-style networks.
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
    gemm_rows_cols,
    is_conv,
    keep_bias_slope,
    register,
)


def _applies(d: Descriptor) -> bool:
    return (is_conv(d) and d.kernel == (1, 1) and not any(d.pads) and d.dilation == (1, 1)
            and d.groups == 1)


def _pack_nchw(d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
    w = np.asarray(weights["weight"], dtype=np.float32).reshape(d.c_out, d.c_in)
    return {"weight": np.ascontiguousarray(w), **keep_bias_slope(weights)}


def _pack_nhwc(d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
    w = np.asarray(weights["weight"], dtype=np.float32).reshape(d.c_out, d.c_in)
    return {"weight": np.ascontiguousarray(w.T), **keep_bias_slope(weights)}


def _workspace(d: Descriptor) -> int:
    if d.stride == (1, 1):
        return 0
    return 4 * d.n * d.c_in * d.h_out * d.w_out  # the subsampled copy


def _work(c: Columns) -> dict[str, np.ndarray]:
    """One GEMM of depth C_in; a strided 1x1 first copies the subsampled input."""
    rows, cols = gemm_rows_cols(c)
    return {"gemm": c["flops"], "m": rows, "n": cols, "k": c["cig"],
            "copy": np.where(c["stride_h"] > 1, c["bytes_in"], 0.0) + c["bytes_out"]}


#: 0.70 of peak: a plain sgemm, as im2col's.
COST = CostTerms(gemm_eff=0.70, parallel=0.95, work=_work)


def _run_nchw(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    if d.stride != (1, 1):
        x = x[:, :, ::d.stride_h, ::d.stride_w][:, :, :d.h_out, :d.w_out]
    xs = x.reshape(d.n, d.c_in, d.h_out * d.w_out)
    y = np.matmul(packed["weight"], xs)
    return finish(y.reshape(d.n, d.c_out, d.h_out, d.w_out), packed, act, 1)


def _run_nhwc(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    if d.stride != (1, 1):
        x = x[:, ::d.stride_h, ::d.stride_w][:, :d.h_out, :d.w_out]
    y = x.reshape(-1, d.c_in) @ packed["weight"]
    return finish(y.reshape(d.n, d.h_out, d.w_out, d.c_out), packed, act, 3)


register(Primitive("gemm_1x1/nchw", "gemm_1x1", "conv2d", NCHW, NCHW, _applies, _pack_nchw,
                   _workspace, _run_nchw, COST))
register(Primitive("gemm_1x1/nhwc", "gemm_1x1", "conv2d", NHWC, NHWC, _applies, _pack_nhwc,
                   _workspace, _run_nhwc, COST))
