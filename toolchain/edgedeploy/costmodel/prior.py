"""The analytical prior: a roofline per primitive from the board descriptor alone.

A board nobody has profiled still gets a sensible plan from this. For each row
the time is

    t = max(gemm_flops / (peak_core * eff * shape_eff * speedup(n)), dram_bytes / bw)
        + serial_flops / (peak_core * serial_eff) + copy_bytes / copy_bw(n) + calls * call_us

Each primitive family declares its own work terms and efficiencies beside its code
(``CostTerms`` in ``runtime/primitives``: e.g. direct's per-tap copies, im2col's column buffer,
Winograd's reduced multiplies 2 a^2 T C_in C_out (Lavin & Gray 2016), FFT's 2.5 N log2 N
butterflies); a registered family that declares none is priced as ``direct``. Only the engines'
terms live here, because engines are not primitives:

* ``gemm_flops``: the arithmetic handed to BLAS; ``dram_bytes``: bytes that must stream from DRAM;
  ``serial_flops``: work numpy runs outside BLAS on one thread (at ``serial_eff`` of one core);
  ``copy_bytes``: the primitive's own data movement, run by numpy as separate single-threaded
  passes (the engines' copies are threaded: ``speedup`` applies to them as well).
* ``speedup(n) = 1 / ((1 - p) + p / n)``: Amdahl with the family's parallel fraction ``p``
  (OpenBLAS and onnxruntime's MLAS parallelise GEMMs, numpy's element-wise passes do not).
* ``shape_eff``: GEMMs with few rows, columns or a short reduction run far from peak; each
  dimension x contributes x / (x + 8), a saturating fit of OpenBLAS sgemm's efficiency curve
  (Goto & van de Geijn 2008 pack into 8- and 16-wide panels). Where the family's GEMM is
  numpy's (``CostTerms.split_rows``), OpenBLAS's threads divide its rows, so the rows term
  counts one thread's share: an NHWC 1x1 conv at 7x7 (49 pixel rows) runs 10-28 % slower on two
  threads than the NCHW one (rows: output channels), and an NCHW one with 16-32 output channels
  at 28x28 25-55 % slower than the NHWC one, while on one thread the two orders tie.

The engines run vendor kernels at 0.75 of the configuration's FP32 peak (onnxruntime's MLAS,
LiteRT's XNNPACK), 90 % parallel; ``native`` (the numpy ops of non-conv layers) is priced by its
passes over the data. A GPU runs only onnxruntime kernels (CUDA/TensorRT providers) at 35 % of
its peak plus a launch latency; native primitives on a GPU are priced as infinite. The
calibration (fit.py) corrects all of this per board from measurement.
"""

from __future__ import annotations

import numpy as np

from edgedeploy.costmodel.configs import CF
from edgedeploy.costmodel.features import (
    CPU_ENGINE_FAMILIES,
    DF,
    SHAPE_X0,
    counts,
    key_table,
)
from edgedeploy.runtime.primitives.registry import (
    WORK_DEFAULTS,
    Columns,
    CostTerms,
    family_cost,
)
from edgedeploy.runtime.vocab import LITERT, NATIVE, ONNXRUNTIME

#: The prior's formulas, and how a calibration corrects them, as lockfiles hash them and stored
#: segment factors (ratios of whole-model runs to per-layer predictions) record them: bump it
#: when either changes, so that factors measured against the old predictions are measured again
#: rather than misapplied (a host's MobileNetV2 read 500 fps predicted for 350 measured on
#: factors from before the depthwise terms below changed, seen while developing).
PRIOR_VERSION = 5
GPU_EFF = 0.35
#: Python + numpy dispatch cost of one numpy call at 2 GHz, and of entering a primitive.
CALL_US = 4.0
BASE_US = 15.0
#: Bytes per cycle one core moves in a numpy copy pass (load + store, strided).
COPY_BYTES_PER_CYCLE = 4.0
#: NHWC variants of numpy primitives pay a transpose of the output tile order; small penalty.
NHWC_PENALTY = 1.05


