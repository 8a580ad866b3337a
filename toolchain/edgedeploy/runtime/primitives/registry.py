"""The convolution primitive registry: every algorithm x layout the native engine runs a conv with.

A primitive is data (what it applies to, its layouts, workspace) plus three functions: an offline
weight transform whose arrays ship in a bundle, a workspace estimate the planner bounds memory with,
and ``run``; and, optionally, the cost terms the cost model's prior prices it with
(:class:`CostTerms`). Families register themselves with :func:`register` when ``primitives`` is
imported, so adding a family touches one module (pattern: onnx's reference evaluator, one file per
operator).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..activations import apply_activation
from ..errors import ExecutionError
from ..ir import CONV2D, Descriptor
from ..vocab import NCHW, NHWC  # noqa: F401  (re-exported for the primitive modules)

LAYOUT_OP = "layout"

Weights = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Activation:
    """A fused activation: ``kind`` from ``ir.ACTIVATIONS`` and its scalar parameters.

    A PRelu slope is an array, so it travels with the packed weights as ``"slope"``.
    """

    kind: str = "none"
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Activation:
        """Read ``attrs["activation"]`` / ``attrs["activation_params"]`` of an IR layer."""
        return cls(str(attrs.get("activation", "none") or "none"),
                   dict(attrs.get("activation_params") or {}))

    def apply(self, y: np.ndarray, slope: np.ndarray | None = None,
              channel_axis: int = 1) -> np.ndarray:
        return apply_activation(y, self.kind, self.params, slope=slope, channel_axis=channel_axis)


NO_ACTIVATION = Activation()

#: Columns :attr:`CostTerms.work` reads: one float64 array per column, one entry per priced row.
Columns = Mapping[str, np.ndarray]
#: The work terms a family may return, and the value a term it leaves out takes.
WORK_DEFAULTS: Mapping[str, float] = {
    "gemm": 0.0,  # FLOPs handed to BLAS
    # that GEMM's rows, columns and depth (its shape efficiency), as BLAS sees them: the rows are
    # the rows of the row-major product numpy asks for, which OpenBLAS divides among its threads
    "m": 1.0, "n": 1.0, "k": 1.0,
    "serial": 0.0,  # FLOPs numpy runs outside BLAS on one thread
    "copy": 0.0,  # bytes the primitive's own single-threaded numpy passes move
    "dram": 0.0,  # bytes that must stream from DRAM (the memory side of the roofline)
    "calls": 3.0,  # numpy calls per run (Python dispatch overhead)
}


def gemm_rows_cols(c: Columns) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a conv's GEMM over channels and pixels: an NCHW variant multiplies the
    weights by the input (rows: output channels per group), an NHWC one the input by the
    weights (rows: pixels)."""
    nhwc = c["nhwc"] > 0
    return np.where(nhwc, c["pixels"], c["cog"]), np.where(nhwc, c["cog"], c["pixels"])


def pointwise(c: Columns) -> np.ndarray:
    """Rows that are 1x1 convs of stride 1, unpadded and of one group: their input, as it is,
    is the left or right operand of the GEMM that computes them."""
    return ((c["taps"] == 1) & (c["stride_h"] == 1) & (c["stride_w"] == 1) & (c["pad_h"] == 0)
            & (c["pad_w"] == 0) & (c["groups"] == 1))


@dataclass(frozen=True)
class SameGemm:
    """Shapes (``where``) on which a family runs ``family``'s GEMM on the same operands, plus
    passes of its own. A calibrated cost model prices it there as that family's time plus the
    passes: a few per cent of calibration error on a large GEMM would otherwise reorder two
    algorithms that differ by one copy."""

    family: str
    where: Callable[[Columns], np.ndarray]


