"""The analytical prior: a roofline per primitive from the board descriptor alone.

A board nobody has profiled still gets a sensible plan from this (issue 4, item 2). For each row
the time is

    t = max(gemm_flops / (peak_core * eff * shape_eff * speedup(n)), dram_bytes / bw)
        + serial_flops / (peak_core * serial_eff) + copy_bytes / copy_bw(n) + calls * call_us

* ``gemm_flops`` is the arithmetic a primitive hands to BLAS: all FLOPs for direct, im2col and
  1x1 GEMM; Winograd's reduced multiplies 2 a^2 T C_in C_out (Lavin & Gray 2016, a = m + 2,
  T tiles). FFT's pointwise products (Mathieu et al. 2014) are complex matrix-vector products per
  frequency, so they are priced by ``dram_bytes``: the 8 F C_in C_out bytes of weight spectra.
* ``serial_flops``: work numpy runs outside BLAS on one thread: FFT's 2.5 N log2 N per channel
  (real-input FFT, half of Cooley-Tukey's 5 N log2 N).
* ``copy_bytes``: the primitive's own data movement, run by numpy as separate single-threaded
  passes: im2col's column buffer (written then read), Winograd's tile gather and output
  scatter, direct's per-tap slices, depthwise's per-tap multiply-adds.
* ``speedup(n) = 1 / ((1 - p) + p / n)``: Amdahl with the family's parallel fraction ``p``
  (OpenBLAS and onnxruntime's MLAS parallelise GEMMs, numpy's element-wise passes do not).
* ``shape_eff``: GEMMs with few rows, columns or a short reduction run far from peak; each
  dimension x contributes x / (x + x0) (x0 = 8 rows / 16 columns / 8 depth), a saturating fit
  of OpenBLAS sgemm's efficiency curve (Goto & van de Geijn 2008 pack into 8- and 16-wide panels).

Efficiency constants (fraction of the configuration's FP32 peak on large operands): 0.70 for a
plain GEMM (OpenBLAS/MLAS sgemm reach 70-90 % of peak on large square problems), 0.60 for the
batched Winograd GEMMs (alpha^2 separate, smaller products), 0.55 for direct (one GEMM per
kernel tap, accumulating into the output), 0.08 for FFT butterflies (pocketfft is scalar code,
about 1 FLOP/cycle of a 16-32 FLOP/cycle core). A GPU runs only onnxruntime kernels
(CUDA/TensorRT providers) at 35 % of its peak plus a launch latency; native primitives on a GPU
are priced as infinite. The calibration (fit.py) corrects all of this per board from measurement.
"""

from __future__ import annotations

import numpy as np

from edgedeploy.costmodel.configs import CF
from edgedeploy.costmodel.features import (
    CPU_ENGINE_FAMILIES,
    DF,
    FAMILIES,
    KEY_FAMILY,
    KEY_NHWC,
    counts,
)

#: (gemm efficiency, parallel fraction, calls per run) by family, in FAMILIES order.
GEMM_EFF = {"direct": 0.55, "im2col_gemm": 0.70, "gemm_1x1": 0.70, "winograd_f2x3": 0.60,
            "winograd_f4x3": 0.60, "fft": 0.05, "depthwise": 0.0, "onnxruntime": 0.75,
            "native": 0.5, "litert": 0.75}
PARALLEL = {"direct": 0.95, "im2col_gemm": 0.95, "gemm_1x1": 0.95, "winograd_f2x3": 0.95,
            "winograd_f4x3": 0.95, "fft": 0.0, "depthwise": 0.0, "onnxruntime": 0.90, "native": 0.0,
            "litert": 0.90}
FFT_EFF = 0.08
GPU_EFF = 0.35
#: Python + numpy dispatch cost of one numpy call at 2 GHz, and of entering a primitive.
CALL_US = 4.0
BASE_US = 15.0
#: Bytes per cycle one core moves in a numpy copy pass (load + store, strided).
COPY_BYTES_PER_CYCLE = 4.0
#: NHWC variants of numpy primitives pay a transpose of the output tile order; small penalty.
NHWC_PENALTY = 1.05


