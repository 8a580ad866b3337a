"""Features of a (layer, primitive, core configuration) row, from the descriptor alone.

Everything is vectorised: descriptors become one float64 matrix (:func:`descriptor_matrix`), rows
index it, and every derived count (FLOPs, bytes, pixels, taps) is a numpy expression over whole
columns; counts only one family needs (Winograd tiles, FFT sizes) live in that family's
``CostTerms``. This is what makes predicting every row of ResNet-50 on a three-cluster board take
milliseconds.

Which conv families have keys is read from the primitive registry (a family that declares
``CostTerms`` gets its own key), so a new primitive family touches only its own module. Families
register when ``runtime.primitives`` is imported, before any model is fitted; one registered later
widens the feature matrix, which a correction fitted before it cannot score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgedeploy.costmodel.configs import CF
from edgedeploy.runtime import ir
from edgedeploy.runtime.primitives import REGISTRY
from edgedeploy.runtime.vocab import LITERT, NATIVE, ONNXRUNTIME

#: Columns of :func:`descriptor_matrix`.
DESC_FIELDS = ("n", "c_in", "h", "w", "c_out", "h_out", "w_out", "kernel_h", "kernel_w",
               "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w", "groups",
               "elems_in", "elems_out", "macs", "weight_params", "is_conv", "is_dense")
DF = {name: i for i, name in enumerate(DESC_FIELDS)}

LAYOUTS = ("nchw", "nhwc")
ENGINES = (ONNXRUNTIME, NATIVE, LITERT)
#: Segment engines of the CPU, priced alike by the prior (vendor GEMM/conv kernels with fusion:
#: MLAS for onnxruntime, XNNPACK for LiteRT); calibration separates them per board.
CPU_ENGINE_FAMILIES = (ONNXRUNTIME, LITERT)
#: The conv families calibrations were first fitted with, in their column order. The one-hot
#: columns (and so a fitted correction's coefficients and a plan lockfile's model digest) keep
#: this order; a family not listed here gets its columns after the engines', sorted by name, so
#: adding one never moves an existing column. Not a list to extend: new families need no entry.
FITTED_CONV_ORDER = ("direct", "im2col_gemm", "gemm_1x1", "winograd_f2x3", "winograd_f4x3", "fft",
                     "depthwise")


@dataclass(frozen=True)
class KeyTable:
    """Every primitive key with its own learned correction (one-hot columns) and its family."""

    #: Conv families that declare cost terms; other registered families are priced as ``direct``.
    conv_families: tuple[str, ...]
    keys: tuple[str, ...]
    #: Families of :attr:`key_family`: conv families, then the engines.
    families: tuple[str, ...]
    index: dict[str, int]
    key_family: np.ndarray
    key_nhwc: np.ndarray


def key_table() -> KeyTable:
    """The keys of the primitive families registered now (cached per registry content)."""
    return _key_table(tuple((p.name, p.family, p.cost is not None) for p in REGISTRY.values()
                            if p.op == ir.CONV2D))


@lru_cache(maxsize=8)
def _key_table(conv: tuple[tuple[str, str, bool], ...]) -> KeyTable:
    costed = {family for _, family, has_cost in conv if has_cost}
    fitted = tuple(f for f in FITTED_CONV_ORDER if f in costed)
    later = tuple(sorted(costed - set(fitted)))
    # Fitted families keep a key per layout (fft/nhwc included); a later family has its own names.
    keys = (*(f"{f}/{lay}" for f in fitted for lay in LAYOUTS), *ENGINES,
            *sorted(name for name, family, _ in conv if family in later))
    families = (*fitted, *later, *ENGINES)
    return KeyTable(
        conv_families=(*fitted, *later), keys=keys, families=families,
        index={k: i for i, k in enumerate(keys)},
        key_family=np.array([families.index(k.split("/")[0]) for k in keys]),
        key_nhwc=np.array([k.endswith("/nhwc") for k in keys], dtype=np.float64),
    )


def __getattr__(name: str) -> object:
    """The key tables under their constant names, always as the registry has them now."""
    attr = {"CONV_FAMILIES": "conv_families", "PRIMITIVE_KEYS": "keys", "PK": "index",
            "FAMILIES": "families", "KEY_FAMILY": "key_family", "KEY_NHWC": "key_nhwc"}.get(name)
    if attr is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(key_table(), attr)


def primitive_key(name: str) -> int:
    """Index into ``key_table().keys`` of a primitive name (families without cost terms, or not
    registered, price as ``direct`` in their layout)."""
    pk = key_table().index
    if name in pk:
        return pk[name]
    from edgedeploy.runtime.engines import is_segment_choice

    if is_segment_choice(name):  # an engine the prior has no terms for: priced as onnxruntime
        return pk[ONNXRUNTIME]
    layout = name.split("/")[-1] if "/" in name else "nchw"
    return pk[f"direct/{layout if layout in LAYOUTS else 'nchw'}"]


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


def counts(dm: np.ndarray) -> dict[str, np.ndarray]:
    """Work counts every family shares, for each descriptor row (a family's own counts, such
    as Winograd tiles or FFT sizes, live in its ``CostTerms.work``)."""
    c = {name: dm[:, i] for name, i in DF.items()}
    return {
        "flops": 2.0 * c["macs"],
        "pixels": c["n"] * c["h_out"] * c["w_out"],
        "taps": c["kernel_h"] * c["kernel_w"],
        "cig": np.maximum(c["c_in"] / c["groups"], 1),
        "cog": np.maximum(c["c_out"] / c["groups"], 1),
        "bytes_in": 4.0 * c["elems_in"],
        "bytes_out": 4.0 * c["elems_out"],
        "bytes_w": 4.0 * c["weight_params"],
    }


#: Names of the columns of :func:`feature_matrix` before the per-primitive blocks.
BASE_FEATURES = ("log_flops", "log_bytes", "log_intensity", "log_c_in", "log_c_out",
                 "log_pixels", "log_taps", "stride", "log_groups", "log_cores",
                 "log_peak_gflops", "log_l2_kib", "log_prior_ms")
#: Per-primitive interaction columns (one block of these per primitive key). The two ``_eff``
#: columns are the log of the saturating efficiency x / (x + 8) (the prior's shape term) of one
#: thread's share of the output pixels and of the output channels per group: how a primitive's
#: kernels starve when a dimension runs short is its own, and not linear in the log sizes (on
#: held-out layers of three profiles of the 2-vCPU Xeon, Kendall tau 0.69-0.72 -> 0.71-0.75, most
#: of it on 1x1 layers, whose variants differ by which dimension their threads divide).
#: The three ``_x_`` columns are products of the log GEMM sizes (pixels, output channels and
#: depth per group, two at a time): a GEMM kernel's efficiency follows the aspect of its operands,
#: not each size alone, and each primitive hands its GEMM a different aspect (on held-out layers
#: of three profiles of the 2-vCPU Zen 4 EPYC, with the one-sided loss of ``fit._robust``: tau
#: 0.658/0.662/0.694 -> 0.691/0.677/0.713, beyond 5 % 0.746/0.749/0.766 -> 0.783/0.787/0.815).
KEY_FEATURES = ("one", "log_prior_ms", "log_cores", "log_cig", "log_pixels", "log_cog",
                "log_pixels_eff", "log_cog_eff", "log_pixels_x_cog", "log_cig_x_cog",
                "log_pixels_x_cig")
#: The size at which a GEMM dimension (rows, columns or depth) reaches half its efficiency, in
#: the prior's shape term and in :data:`KEY_FEATURES`. One constant for rows and columns: on one
#: thread OpenBLAS runs a product and its transpose alike (timed on the 2-vCPU Xeon over rows and
#: columns of 16-1536, depth 32-512: a rows constant of 8 and a columns one of 16 fit the swap
#: worse than no shape term at all; 8 and 8 fit best).
SHAPE_X0 = 8.0


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
    cores = cm[:, CF["cores"]]
    pixels, cig, cog = np.log1p(k["pixels"]), np.log(k["cig"]), np.log(k["cog"])
    per_key = np.column_stack([
        np.ones(len(dm)), lp, np.log(cores), cig, pixels, cog,
        _log_eff(k["pixels"] / cores), _log_eff(k["cog"] / cores),
        pixels * cog, cig * cog, pixels * cig,
    ])
    onehot = np.zeros((len(dm), len(key_table().keys)))
    onehot[np.arange(len(dm)), keys] = 1.0
    blocks = (onehot[:, :, None] * per_key[:, None, :]).reshape(len(dm), -1)
    return np.hstack([base, blocks])


def _log_eff(x: np.ndarray) -> np.ndarray:
    return np.log(x / (x + SHAPE_X0))


def neighbour_coords(dm: np.ndarray) -> np.ndarray:
    """Log-size coordinates in which 'similar shape' is measured (fit.NeighbourResidual)."""
    return np.column_stack([
        np.log(dm[:, DF["c_in"]]), np.log(dm[:, DF["c_out"]]),
        np.log(dm[:, DF["h_out"]] * dm[:, DF["w_out"]]), np.log(dm[:, DF["kernel_h"]]) * 2,
        np.log(dm[:, DF["stride_h"]]) * 2, np.log(dm[:, DF["groups"]]),
    ])


def feature_names() -> list[str]:
    return [*BASE_FEATURES, *(f"{k}:{f}" for k in key_table().keys for f in KEY_FEATURES)]