@dataclass(frozen=True)
class CostTerms:
    """What a primitive family costs, declared beside its code so the cost model need not know it.

    The cost model's prior (``costmodel/prior.py``) turns these into milliseconds on a board:

        max(gemm / (peak * gemm_eff * shape_eff(m, n, k) * amdahl(parallel)), dram / bw)
        + serial / (peak_core * serial_eff) + copy / copy_bw + calls * call_us

    ``work`` is vectorised: it maps the cost model's columns (every descriptor field of
    ``costmodel.features.DESC_FIELDS``, e.g. ``n``, ``c_in``, ``h_out``, ``kernel_h``, ``pad_h``
    (top + bottom), ``groups``, ``is_dense``; and the counts ``flops``, ``pixels`` (n x h_out x
    w_out), ``taps``, ``cig`` / ``cog`` (channels per group), ``bytes_in``, ``bytes_out``,
    ``bytes_w``, ``io`` (in + out), and ``nhwc``, 1 for a row of the family's NHWC variant) to any
    of :data:`WORK_DEFAULTS`' terms, arrays or scalars.
    Plain numpy, so the runtime that ships to devices stays light.
    """

    #: Fraction of the FP32 peak the family's GEMMs reach on large operands.
    gemm_eff: float
    #: Amdahl parallel fraction of the GEMM part (BLAS threads; numpy element-wise passes do not).
    parallel: float
    work: Callable[[Columns], Mapping[str, np.ndarray | float]]
    #: Fraction of one core's peak the ``serial`` FLOPs run at (scalar numpy / pocketfft code).
    serial_eff: float = 0.08
    #: Whether the GEMM's threads each take a share of its rows ``m`` (OpenBLAS behind numpy), so
    #: that few rows starve them; False for kernels that partition their work in two dimensions.
    split_rows: bool = True
    #: Where the family is another family's GEMM plus passes of its own (None: nowhere).
    same_gemm: SameGemm | None = None


@dataclass(frozen=True)
class Primitive:
    """One algorithm in one layout for one op (DESIGN.md, "primitive")."""

    name: str  # "family/layout", e.g. "winograd_f4x3/nchw"
    family: str
    op: str  # "conv2d" or "layout"
    layout_in: str
    layout_out: str
    applies: Callable[[Descriptor], bool]
    transform_weights: Callable[[Descriptor, Weights], dict[str, np.ndarray]]
    workspace_bytes: Callable[[Descriptor], int]
    run: Callable[[Descriptor, Weights, np.ndarray, Activation], np.ndarray]
    #: How the cost model prices the family (shared by its layouts); None: priced as ``direct``.
    cost: CostTerms | None = None

    def __call__(self, d: Descriptor, packed: Weights, x: np.ndarray,
                 act: Activation = NO_ACTIVATION) -> np.ndarray:
        return self.run(d, packed, x, act)


REGISTRY: dict[str, Primitive] = {}


def register(p: Primitive) -> Primitive:
    """Add ``p`` to the registry; a second primitive with the same name is a programming error."""
    if p.name in REGISTRY:
        raise ValueError(f"primitive {p.name!r} registered twice")
    if p.name != f"{p.family}/{p.name.split('/', 1)[-1]}":
        raise ValueError(f"primitive name {p.name!r} must start with its family {p.family!r}/")
    if any(q.family == p.family and q.cost != p.cost for q in REGISTRY.values()):
        raise ValueError(f"primitive {p.name!r} declares other cost terms than its family "
                         f"{p.family!r}: the prior prices a family, not a layout")
    REGISTRY[p.name] = p
    return p


def unregister(name: str) -> Primitive:
    """Remove and return primitive ``name`` (tests that register a throw-away family)."""
    return REGISTRY.pop(name)


def family_cost(family: str) -> CostTerms | None:
    """The cost terms ``family`` declares (None when it declares none or is not registered)."""
    return next((p.cost for p in REGISTRY.values() if p.family == family), None)


def get(name: str) -> Primitive:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ExecutionError(
            f"unknown primitive {name!r}",
            hint="available: " + ", ".join(names()),
        ) from None


def names() -> list[str]:
    return sorted(REGISTRY)