#: Channels a vendor depthwise kernel takes per vector block. onnxruntime's MLAS runs a depthwise
#: conv in its blocked kernel only when the channels fill whole blocks (8 floats on AVX2 and in a
#: NEON pair, 16 on AVX-512; 8 divides both); any other count goes to a GEMM of one row per
#: channel. Measured on the 2-vCPU Xeon: 3x3 depthwise convs of 256-1024 channels ran in about
#: one pass over their input and output, 93-203 channels 2-10x slower than that pass.
DEPTHWISE_BLOCK = 8


def _engine_work(c: Columns, blocked_only: bool) -> dict[str, np.ndarray | float]:
    """A CPU engine: one fused im2col-style GEMM per conv, bounded by streaming input, output
    and weights once; one call. A depthwise conv its vectorised kernel takes (every one, or with
    ``blocked_only`` only those whose channels fill whole blocks) is memory-bound: one pass over
    input and output; any other is the GEMM of one row per channel it then runs."""
    dw = (c["groups"] > 1) & (c["groups"] == c["c_in"])
    fast = dw & (np.mod(c["c_in"], DEPTHWISE_BLOCK) == 0) if blocked_only else dw
    return {"gemm": np.where(fast, 0.0, c["flops"]), "m": c["cog"], "n": c["pixels"],
            "k": c["cig"] * c["taps"], "copy": np.where(fast, c["io"], 0.0),
            "dram": c["io"] + c["bytes_w"], "calls": 1.0}


def _onnxruntime_work(c: Columns) -> dict[str, np.ndarray | float]:
    return _engine_work(c, blocked_only=True)


def _litert_work(c: Columns) -> dict[str, np.ndarray | float]:
    """XNNPACK's depthwise kernels take any channel count (a remainder tile after the blocks)."""
    return _engine_work(c, blocked_only=False)


def _native_work(c: Columns) -> dict[str, np.ndarray | float]:
    """The native runtime's non-conv ops: a dense layer streams its weights from DRAM, every
    other op is one numpy pass over its input and output."""
    dense = c["is_dense"] > 0
    return {"copy": np.where(dense, 0.0, c["io"]), "dram": np.where(dense, c["bytes_w"], 0.0)}


#: The engines' terms: engines are not primitives, so the cost model keeps them.
ENGINE_TERMS: dict[str, CostTerms] = {
    ONNXRUNTIME: CostTerms(gemm_eff=0.75, parallel=0.90, work=_onnxruntime_work, split_rows=False),
    LITERT: CostTerms(gemm_eff=0.75, parallel=0.90, work=_litert_work, split_rows=False),
    NATIVE: CostTerms(gemm_eff=0.5, parallel=0.0, work=_native_work, split_rows=False),
}


def family_terms(family: str) -> CostTerms:
    """The terms the prior prices ``family`` with: an engine's, else what the family declares."""
    terms = ENGINE_TERMS.get(family) or family_cost(family)
    if terms is None:
        raise KeyError(f"primitive family {family!r} declares no cost terms")
    return terms


