"""Shared machinery of the Winograd families F(m, 3) (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016).

``Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A`` per (m+2)x(m+2) input tile ``d``. The kernel transform
``G g G^T`` is done offline; at run time all tiles of all channels are transformed at once with two
small GEMMs, the elementwise products summed over C_in become one batched matmul
``(α², C_out, C_in) @ (α², C_in, tiles)``, and the output transform is two more small GEMMs.
"""

from __future__ import annotations

from fractions import Fraction
from math import ceil, gcd, lcm

import numpy as np
from numpy.lib.stride_tricks import as_strided

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
    register,
)

R = 3  # kernel size of every family here
#: Bound on the float64 temporaries of one block of the offline kernel transform (``pack``).
PACK_BLOCK_BYTES = 4 << 20


def toom_cook(m: int, r: int, points: tuple[Fraction, ...]) -> tuple[np.ndarray, ...]:
    """(A^T, G, B^T) of F(m, r) from ``m + r - 2`` finite interpolation points plus infinity.

    Linear convolution by evaluation/interpolation is ``s = C[(A h) ⊙ (G g)]`` with ``C`` the
    inverse Vandermonde; its transpose is the correlation ``y = A^T[(G g) ⊙ (C^T d)]``
    (Winograd's transposition principle). Rows of ``B^T = C^T`` are scaled to small integers and
    the inverse scale moved into ``G``, as in Lavin's matrices. Exact rational arithmetic.
    """
    a = m + r - 1
    pts = [Fraction(p) for p in points]
    if len(pts) != a - 1 or len(set(pts)) != len(pts):
        raise ValueError(f"F({m},{r}) needs {a - 1} distinct finite points")

    def evaluation(cols: int) -> list[list[Fraction]]:
        rows = [[p ** i for i in range(cols)] for p in pts]
        rows.append([Fraction(int(i == cols - 1)) for i in range(cols)])  # the point at infinity
        return rows

    amat, gmat, vmat = evaluation(m), evaluation(r), evaluation(a)
    bt = [list(row) for row in zip(*_inverse(vmat), strict=True)]  # C^T
    for k in range(a):
        scale = Fraction(lcm(*(x.denominator for x in bt[k])),
                         gcd(*(x.numerator for x in bt[k])) or 1)
        bt[k] = [x * scale for x in bt[k]]
        gmat[k] = [x / scale for x in gmat[k]]
    to_np = lambda rows: np.array([[float(x) for x in row] for row in rows])  # noqa: E731
    return to_np(amat).T.copy(), to_np(gmat), to_np(bt)