def applicable(d: Descriptor, layout: str | None = None) -> list[Primitive]:
    """Primitives for ``d.op`` whose predicate accepts ``d`` (and that take ``layout`` in)."""
    return [p for _, p in sorted(REGISTRY.items())
            if p.op == d.op and (layout is None or p.layout_in == layout) and p.applies(d)]


# --- helpers shared by the conv families ----------------------------------------------------------
def is_conv(d: Descriptor) -> bool:
    return d.op == CONV2D and d.h_out >= 1 and d.w_out >= 1


def keep_bias_slope(weights: Weights) -> dict[str, np.ndarray]:
    """The arrays every family ships unchanged: the bias and a PRelu slope, as float32."""
    out: dict[str, np.ndarray] = {}
    for role in ("bias", "slope"):
        if weights.get(role) is not None:
            out[role] = np.ascontiguousarray(weights[role], dtype=np.float32).reshape(-1)
    return out


def finish(y: np.ndarray, packed: Weights, act: Activation, channel_axis: int) -> np.ndarray:
    """Add the bias and apply the fused activation along ``channel_axis`` (in place)."""
    b = packed.get("bias")
    if b is not None:
        shape = [1] * y.ndim
        shape[channel_axis] = b.size
        y += b.reshape(shape)
    return act.apply(y, slope=packed.get("slope"), channel_axis=channel_axis)


def pad_nchw(x: np.ndarray, d: Descriptor, extra_h: int = 0, extra_w: int = 0) -> np.ndarray:
    """Zero-pad H and W (plus ``extra_*`` rows/cols at the end); no copy when nothing to pad."""
    top, left, bottom, right = d.pads
    bottom, right = bottom + extra_h, right + extra_w
    if not (top or left or bottom or right):
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + top + bottom, w + left + right), dtype=np.float32)
    out[:, :, top:top + h, left:left + w] = x
    return out


def pad_nhwc(x: np.ndarray, d: Descriptor) -> np.ndarray:
    top, left, bottom, right = d.pads
    if not (top or left or bottom or right):
        return x
    n, h, w, c = x.shape
    out = np.zeros((n, h + top + bottom, w + left + right, c), dtype=np.float32)
    out[:, top:top + h, left:left + w, :] = x
    return out


def tap_slice(d: Descriptor, i: int, j: int) -> tuple[slice, slice]:
    """Rows/cols of the padded input that kernel tap (i, j) reads for every output pixel."""
    r0, c0 = i * d.dilation_h, j * d.dilation_w
    return (slice(r0, r0 + d.stride_h * (d.h_out - 1) + 1, d.stride_h),
            slice(c0, c0 + d.stride_w * (d.w_out - 1) + 1, d.stride_w))


def padded_bytes(d: Descriptor) -> int:
    if not any(d.pads):
        return 0
    return 4 * d.n * d.c_in * (d.h + d.pad_top + d.pad_bottom) * (d.w + d.pad_left + d.pad_right)


def conv2d_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                     d: Descriptor) -> np.ndarray:
    """The naive direct convolution, the oracle of the tests (NCHW, OIHW, float64 accumulation).

    Loops over kernel taps and groups only; each tap is one vectorised multiply-add.
    """
    xp = pad_nchw(np.asarray(x, dtype=np.float32), d).astype(np.float64)
    w = np.asarray(w, dtype=np.float64)
    g = d.groups
    cig, cog = d.c_in // g, d.c_out // g
    y = np.zeros((d.n, d.c_out, d.h_out, d.w_out), dtype=np.float64)
    for gi in range(g):
        xg = xp[:, gi * cig:(gi + 1) * cig]
        wg = w[gi * cog:(gi + 1) * cog]
        for i in range(d.kernel_h):
            for j in range(d.kernel_w):
                rows, cols = tap_slice(d, i, j)
                y[:, gi * cog:(gi + 1) * cog] += np.einsum(
                    "nchw,oc->nohw", xg[:, :, rows, cols], wg[:, :, i, j])
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape(1, -1, 1, 1)
    return y.astype(np.float32)