def _cache_factor(nbytes: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """Copy passes whose data fit the L2 (or the L3) run faster than DRAM streaming: 3x and
    1.8x, typical L2/L3 versus DRAM copy bandwidth ratios of Cortex-A and x86 cores."""
    l2 = cm[:, CF["l2_kib"]] * 1024.0
    l3 = cm[:, CF["l3_kib"]] * 1024.0
    return np.where(nbytes <= l2, 3.0, np.where(nbytes <= l3, 1.8, 1.0))


def _shape_eff(m: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return (m / (m + SHAPE_X0)) * (n / (n + SHAPE_X0)) * (k / (k + SHAPE_X0))


def columns(dm: np.ndarray, nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """What ``CostTerms.work`` reads: every descriptor column, the shared counts and the row's
    layout (``nhwc``: 1 for an NHWC variant)."""
    k = counts(dm)
    return {**{name: dm[:, i] for name, i in DF.items()}, **k,
            "io": k["bytes_in"] + k["bytes_out"], "nhwc": nhwc}


def _family_terms(dm: np.ndarray, fam: np.ndarray, families: tuple[str, ...], nhwc: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Work terms and efficiencies of every row under its own family's ``CostTerms``."""
    cols = columns(dm, nhwc)
    work = {name: np.full(len(dm), v) for name, v in WORK_DEFAULTS.items()}
    eff = {name: np.zeros(len(dm))
           for name in ("gemm_eff", "parallel", "serial_eff", "split_rows")}
    for f in np.unique(fam):
        rows = fam == f
        terms = family_terms(families[f])
        for name, value in terms.work({k: v[rows] for k, v in cols.items()}).items():
            if name not in work:
                raise ValueError(f"cost terms of {families[f]!r}: unknown work term {name!r} "
                                 f"(one of {', '.join(WORK_DEFAULTS)})")
            work[name][rows] = value
        eff["gemm_eff"][rows] = terms.gemm_eff
        eff["parallel"][rows] = terms.parallel
        eff["serial_eff"][rows] = terms.serial_eff
        eff["split_rows"][rows] = terms.split_rows
    return work, eff


def same_gemm_keys(dm: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each row, the key of the primitive whose GEMM it runs on the same operands (its
    family's ``CostTerms.same_gemm``, in the row's layout), or -1 where there is none."""
    table = key_table()
    out = np.full(len(keys), -1)
    fam = table.key_family[keys]
    for f in np.unique(fam):
        terms = family_terms(table.families[f])
        if terms.same_gemm is None:
            continue
        rows = np.flatnonzero(fam == f)
        nhwc = table.key_nhwc[keys[rows]]
        cols = columns(dm[rows], nhwc)
        hit = np.asarray(terms.same_gemm.where(cols), dtype=bool)
        for layout, flag in (("nchw", 0.0), ("nhwc", 1.0)):
            ref = table.index.get(f"{terms.same_gemm.family}/{layout}")
            if ref is not None:
                out[rows[hit & (nhwc == flag)]] = ref
    return out


def prior_ms(dm: np.ndarray, keys: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """Predicted milliseconds of each row (descriptor row, primitive key, configuration row)."""
    table = key_table()
    fam = table.key_family[keys]
    t, e = _family_terms(dm, fam, table.families, table.key_nhwc[keys])
    names = np.array(table.families)
    eff, par = e["gemm_eff"], e["parallel"]
    cores = cm[:, CF["cores"]]
    freq_ghz = cm[:, CF["freq_mhz"]] / 1000.0
    core_gflops = freq_ghz * cm[:, CF["flops_per_cycle"]]
    speedup = 1.0 / ((1.0 - par) + par / cores)
    # threads that divide the GEMM's rows each run a GEMM of their share of them
    rows = np.where(e["split_rows"] > 0, t["m"] / cores, t["m"])
    shape = _shape_eff(rows, t["n"], t["k"])
    bw = cm[:, CF["bw_gbps"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        compute = np.where(t["gemm"] > 0,
                           t["gemm"] / (core_gflops * np.maximum(eff, 1e-3) * shape * speedup),
                           0.0)
        serial = np.where(t["serial"] > 0,
                          t["serial"] / (core_gflops * np.maximum(e["serial_eff"], 1e-3)), 0.0)
    roof = np.maximum(compute, t["dram"] / bw)  # FLOP / GFLOPS = ns; bytes / (GB/s) = ns
    copy_bw = np.minimum(bw, freq_ghz * COPY_BYTES_PER_CYCLE) * _cache_factor(t["copy"], cm)
    engine = np.isin(names[fam], CPU_ENGINE_FAMILIES)
    copy_speed = np.where(engine, copy_bw * speedup, copy_bw)
    ns = (roof + serial + t["copy"] / copy_speed
          + (t["calls"] * CALL_US + BASE_US) * 1000.0 * (2.0 / np.maximum(freq_ghz, 0.1)))
    ms = ns * 1e-6 * np.where(table.key_nhwc[keys] > 0, NHWC_PENALTY, 1.0)
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
    return np.where(fam_names == ONNXRUNTIME, ms, np.inf)


def layout_ms(elems: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """An NCHW <-> NHWC transpose: one strided read and one write of every element."""
    freq_ghz = cm[:, CF["freq_mhz"]] / 1000.0
    copy_bw = np.minimum(cm[:, CF["bw_gbps"]], freq_ghz * COPY_BYTES_PER_CYCLE) * 0.5
    return (8.0 * elems / copy_bw + BASE_US * 1000.0) * 1e-6