def _inverse(mat: list[list[Fraction]]) -> list[list[Fraction]]:
    """Gauss-Jordan inverse over the rationals (the matrices are at most 8x8)."""
    n = len(mat)
    aug = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(mat)]
    for col in range(n):
        piv = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[piv] = aug[piv], aug[col]
        p = aug[col][col]
        aug[col] = [x / p for x in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [x - f * y for x, y in zip(aug[r], aug[col], strict=True)]
    return [row[n:] for row in aug]


def applies(d: Descriptor) -> bool:
    return (is_conv(d) and d.kernel == (R, R) and d.stride == (1, 1) and d.dilation == (1, 1)
            and d.groups == 1)


def _tiles(d: Descriptor, m: int) -> tuple[int, int]:
    return ceil(d.h_out / m), ceil(d.w_out / m)


def workspace(d: Descriptor, m: int) -> int:
    a = m + R - 1
    th, tw = _tiles(d, m)
    p = d.n * th * tw
    padded = d.n * d.c_in * (th * m + R - 1) * (tw * m + R - 1)
    # padded input, gathered tiles and their transform (2 x), products, output transform, output
    return 4 * (padded + 2 * a * a * d.c_in * p + 2 * a * a * d.c_out * p + d.n * d.c_out * m * m
                * th * tw)


class Winograd:
    """One F(m, 3) algorithm: its matrices and the pack / run functions of both layouts."""

    def __init__(self, m: int, points: tuple[Fraction, ...]) -> None:
        self.m, self.a = m, m + R - 1
        at, g, bt = toom_cook(m, R, points)
        self.at64, self.g64, self.bt64 = at, g, bt
        self.at, self.bt = at.astype(np.float32), bt.astype(np.float32)

    def pack(self, d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
        """``U = G g G^T`` for every (C_out, C_in) pair, as (α², C_out, C_in) float32.

        Done in float64 a block of output channels at a time, straight into the result: whole,
        the float64 temporaries were ~5x the packed size (~150 MB for a 512->1024 F(2,3) layer,
        a stage's peak memory); per block they stay under ``PACK_BLOCK_BYTES``. Bit-identical.
        """
        w = np.asarray(weights["weight"]).reshape(d.c_out, d.c_in, R, R)
        u = np.empty((self.a * self.a, d.c_out, d.c_in), dtype=np.float32)
        step = max(1, PACK_BLOCK_BYTES // (8 * self.a * self.a * max(d.c_in, 1)))
        for o in range(0, d.c_out, step):
            g = w[o:o + step].astype(np.float64).reshape(-1, R, R)
            t = np.matmul(np.matmul(self.g64, g), self.g64.T)  # batched G g G^T: (o*C, α, α)
            u[:, o:o + step] = t.reshape(-1, d.c_in, self.a * self.a).transpose(2, 0, 1)
        return {"weight": u, **keep_bias_slope(weights)}

    def run(self, d: Descriptor, packed: Weights, x: np.ndarray, act: Activation,
            layout: str) -> np.ndarray:
        m, nchw = self.m, layout == NCHW
        th, tw = _tiles(d, m)
        xp = self._pad(d, x, layout, th, tw)
        if nchw:
            full = np.empty((d.n, d.c_out, th * m, tw * m), dtype=np.float32)
            dest = full.reshape(d.n, d.c_out, th, m, tw, m)
        else:
            full = np.empty((d.n, th * m, tw * m, d.c_out), dtype=np.float32)
            dest = full.reshape(d.n, th, m, tw, m, d.c_out)
        u = packed["weight"]
        # Bands of tile rows keep one band's transformed tiles in cache across the output-channel
        # blocks; blocks of output channels keep each block's products in cache through the
        # output transform (and moderate GEMM row counts run faster in OpenBLAS).
        band = _band_rows(d.c_in, d.n * tw, self.a, th)
        for r0 in range(0, th, band):
            r1 = min(th, r0 + band)
            v = self._input_transform(xp, layout, d, r0, r1, tw)  # (α², C_in, P)
            block = _co_block(d.c_out, d.c_in, v.shape[2], self.a)
            for s in range(0, d.c_out, block):
                yb = self._output_transform(np.matmul(u[:, s:s + block], v), d, r1 - r0, tw)
                if nchw:
                    dest[:, s:s + block, r0:r1] = yb.transpose(3, 2, 4, 0, 5, 1)
                else:
                    dest[:, r0:r1, ..., s:s + block] = yb.transpose(3, 4, 0, 5, 1, 2)
        if (th * m, tw * m) != (d.h_out, d.w_out):  # drop the last tiles' overhang
            full = full[:, :, :d.h_out, :d.w_out] if nchw else full[:, :d.h_out, :d.w_out]
            full = np.ascontiguousarray(full)
        return finish(full, packed, act, 1 if nchw else 3)

    def _output_transform(self, prod: np.ndarray, d: Descriptor, th: int, tw: int) -> np.ndarray:
        """``A^T m A`` for a block of output channels: (m, m, C_block, n, th, tw)."""
        m, a = self.m, self.a
        z = (self.at @ prod.reshape(a, -1)).reshape(m, a, -1)
        return np.matmul(self.at, z).reshape(m, m, -1, d.n, th, tw)

    def _pad(self, d: Descriptor, x: np.ndarray, layout: str, th: int, tw: int) -> np.ndarray:
        """The padded input, grown so that ``th x tw`` tiles of ``m + 2`` fit."""
        extra_h = max(0, th * self.m + R - 1 - (d.h + d.pad_top + d.pad_bottom))
        extra_w = max(0, tw * self.m + R - 1 - (d.w + d.pad_left + d.pad_right))
        if layout == NCHW:
            return np.ascontiguousarray(pad_nchw(x, d, extra_h, extra_w))
        grown = d.with_(pad_bottom=d.pad_bottom + extra_h, pad_right=d.pad_right + extra_w)
        return np.ascontiguousarray(pad_nhwc(x, grown))

    def _input_transform(self, xp: np.ndarray, layout: str, d: Descriptor, r0: int, r1: int,
                         tw: int) -> np.ndarray:
        """``B^T d B`` of the tiles in tile rows ``r0:r1``, gathered with stride tricks."""
        m, a = self.m, self.a
        if layout == NCHW:
            sn, sc, sh, sw = xp.strides
        else:
            sn, sh, sw, sc = xp.strides
        # (row in tile, col in tile, C, n, tile row, tile col): overlapping windows, a view.
        tiles = as_strided(xp[:, :, r0 * m:] if layout == NCHW else xp[:, r0 * m:],
                           shape=(a, a, d.c_in, d.n, r1 - r0, tw),
                           strides=(sh, sw, sc, sn, m * sh, m * sw), writeable=False)
        t1 = (self.bt @ tiles.reshape(a, -1)).reshape(a, a, -1)
        return np.matmul(self.bt, t1).reshape(a * a, d.c_in, -1)


#: Output-channel blocking, tuned single-threaded with OpenBLAS on a 1 MiB-L2 core (ResNet/VGG
#: layers): a block's products stay within about half the L2, its slice of the transformed kernels
#: within 128 KiB, and at most 64 GEMM rows (taller GEMMs of few tiles ran up to 1.6x slower).
BLOCK_BYTES = 512 * 1024
WEIGHT_BLOCK_BYTES = 128 * 1024
MAX_BLOCK = 64


BAND_BYTES = 2 * 2**20  # 224x224: one unbanded pass 2x slower than onnxruntime, banded 1.3x faster
MIN_BAND_TILES = 64


def _band_rows(c_in: int, tiles_per_row: int, alpha: int, rows: int) -> int:
    """Tile rows per band: about BAND_BYTES of transformed input, at least MIN_BAND_TILES tiles."""
    tiles = max(MIN_BAND_TILES, BAND_BYTES // (alpha * alpha * 4 * c_in))
    return max(1, min(rows, tiles // tiles_per_row))


def _co_block(c_out: int, c_in: int, tiles: int, alpha: int) -> int:
    by_products = BLOCK_BYTES // (alpha * alpha * 4 * tiles)
    by_weights = WEIGHT_BLOCK_BYTES // (4 * c_in)
    return max(8, min(MAX_BLOCK, c_out, by_products, by_weights))


def cost_terms(m: int) -> CostTerms:
    """F(m, 3)'s work: α² batched GEMMs (C_out x C_in) @ (C_in x tiles), α = m + 2 (2 α² T C_in
    C_out FLOPs, Lavin & Gray 2016), blocked by at most MAX_BLOCK output channels; the tile gather,
    input and output transforms and the product buffers are numpy passes over α² T (3 C_in +
    2 C_out) floats, plus padding and scattering the output (twice the input and output)."""
    a = m + R - 1

    def work(c: Columns) -> dict[str, np.ndarray]:
        tiles = c["n"] * np.ceil(c["h_out"] / m) * np.ceil(c["w_out"] / m)
        return {"gemm": 2.0 * a * a * tiles * c["c_in"] * c["c_out"],
                "m": np.minimum(c["c_out"], MAX_BLOCK), "n": tiles, "k": c["c_in"],
                "copy": 4.0 * a * a * tiles * (3 * c["c_in"] + 2 * c["c_out"]) + 2 * c["io"],
                "calls": 6.0 * np.ceil(c["c_out"] / MAX_BLOCK) + 8}

    # 0.60 of peak: α² separate, smaller products than one plain GEMM.
    return CostTerms(gemm_eff=0.60, parallel=0.95, work=work)


def register_family(family: str, m: int, points: tuple[Fraction, ...]) -> Winograd:
    """Register ``family/nchw`` and ``family/nhwc`` for F(m, 3) with the given points."""
    algo = Winograd(m, points)
    cost = cost_terms(m)
    for layout in (NCHW, NHWC):
        register(Primitive(
            f"{family}/{layout}", family, "conv2d", layout, layout, applies, algo.pack,
            lambda d, _m=m: workspace(d, _m),
            lambda d, packed, x, act, _l=layout: algo.run(d, packed, x, act, _l),
            cost,
        ))
    return algo
