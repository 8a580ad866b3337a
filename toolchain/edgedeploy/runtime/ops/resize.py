"""``resize`` with ONNX Resize semantics: ``nearest`` and ``linear`` (bilinear on NCHW).

Reads:
* ``attrs["mode"]``: ``nearest`` (default) | ``linear`` (``bilinear`` accepted as an alias).
* ``attrs["coordinate_transformation_mode"]`` (default ``half_pixel``): ``half_pixel``,
  ``half_pixel_symmetric``, ``pytorch_half_pixel``, ``align_corners``, ``asymmetric``,
  ``tf_half_pixel_for_nn``.
* ``attrs["nearest_mode"]`` (default ``round_prefer_floor``): also ``round_prefer_ceil``,
  ``floor``, ``ceil``.
* ``attrs["scales"]`` or ``attrs["sizes"]``: full rank in ONNX order, or for the axes in
  ``attrs["axes"]`` (Resize-18). Neither: the descriptor's ``h_out``/``w_out`` for the last two
  axes.

Unsupported (an error, never a silent wrong answer): ``cubic``, ``tf_crop_and_resize``,
``antialias``. Source coordinates follow onnxruntime's formulas in float32; where the exact
coordinate sits on a rounding boundary (e.g. 9 / 1.2 = 7.5) onnxruntime 1.32's binary sometimes
lands one ulp on the other side, so a nearest index can differ by one there and only there (the
tests assert exactly that). Linear interpolation is separable per axis; an output whose shape
equals the input's is a copy, as in onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgedeploy.runtime.ir import RESIZE, Layer
from edgedeploy.runtime.ops.registry import attr, register

F32 = np.float32


def _full_rank(values: Sequence[float], axes: Sequence[int] | None, ndim: int,
               fill: Sequence[float]) -> list[float]:
    if not axes:
        if len(values) != ndim:
            raise ValueError(f"resize needs {ndim} scales/sizes, got {len(values)}")
        return list(values)
    out = list(fill)
    for a, v in zip(axes, values, strict=True):
        out[a % ndim] = v
    return out


def output_geometry(layer: Layer, shape: tuple[int, ...],
                    weights: Mapping[str, np.ndarray]) -> tuple[list[int], list[np.float32]]:
    """(output sizes, per-axis float32 scales) as onnxruntime derives them."""
    ndim = len(shape)
    axes = attr(layer, weights, "axes")
    scales = attr(layer, weights, "scales")
    sizes = attr(layer, weights, "sizes")
    if scales is not None and len(np.ravel(scales)) > 0:
        sc = [F32(s) for s in _full_rank(np.ravel(scales).tolist(), axes, ndim, [1.0] * ndim)]
        out = [int(s * F32(n)) for s, n in zip(sc, shape, strict=True)]
        return out, sc
    if sizes is not None and len(np.ravel(sizes)) > 0:
        out = [int(s) for s in _full_rank(np.ravel(sizes).tolist(), axes, ndim, list(shape))]
    else:
        d = layer.descriptor
        out = [*shape[:-2], d.h_out, d.w_out]
    return out, [F32(o) / F32(n) for o, n in zip(out, shape, strict=True)]


def original_coords(mode: str, n_out: int, n_in: int, scale: np.float32) -> np.ndarray:
    """Source coordinate of every output position along one axis (float32)."""
    x = np.arange(n_out, dtype=F32)
    half = F32(0.5)
    if mode == "half_pixel":
        return (x + half) / scale - half
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if n_out > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if mode == "align_corners":
        return (x * F32(n_in - 1)) / F32(n_out - 1) if n_out > 1 else np.zeros_like(x)
    if mode == "half_pixel_symmetric":
        # The output width is a float32 product, the rest double precision narrowed at the end:
        # the mix that reproduces onnxruntime 1.32's ties (checked against it in the tests).
        output_width = np.float64(scale * F32(n_in))
        offset = (n_in / 2.0) * (1.0 - n_out / output_width)
        return (offset + (x.astype(np.float64) + 0.5) / np.float64(scale) - 0.5).astype(F32)
    raise ValueError(f"coordinate_transformation_mode {mode!r} is not supported")


def nearest_index(coords: np.ndarray, mode: str, n_in: int) -> np.ndarray:
    """Round source coordinates to input indices the way onnxruntime does, then clamp."""
    if mode == "round_prefer_floor":
        tie = coords == np.trunc(coords) + F32(0.5)
        idx = np.where(tie, np.floor(coords), _round_away(coords))
    elif mode == "round_prefer_ceil":
        idx = _round_away(coords)
    elif mode == "floor":
        idx = np.floor(coords)
    elif mode == "ceil":
        idx = np.ceil(coords)
    else:
        raise ValueError(f"nearest_mode {mode!r} is not supported")
    return np.clip(idx.astype(np.int64), 0, n_in - 1)


def _round_away(x: np.ndarray) -> np.ndarray:
    """C's std::round: halves away from zero (numpy's round is half-to-even)."""
    return np.sign(x) * np.floor(np.abs(x) + F32(0.5))


def _linear_axis(x: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    n_in = x.shape[axis]
    c = np.clip(coords, F32(0), F32(n_in - 1))
    i0 = np.minimum(c.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.where(i0 == i1, F32(0.5), c - i0.astype(F32)).astype(F32)
    w0 = np.where(i0 == i1, F32(0.5), i1.astype(F32) - c).astype(F32)
    shape = [1] * x.ndim
    shape[axis] = -1
    return (np.take(x, i0, axis=axis) * w0.reshape(shape)
            + np.take(x, i1, axis=axis) * w1.reshape(shape))


@register(RESIZE)
def resize(layer: Layer, inputs: list[np.ndarray],
           weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    mode = str(layer.attrs.get("mode", "nearest")).lower()
    mode = {"bilinear": "linear"}.get(mode, mode)
    if mode not in ("nearest", "linear"):
        raise ValueError(f"resize mode {mode!r} is not supported natively (nearest, linear)")
    if layer.attrs.get("antialias"):
        raise ValueError("resize with antialias is not supported natively")
    ctm = str(layer.attrs.get("coordinate_transformation_mode", "half_pixel"))
    nearest_mode = str(layer.attrs.get("nearest_mode", "round_prefer_floor"))
    out_shape, scales = output_geometry(layer, x.shape, weights)
    if tuple(out_shape) == x.shape:  # onnxruntime copies whatever the scales say
        return [x.copy()]
    y = x
    for axis, (n_out, n_in, scale) in enumerate(zip(out_shape, x.shape, scales, strict=True)):
        if n_out == n_in and scale == F32(1):
            continue
        coords = original_coords(ctm, n_out, n_in, scale)
        if mode == "nearest":
            y = np.take(y, nearest_index(coords, nearest_mode, n_in), axis=axis)
        else:
            y = _linear_axis(y, axis, coords)
    return [y]
