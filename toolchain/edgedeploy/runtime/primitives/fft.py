"""FFT convolution (Mathieu, Henaff & LeCun, "Fast Training of Convolutional Networks through
FFTs", 2014): correlation is a pointwise product in the frequency domain.

The kernels are transformed offline at the padded input size the descriptor fixes (rounded up to a
2-3-5-smooth size), so at run time only the input's rfft2, one complex batched matmul summing over
C_in per frequency, and the output's irfft2 remain. Pays off for large kernels; its transformed
weights grow with H x W, which ``workspace_bytes`` reports.
"""

from __future__ import annotations

import numpy as np

from ..ir import Descriptor
from .registry import (
    NCHW,
    Activation,
    Columns,
    CostTerms,
    Primitive,
    Weights,
    finish,
    is_conv,
    keep_bias_slope,
    pad_nchw,
    register,
)


def _applies(d: Descriptor) -> bool:
    return (is_conv(d) and d.stride == (1, 1) and d.dilation == (1, 1) and d.groups == 1
            and min(d.kernel) >= 3)


def next_fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (pocketfft is fastest on such sizes)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


#: Every 2^a 3^b 5^c up to 2^14, for :func:`fast_lens` (the sizes the cost model prices).
_SMOOTH = np.array(sorted({2**a * 3**b * 5**c for a in range(14) for b in range(9)
                           for c in range(6) if 2**a * 3**b * 5**c <= 1 << 14}), dtype=np.float64)


def fast_lens(n: np.ndarray) -> np.ndarray:
    """:func:`next_fast_len` of every element, vectorised (sizes above 2^14 price as 2^14)."""
    idx = np.searchsorted(_SMOOTH, np.maximum(n, 1))
    return _SMOOTH[np.minimum(idx, len(_SMOOTH) - 1)]


def fft_shape(d: Descriptor) -> tuple[int, int]:
    return (next_fast_len(d.h + d.pad_top + d.pad_bottom),
            next_fast_len(d.w + d.pad_left + d.pad_right))


def _pack(d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
    fh, fw = fft_shape(d)
    w = np.asarray(weights["weight"], dtype=np.float32)
    wf = np.conj(np.fft.rfft2(w, s=(fh, fw)))  # conj: correlation, not convolution
    wf = wf.reshape(d.c_out, d.c_in, -1).transpose(2, 0, 1)  # (freqs, C_out, C_in)
    return {"weight": np.ascontiguousarray(wf, dtype=np.complex64), **keep_bias_slope(weights)}


def _workspace(d: Descriptor) -> int:
    fh, fw = fft_shape(d)
    freqs = fh * (fw // 2 + 1)
    padded = d.n * d.c_in * fh * fw * 4
    return padded + 8 * freqs * d.n * 2 * (d.c_in + d.c_out) + 4 * d.n * d.c_out * fh * fw


def _work(c: Columns) -> dict[str, np.ndarray | float]:
    """Forward and inverse real FFTs, 2.5 N log2 N per channel (half Cooley-Tukey's 5 N log2 N),
    are scalar code outside BLAS. The pointwise products are one batched complex GEMV per
    frequency (n = 1): bound by reading the 8 F C_in C_out bytes of weight spectra once, not by
    arithmetic (Mathieu et al. 2014). Copies: the input and output spectra, input and output."""
    fh, fw = fast_lens(c["h"] + c["pad_h"]), fast_lens(c["w"] + c["pad_w"])
    nf, freqs = fh * fw, fh * (np.floor(fw / 2) + 1)
    return {"serial": 2.5 * nf * np.log2(np.maximum(nf, 2)) * c["n"] * (c["c_in"] + c["c_out"]),
            "dram": 8.0 * freqs * c["c_in"] * c["c_out"],
            "copy": 8.0 * freqs * c["n"] * 2 * (c["c_in"] + c["c_out"]) + c["io"],
            "calls": 10.0}


#: pocketfft is scalar code: about 1 FLOP/cycle of a 16-32 FLOP/cycle core (serial_eff 0.08);
#: nothing goes to BLAS (gemm_eff is moot) and nothing runs in parallel.
COST = CostTerms(gemm_eff=0.05, parallel=0.0, work=_work, serial_eff=0.08)


def _run(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    fh, fw = fft_shape(d)
    xf = np.fft.rfft2(pad_nchw(x, d), s=(fh, fw)).astype(np.complex64, copy=False)
    xf = xf.reshape(d.n, d.c_in, -1).transpose(2, 1, 0)  # (freqs, C_in, n)
    yf = np.matmul(packed["weight"], xf)  # (freqs, C_out, n)
    yf = yf.transpose(2, 1, 0).reshape(d.n, d.c_out, fh, fw // 2 + 1)
    y = np.fft.irfft2(yf, s=(fh, fw))[:, :, :d.h_out, :d.w_out]
    return finish(np.ascontiguousarray(y, dtype=np.float32), packed, act, 1)


register(Primitive("fft/nchw", "fft", "conv2d", NCHW, NCHW, _applies, _pack, _workspace, _run,
                   COST))
