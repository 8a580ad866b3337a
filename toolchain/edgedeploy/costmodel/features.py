"""Features of a (layer, primitive, core configuration) row, from the descriptor alone.

Everything is vectorised: descriptors become one float64 matrix (:func:`descriptor_matrix`), rows
index it, and every derived count (FLOPs, bytes, Winograd tiles, im2col matrix size, FFT size) is
a numpy expression over whole columns. This is what makes predicting every row of ResNet-50 on a
three-cluster board take milliseconds (issue 4, item 6).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgedeploy.costmodel.configs import CF
from edgedeploy.runtime import ir
from edgedeploy.runtime.vocab import LITERT, NATIVE, ONNXRUNTIME

#: Columns of :func:`descriptor_matrix`.
DESC_FIELDS = ("n", "c_in", "h", "w", "c_out", "h_out", "w_out", "kernel_h", "kernel_w",
               "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w", "groups",
               "elems_in", "elems_out", "macs", "weight_params", "is_conv", "is_dense")
DF = {name: i for i, name in enumerate(DESC_FIELDS)}

#: Conv families the prior knows; a registered primitive of another family is priced as ``direct``.
CONV_FAMILIES = ("direct", "im2col_gemm", "gemm_1x1", "winograd_f2x3", "winograd_f4x3", "fft",
                 "depthwise")

LAYOUTS = ("nchw", "nhwc")
#: Every primitive key with its own learned correction, in a fixed order (one-hot columns).
PRIMITIVE_KEYS = (*(f"{f}/{lay}" for f in CONV_FAMILIES for lay in LAYOUTS), ONNXRUNTIME, NATIVE,
                  LITERT)
PK = {name: i for i, name in enumerate(PRIMITIVE_KEYS)}
#: Family of each key: conv families first, then the engines (onnxruntime, native, litert).
FAMILIES = (*CONV_FAMILIES, ONNXRUNTIME, NATIVE, LITERT)
#: Segment engines of the CPU, priced alike by the prior (vendor GEMM/conv kernels with fusion:
#: MLAS for onnxruntime, XNNPACK for LiteRT); calibration separates them per board.
CPU_ENGINE_FAMILIES = (ONNXRUNTIME, LITERT)
KEY_FAMILY = np.array([FAMILIES.index(k.split("/")[0]) for k in PRIMITIVE_KEYS])
KEY_NHWC = np.array([k.endswith("/nhwc") for k in PRIMITIVE_KEYS], dtype=np.float64)


def primitive_key(name: str) -> int:
    """Index into :data:`PRIMITIVE_KEYS` of a primitive name (unknown families price as direct)."""
    if name in PK:
        return PK[name]
    layout = name.split("/")[-1] if "/" in name else "nchw"
    return PK[f"direct/{layout if layout in LAYOUTS else 'nchw'}"]


def descriptor_matrix(descs: Sequence[ir.Descriptor]) -> np.ndarray:
    """``(len(descs), len(DESC_FIELDS))`` float64 matrix of descriptor facts."""
    rows = [
        (d.n, d.c_in, d.h, d.w, d.c_out, d.h_out, d.w_out, d.kernel_h, d.kernel_w, d.stride_h,
         d.stride_w, d.pad_top + d.pad_bottom, d.pad_left + d.pad_right, d.dilation_h,
         d.dilation_w, max(1, d.groups), d.elems_in, d.elems_out, d.macs, d.weight_params,
         d.op == ir.CONV2D, d.op == ir.DENSE)
        for d in descs
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(DESC_FIELDS))


def next_fast_len(n: np.ndarray) -> np.ndarray:
    """Smallest 2^a 3^b 5^c >= n, vectorised (pocketfft's fast sizes, as the fft primitive pads)."""
    smooth = np.array(sorted({2**a * 3**b * 5**c for a in range(14) for b in range(9)
                              for c in range(6) if 2**a * 3**b * 5**c <= 1 << 14}),
                      dtype=np.float64)
    idx = np.searchsorted(smooth, np.maximum(n, 1))
    return smooth[np.minimum(idx, len(smooth) - 1)]


def counts(dm: np.ndarray) -> dict[str, np.ndarray]:
    """Primitive-specific work counts for each descriptor row (every family's, side by side)."""
    c = {name: dm[:, i] for name, i in DF.items()}
    p = c["n"] * c["h_out"] * c["w_out"]
    taps = c["kernel_h"] * c["kernel_w"]
    cig = np.maximum(c["c_in"] / c["groups"], 1)
    tiles2 = c["n"] * np.ceil(c["h_out"] / 2) * np.ceil(c["w_out"] / 2)
    tiles4 = c["n"] * np.ceil(c["h_out"] / 4) * np.ceil(c["w_out"] / 4)
    fh = next_fast_len(c["h"] + c["pad_h"])
    fw = next_fast_len(c["w"] + c["pad_w"])
    return {
        "flops": 2.0 * c["macs"],
        "pixels": p,
        "taps": taps,
        "cig": cig,
        "cog": np.maximum(c["c_out"] / c["groups"], 1),
        "im2col_elems": c["n"] * c["c_in"] * taps * c["h_out"] * c["w_out"],
        "tiles2": tiles2,
        "tiles4": tiles4,
        "fft_n": fh * fw,
        "fft_freqs": fh * (np.floor(fw / 2) + 1),
        "bytes_in": 4.0 * c["elems_in"],
        "bytes_out": 4.0 * c["elems_out"],
        "bytes_w": 4.0 * c["weight_params"],
    }


#: Names of the columns of :func:`feature_matrix` before the per-primitive blocks.
BASE_FEATURES = ("log_flops", "log_bytes", "log_intensity", "log_c_in", "log_c_out",
                 "log_pixels", "log_taps", "stride", "log_groups", "log_cores",
                 "log_peak_gflops", "log_l2_kib", "log_prior_ms")
#: Per-primitive interaction columns (one block of these per primitive key).
KEY_FEATURES = ("one", "log_prior_ms", "log_cores", "log_cig", "log_pixels", "log_cog")


def feature_matrix(dm: np.ndarray, keys: np.ndarray, cm: np.ndarray,
                   prior_ms: np.ndarray) -> np.ndarray:
    """Rows x features for the calibration: descriptor, primitive and configuration facts.

    ``dm`` (rows x DESC_FIELDS), ``keys`` (rows, primitive key indices), ``cm`` (rows x
    CONFIG_FIELDS) and the prior's prediction are aligned row by row. Logs keep the scales
    comparable; the per-primitive blocks let each algorithm have its own size and threading
    trend (the interactions Mulder et al. found matter most).
    """
    k = counts(dm)
    nbytes = k["bytes_in"] + k["bytes_out"] + k["bytes_w"]
    flops = np.maximum(k["flops"], dm[:, DF["elems_out"]])
    lp = np.log(np.clip(prior_ms, 1e-6, 1e9))  # inf (no such kernel on a GPU) stays finite
    base = np.column_stack([
        np.log1p(flops), np.log1p(nbytes), np.log1p(flops / np.maximum(nbytes, 1.0)),
        np.log(dm[:, DF["c_in"]]), np.log(dm[:, DF["c_out"]]), np.log1p(k["pixels"]),
        np.log(k["taps"]), dm[:, DF["stride_h"]], np.log(dm[:, DF["groups"]]),
        np.log(cm[:, CF["cores"]]), np.log(cm[:, CF["peak_gflops"]]), np.log1p(cm[:, CF["l2_kib"]]),
        lp,
    ])
    per_key = np.column_stack([
        np.ones(len(dm)), lp, np.log(cm[:, CF["cores"]]), np.log(k["cig"]), np.log1p(k["pixels"]),
        np.log(k["cog"]),
    ])
    onehot = np.zeros((len(dm), len(PRIMITIVE_KEYS)))
    onehot[np.arange(len(dm)), keys] = 1.0
    blocks = (onehot[:, :, None] * per_key[:, None, :]).reshape(len(dm), -1)
    return np.hstack([base, blocks])


def neighbour_coords(dm: np.ndarray) -> np.ndarray:
    """Log-size coordinates in which 'similar shape' is measured (fit.NeighbourResidual)."""
    return np.column_stack([
        np.log(dm[:, DF["c_in"]]), np.log(dm[:, DF["c_out"]]),
        np.log(dm[:, DF["h_out"]] * dm[:, DF["w_out"]]), np.log(dm[:, DF["kernel_h"]]) * 2,
        np.log(dm[:, DF["stride_h"]]) * 2, np.log(dm[:, DF["groups"]]),
    ])


def feature_names() -> list[str]:
    return [*BASE_FEATURES, *(f"{k}:{f}" for k in PRIMITIVE_KEYS for f in KEY_FEATURES)]
