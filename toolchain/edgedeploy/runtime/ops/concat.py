"""Joining and cutting tensors: ``concat``, ``split``, ``slice`` (ONNX semantics).

Reads (each also accepted as a weight of the same role, for ONNX inputs kept as constants):
* concat: ``attrs["axis"]`` (default 1, the channel axis); inputs in order.
* split: ``attrs["axis"]`` (default 0, as ONNX), ``attrs["split"]`` (sizes); without sizes the
  axis is cut into ``len(layer.outputs)`` (or ``attrs["num_outputs"]``) parts of
  ``ceil(dim / n)``, the last one smaller (ONNX Split-18).
* slice: ``attrs["starts"]``, ``attrs["ends"]``, ``attrs["axes"]`` (default: the first
  ``len(starts)`` axes), ``attrs["steps"]`` (default 1). Negative indices count from the end and
  out-of-range ones clamp as ONNX Slice specifies (see :func:`onnx_slice`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgedeploy.runtime.ir import CONCAT, SLICE, SPLIT, Layer
from edgedeploy.runtime.ops.registry import attr, int_list, register


@register(CONCAT)
def concat(layer: Layer, inputs: list[np.ndarray],
           weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    axis = int(attr(layer, weights, "axis", 1))
    return [np.concatenate(inputs, axis=axis)]


def split_sizes(dim: int, n_outputs: int, sizes: list[int] | None) -> list[int]:
    """The part lengths of a split of ``dim`` (explicit sizes, or ONNX's ceil-sized chunks)."""
    if sizes:
        if sum(sizes) != dim:
            raise ValueError(f"split sizes {sizes} do not add up to the axis length {dim}")
        return sizes
    if n_outputs < 1:
        raise ValueError("split needs sizes or at least one output")
    chunk = -(-dim // n_outputs)
    out = [min(chunk, max(0, dim - i * chunk)) for i in range(n_outputs)]
    return out


@register(SPLIT)
def split(layer: Layer, inputs: list[np.ndarray],
          weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    axis = int(attr(layer, weights, "axis", 0)) % x.ndim
    n = int(layer.attrs.get("num_outputs") or len(layer.outputs))
    sizes = split_sizes(x.shape[axis], n, int_list(attr(layer, weights, "split")))
    bounds = np.cumsum(sizes)[:-1].tolist()
    return list(np.split(x, bounds, axis=axis))


@register(SLICE)
def slice_(layer: Layer, inputs: list[np.ndarray],
           weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    starts = int_list(attr(layer, weights, "starts")) or []
    ends = int_list(attr(layer, weights, "ends")) or []
    if len(starts) != len(ends):
        raise ValueError(f"slice has {len(starts)} starts but {len(ends)} ends")
    axes = int_list(attr(layer, weights, "axes")) or list(range(len(starts)))
    steps = int_list(attr(layer, weights, "steps")) or [1] * len(starts)
    if not len(axes) == len(steps) == len(starts):
        raise ValueError("slice starts, ends, axes and steps differ in length")
    index: list[slice] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis % x.ndim] = onnx_slice(start, end, step, x.shape[axis % x.ndim])
    return [x[tuple(index)]]


INT64_MAX = 2**63 - 1


def onnx_slice(start: int, end: int, step: int, dim: int) -> slice:
    """The Python slice for one ONNX Slice axis.

    ONNX clamps differently from Python for negative steps (a start below ``-dim`` clamps to 0,
    not to "empty"), and onnxruntime reads ``end == INT64_MAX`` with a negative step as "through
    index 0" (the spec would clamp it to ``dim - 1``); both are reproduced here.
    """
    if step == 0:
        raise ValueError("slice step 0")
    if start < 0:
        start += dim
    if step < 0 and end == INT64_MAX:
        end = -1
    elif end < 0:
        end += dim
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, end if end >= 0 else None, step)
