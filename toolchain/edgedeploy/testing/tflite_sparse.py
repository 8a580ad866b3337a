"""TFLite's sparsity encoding written from a dense array, for test models.

The inverse of :mod:`edgedeploy.importers.tflite_sparse`, kept separate from it on purpose: the
importer's densify is checked against LiteRT's DENSIFY on files this encoder writes, and a shared
mistake would hide itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema


def sparse_encode(dense: np.ndarray, csr_dims: Sequence[int],
                  block: tuple[int, int] | None = None) -> tuple[np.ndarray, object]:
    """(stored values, ``SparsityParametersT``) of ``dense`` in TFLite's sparsity format:
    the traversal visits the dimensions in order, then the block dimension; a CSR level keeps
    the indices whose sub-tensor holds a non-zero (what LiteRT's DenseToSparse writes)."""
    rank = dense.ndim
    expanded = dense
    if block is not None:
        dim, size = block
        shape = (*dense.shape[:dim], dense.shape[dim] // size, size, *dense.shape[dim + 1:])
        expanded = np.moveaxis(dense.reshape(shape), dim + 1, -1)
    csr = {d % rank for d in csr_dims}
    nodes: list[np.ndarray] = [expanded]
    metas = []
    for level in range(expanded.ndim):
        size = expanded.shape[level]
        meta = schema.DimensionMetadataT()
        if level not in csr:
            meta.format, meta.denseSize = 0, size
            nodes = [node[i] for node in nodes for i in range(size)]
        else:
            segments, indices, kept = [0], [], []
            for node in nodes:
                for i in range(size):
                    if np.any(node[i] != 0):
                        indices.append(i)
                        kept.append(node[i])
                segments.append(len(indices))
            meta.format = 1
            meta.arraySegmentsType = schema.SparseIndexVector.Int32Vector
            meta.arraySegments = schema.Int32VectorT()
            meta.arraySegments.values = segments
            meta.arrayIndicesType = schema.SparseIndexVector.Int32Vector
            meta.arrayIndices = schema.Int32VectorT()
            meta.arrayIndices.values = indices
            nodes = kept
        metas.append(meta)
    sparsity = schema.SparsityParametersT()
    sparsity.traversalOrder = list(range(expanded.ndim))
    sparsity.blockMap = [block[0]] if block is not None else None
    sparsity.dimMetadata = metas
    return np.asarray(nodes, dtype=dense.dtype).reshape(-1), sparsity
