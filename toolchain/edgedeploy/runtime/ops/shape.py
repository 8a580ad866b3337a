"""Layout ops: ``flatten``, ``reshape``, ``transpose``, ``pad`` (ONNX semantics).

Reads (each also accepted as a weight of the same role, for ONNX inputs kept as constants):
* flatten: ``attrs["axis"]`` (default 1, negative allowed): ``(prod(d[:axis]), prod(d[axis:]))``.
* reshape: ``attrs["shape"]``: 0 copies the input dim at that position (unless
  ``attrs["allowzero"]``), -1 is inferred.
* transpose: ``attrs["perm"]`` (default: reversed axes). The result is made contiguous, since
  the next layer (usually a conv) wants it so.
* pad: ``attrs["pads"]`` in ONNX order (every begin, then every end; negative values crop),
  optional ``attrs["axes"]`` (Pad-18) naming the axes those pads are for, ``attrs["mode"]``
  (``constant`` | ``reflect`` | ``edge`` | ``wrap``, default constant), ``attrs["value"]``
  (constant fill, default 0; a weight ``"value"`` or ``"constant_value"`` works too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edgedeploy.runtime.ir import FLATTEN, PAD, RESHAPE, TRANSPOSE, Layer
from edgedeploy.runtime.ops.registry import attr, int_list, register


@register(FLATTEN)
def flatten(layer: Layer, inputs: list[np.ndarray],
            weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    axis = int(layer.attrs.get("axis", 1))
    if axis < 0:
        axis += x.ndim
    if not 0 <= axis <= x.ndim:
        raise ValueError(f"flatten axis {axis} out of range for rank {x.ndim}")
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


def onnx_reshape_target(in_shape: tuple[int, ...], shape: list[int],
                        allowzero: bool = False) -> tuple[int, ...]:
    """Resolve an ONNX Reshape ``shape`` (0 copies, -1 infers) against ``in_shape``."""
    out = [in_shape[i] if (s == 0 and not allowzero) else s for i, s in enumerate(shape)]
    if out.count(-1) > 1:
        raise ValueError(f"reshape shape {shape} has more than one -1")
    if -1 in out:
        known = math.prod(s for s in out if s != -1)
        total = math.prod(in_shape)
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {in_shape} to {shape}")
        out[out.index(-1)] = total // known
    if math.prod(out) != math.prod(in_shape):
        raise ValueError(f"cannot reshape {in_shape} ({math.prod(in_shape)} elements) to {out}")
    return tuple(out)


@register(RESHAPE)
def reshape(layer: Layer, inputs: list[np.ndarray],
            weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    shape = int_list(attr(layer, weights, "shape"))
    if shape is None:
        raise ValueError("reshape needs attrs['shape']")
    target = onnx_reshape_target(x.shape, shape, bool(layer.attrs.get("allowzero", 0)))
    return [x.reshape(target)]


@register(TRANSPOSE)
def transpose(layer: Layer, inputs: list[np.ndarray],
              weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    perm = int_list(layer.attrs.get("perm"))
    return [np.ascontiguousarray(np.transpose(inputs[0], perm))]


def _pad_widths(x: np.ndarray, pads: list[int], axes: list[int] | None) -> list[tuple[int, int]]:
    axes = [a % x.ndim for a in axes] if axes else list(range(x.ndim))
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads {pads} must hold a begin and an end for each of {len(axes)} axes")
    widths = [(0, 0)] * x.ndim
    for k, axis in enumerate(axes):
        widths[axis] = (pads[k], pads[k + len(axes)])
    return widths


@register(PAD)
def pad(layer: Layer, inputs: list[np.ndarray],
        weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    pads = int_list(attr(layer, weights, "pads"))
    if pads is None:
        raise ValueError("pad needs attrs['pads']")
    widths = _pad_widths(x, pads, int_list(attr(layer, weights, "axes")))
    # Negative pads crop first (ONNX allows them); then pad by the positive parts.
    crop = tuple(slice(max(0, -b), x.shape[i] - max(0, -e))
                 for i, (b, e) in enumerate(widths))
    x = x[crop]
    positive = [(max(0, b), max(0, e)) for b, e in widths]
    mode = str(layer.attrs.get("mode", "constant")).lower()
    if mode == "constant":
        value = attr(layer, weights, "value", None)
        if value is None:
            value = attr(layer, weights, "constant_value", 0.0)
        fill = float(np.asarray(value).reshape(-1)[0]) if np.size(value) else 0.0
        return [np.pad(x, positive, mode="constant", constant_values=fill)]
    if mode in ("reflect", "edge", "wrap"):
        return [np.pad(x, positive, mode=mode)]
    raise ValueError(f"pad mode {mode!r} is not one of constant, reflect, edge, wrap")
