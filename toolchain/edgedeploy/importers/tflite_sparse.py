"""Densifying TFLite sparse constants (the tensor ``sparsity`` block) on import.

Why: pruned models (MediaPipe's "_sparse" detectors) store weights compressed; the flatbuffer
holds only the kept values and a DENSIFY operator expands them at run time. The IR wants dense
weights, so the importer expands them once, exactly as LiteRT's ``FormatConverter::SparseToDense``
does (tensorflow/lite/kernels/internal/utils/sparsity_format_converter.cc):

* the tensor is walked in ``traversal_order`` over the original dimensions followed by the block
  dimensions (``block_map`` names which original dimension each block dimension subdivides);
* level ``i`` of the walk is described by ``dim_metadata[i]``: DENSE (every index ``0 ..
  dense_size-1``) or SPARSE_CSR (``array_segments[p] .. array_segments[p+1]`` of
  ``array_indices`` for the parent position ``p``);
* the stored values are the leaves of that walk in depth-first order.

The walk is expanded level by level with numpy (breadth-first, children kept contiguous, which
is the same order as the depth-first recursion), so a large pruned tensor densifies in
milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgedeploy.errors import ModelError

DENSE, SPARSE_CSR = 0, 1


def _vector(value: Any) -> np.ndarray:
    """A flatbuffer Int32/Uint16/Uint8 vector union (or None) as an int64 array."""
    values = getattr(value, "values", None) if value is not None else None
    return np.asarray([] if values is None else values, dtype=np.int64).reshape(-1)


def densify(values: np.ndarray, shape: Sequence[int], sparsity: Any) -> np.ndarray:
    """The dense tensor of ``shape`` that sparse ``values`` (1-D, in walk order) and the
    ``SparsityParametersT`` describe; :class:`ModelError` when they disagree."""
    shape = [int(d) for d in shape]
    rank = len(shape)
    order = [int(v) for v in (sparsity.traversalOrder if sparsity.traversalOrder is not None
                              else range(rank))]
    block_map = [int(v) for v in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    metas = list(sparsity.dimMetadata or [])
    if len(order) != rank + len(block_map) or len(metas) != len(order):
        raise ModelError(f"sparsity of a {shape} tensor: traversal order {order}, block map "
                         f"{block_map} and {len(metas)} dimension metadata do not agree")
    dense_size = [int(m.denseSize) for m in metas]
    block_size = [dense_size[order[rank + j]] for j in range(len(block_map))]
    prev = np.zeros(1, dtype=np.int64)
    coords: list[np.ndarray] = []
    for level, meta in enumerate(metas):
        if int(meta.format) == DENSE:
            size = dense_size[level]
            coords = [np.repeat(c, size) for c in coords]
            coords.append(np.tile(np.arange(size, dtype=np.int64), len(prev)))
            prev = (prev[:, None] * size + np.arange(size, dtype=np.int64)).reshape(-1)
            continue
        segments, indices = _vector(meta.arraySegments), _vector(meta.arrayIndices)
        if prev.size and (prev.max() + 1 >= segments.size or segments[-1] > indices.size):
            raise ModelError(f"sparsity of a {shape} tensor: CSR segments of level {level} do "
                             f"not cover its {prev.size} parent positions")
        starts, stops = segments[prev], segments[prev + 1]
        counts = np.maximum(stops - starts, 0)
        child = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        coords = [np.repeat(c, counts) for c in coords]
        coords.append(indices[child])
        prev = child
    flat_values = np.asarray(values).reshape(-1)
    if prev.size != flat_values.size:
        raise ModelError(f"sparsity of a {shape} tensor describes {prev.size} values, the "
                         f"buffer holds {flat_values.size}")
    index = [np.zeros(prev.size, dtype=np.int64) for _ in range(rank)]
    for level in range(rank):
        index[order[level]] = coords[level]
    for level in range(rank, len(order)):
        block = order[level] - rank
        dim = block_map[block]
        index[dim] = index[dim] * block_size[block] + coords[level]
    if any((ix >= size).any() or (ix < 0).any() for ix, size in zip(index, shape, strict=True)):
        raise ModelError(f"sparsity of a {shape} tensor indexes outside the tensor")
    dense = np.zeros(shape, dtype=flat_values.dtype)
    dense[tuple(index)] = flat_values
    return dense