def _cache_factor(nbytes: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """Copy passes whose data fit the L2 (or the L3) run faster than DRAM streaming: 3x and
    1.8x, typical L2/L3 versus DRAM copy bandwidth ratios of Cortex-A and x86 cores."""
    l2 = cm[:, CF["l2_kib"]] * 1024.0
    l3 = cm[:, CF["l3_kib"]] * 1024.0
    return np.where(nbytes <= l2, 3.0, np.where(nbytes <= l3, 1.8, 1.0))


def _shape_eff(m: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return (m / (m + 8.0)) * (n / (n + 16.0)) * (k / (k + 8.0))


def _family_terms(dm: np.ndarray, fam: np.ndarray) -> dict[str, np.ndarray]:
    """Work terms of every row under its own family (vectorised with masks)."""
    k = counts(dm)
    c = {name: dm[:, i] for name, i in DF.items()}
    zero = np.zeros(len(dm))
    gemm, m_, n_, k_ = zero.copy(), np.ones(len(dm)), np.ones(len(dm)), np.ones(len(dm))
    serial, copy, dram, calls = zero.copy(), zero.copy(), zero.copy(), np.full(len(dm), 3.0)

    def sel(name: str) -> np.ndarray:
        return fam == FAMILIES.index(name)

    flops, p, taps, cig, cog = k["flops"], k["pixels"], k["taps"], k["cig"], k["cog"]
    io = k["bytes_in"] + k["bytes_out"]
    for name in ("direct", "im2col_gemm", "gemm_1x1", *CPU_ENGINE_FAMILIES):
        s = sel(name)
        gemm[s], m_[s], n_[s] = flops[s], cog[s], p[s]
        k_[s] = cig[s] * (1 if name in ("direct", "gemm_1x1") else taps[s])
    s = sel("direct")
    copy[s] = 4.0 * taps[s] * p[s] * (c["c_in"][s] + 2.0 * c["c_out"][s])
    calls[s] = 3.0 * taps[s] + 2
    s = sel("im2col_gemm")
    copy[s] = 8.0 * k["im2col_elems"][s] + io[s]
    calls[s] = taps[s] + 4
    s = sel("gemm_1x1")
    copy[s] = np.where(c["stride_h"][s] > 1, k["bytes_in"][s], 0.0) + k["bytes_out"][s]
    for name, m, tiles in (("winograd_f2x3", 2, k["tiles2"]), ("winograd_f4x3", 4, k["tiles4"])):
        s, a = sel(name), m + 2
        gemm[s] = 2.0 * a * a * tiles[s] * c["c_in"][s] * c["c_out"][s]
        m_[s], n_[s], k_[s] = np.minimum(c["c_out"][s], 64), tiles[s], c["c_in"][s]
        copy[s] = 4.0 * a * a * tiles[s] * (3 * c["c_in"][s] + 2 * c["c_out"][s]) + 2 * io[s]
        calls[s] = 6.0 * np.ceil(c["c_out"][s] / 64) + 8
    s = sel("fft")
    nf = k["fft_n"][s]
    serial[s] = 2.5 * nf * np.log2(np.maximum(nf, 2)) * c["n"][s] * (c["c_in"][s] + c["c_out"][s])
    # The pointwise products are one batched complex GEMV per frequency (n = 1): bound by
    # reading the C_out x C_in weight spectra, not by arithmetic.
    dram[s] = 8.0 * k["fft_freqs"][s] * c["c_in"][s] * c["c_out"][s]  # weight spectra, read once
    copy[s] = 8.0 * k["fft_freqs"][s] * c["n"][s] * 2 * (c["c_in"][s] + c["c_out"][s]) + io[s]
    calls[s] = 10.0
    s = sel("depthwise")
    copy[s] = 12.0 * taps[s] * c["c_out"][s] * p[s] + io[s]
    calls[s] = 2.0 * taps[s] + 3
    s = sel("native")
    dense = s & (c["is_dense"] > 0)
    dram[dense] = k["bytes_w"][dense]
    copy[s & ~dense] = io[s & ~dense]
    calls[s] = 3.0
    s = sel(CPU_ENGINE_FAMILIES[0]) | sel(CPU_ENGINE_FAMILIES[1])
    dram[s] = io[s] + k["bytes_w"][s]
    calls[s] = 1.0
    # onnxruntime runs depthwise convs with a dedicated channel-vectorised kernel, not a GEMM of
    # one row: memory-bound, so priced by its passes over input and output.
    dw = s & (c["groups"] > 1) & (c["groups"] == c["c_in"])
    gemm[dw] = 0.0
    copy[dw] = 3.0 * io[dw]
    return {"gemm": gemm, "m": m_, "n": n_, "k": k_, "serial": serial, "copy": copy,
            "dram": dram, "calls": calls}


def prior_ms(dm: np.ndarray, keys: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """Predicted milliseconds of each row (descriptor row, primitive key, configuration row)."""
    fam = KEY_FAMILY[keys]
    t = _family_terms(dm, fam)
    names = np.array(FAMILIES)
    eff = np.array([GEMM_EFF[f] for f in FAMILIES])[fam]
    par = np.array([PARALLEL[f] for f in FAMILIES])[fam]
    cores = cm[:, CF["cores"]]
    freq_ghz = cm[:, CF["freq_mhz"]] / 1000.0
    core_gflops = freq_ghz * cm[:, CF["flops_per_cycle"]]
    speedup = 1.0 / ((1.0 - par) + par / cores)
    shape = _shape_eff(t["m"], t["n"], t["k"])
    bw = cm[:, CF["bw_gbps"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        compute = np.where(t["gemm"] > 0,
                           t["gemm"] / (core_gflops * np.maximum(eff, 1e-3) * shape * speedup),
                           0.0)
    roof = np.maximum(compute, t["dram"] / bw)  # FLOP / GFLOPS = ns; bytes / (GB/s) = ns
    copy_bw = np.minimum(bw, freq_ghz * COPY_BYTES_PER_CYCLE) * _cache_factor(t["copy"], cm)
    engine = np.isin(names[fam], CPU_ENGINE_FAMILIES)
    copy_speed = np.where(engine, copy_bw * speedup, copy_bw)
    ns = (roof + t["serial"] / (core_gflops * FFT_EFF) + t["copy"] / copy_speed
          + (t["calls"] * CALL_US + BASE_US) * 1000.0 * (2.0 / np.maximum(freq_ghz, 0.1)))
    ms = ns * 1e-6 * np.where(KEY_NHWC[keys] > 0, NHWC_PENALTY, 1.0)
    gpu = cm[:, CF["is_gpu"]] > 0
    if gpu.any():
        ms = np.where(gpu, _gpu_ms(dm, cm, names[fam]), ms)
    return ms


def _gpu_ms(dm: np.ndarray, cm: np.ndarray, fam_names: np.ndarray) -> np.ndarray:
    """onnxruntime's CUDA kernels: roofline at GPU_EFF plus a launch; native code cannot run."""
    k = counts(dm)
    flops = np.maximum(k["flops"], dm[:, DF["elems_out"]])
    nbytes = k["bytes_in"] + k["bytes_out"] + k["bytes_w"]
    ns = np.maximum(flops / (cm[:, CF["peak_gflops"]] * GPU_EFF), nbytes / cm[:, CF["bw_gbps"]])
    ms = ns * 1e-6 + 0.03
    return np.where(fam_names == "onnxruntime", ms, np.inf)


def layout_ms(elems: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """An NCHW <-> NHWC transpose: one strided read and one write of every element."""
    freq_ghz = cm[:, CF["freq_mhz"]] / 1000.0
    copy_bw = np.minimum(cm[:, CF["bw_gbps"]], freq_ghz * COPY_BYTES_PER_CYCLE) * 0.5
    return (8.0 * elems / copy_bw + BASE_US * 1000.0) * 1e-6
