"""Tensor layouts at the edges of a LiteRT segment and of a model (numpy only, device side).

Why: the TFLite importer stores a rank-4 TFLite tensor (NHWC) as its NCHW transposition and keeps
every other rank in TFLite's own shape and element order. A LiteRT segment cut by
:func:`edgedeploy.importers.tflite_cut.cut_tflite` keeps the file's shapes, so its rank-4 tensors
are NHWC (the engine's layout, ``EngineSpec.layout``), converted only where a neighbour wants the
IR's.

A model's own inputs and outputs (its **edges**) cross the runner in the model's own layout: an
application hands a TFLite model NHWC frames, as it hands them to LiteRT, and gets its outputs
as LiteRT returns them. A pipeline carries such a tensor in that layout across every stage
boundary; a stage converts it only where a step inside wants another (:func:`edge_layouts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgedeploy.runtime.vocab import NCHW, NHWC

#: Axes that turn an IR (NCHW) rank-4 array into TFLite's NHWC, and back.
IR_TO_TFLITE = (0, 2, 3, 1)
TFLITE_TO_IR = (0, 3, 1, 2)

#: ``graph.source``'s word for a boundary tensor held NHWC in the model's file.
_SOURCE_NHWC = "NHWC"


def ir_to_tflite(x: np.ndarray) -> np.ndarray:
    """An IR array as LiteRT wants it: rank 4 NCHW -> NHWC (contiguous); other ranks as is."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(IR_TO_TFLITE) if x.ndim == 4 else x)


def tflite_to_ir(x: np.ndarray) -> np.ndarray:
    """A LiteRT array as the IR holds it: rank 4 NHWC -> NCHW (contiguous); other ranks as is."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(TFLITE_TO_IR) if x.ndim == 4 else x)


def edge_layouts(graph: Any) -> dict[str, str]:
    """The model's inputs and outputs whose own layout is not the IR's, by name: NHWC for a
    .tflite model's rank-4 ones. Every other tensor is carried in the IR's layout (NCHW)."""
    source = getattr(graph, "source", None) or {}
    return {m["name"]: NHWC for key in ("inputs", "outputs") for m in source.get(key, [])
            if m.get("layout") == _SOURCE_NHWC}


def own_layout(graph: Any) -> str:
    """The layout the runner takes the model's first input in (an image input's, for
    ``io.preprocess``)."""
    return edge_layouts(graph).get(graph.inputs[0].name, NCHW) if graph.inputs else NCHW


def carried_shape(graph: Any, name: str) -> tuple[int, ...]:
    """The shape tensor ``name`` crosses a stage boundary in: the model's own for its edges."""
    shape = tuple(graph.shape(name))
    if edge_layouts(graph).get(name) == NHWC and len(shape) == 4:
        return tuple(shape[i] for i in IR_TO_TFLITE)
    return shape


def convert(x: np.ndarray, have: str, want: str) -> np.ndarray:
    """A rank-4 array from layout ``have`` to ``want`` (contiguous); others as they are."""
    if have == want or np.ndim(x) != 4:
        return x
    return (ir_to_tflite(x) if (have, want) == (NCHW, NHWC) else tflite_to_ir(x))


def to_model(graph: Any, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """IR-layout tensors (by name) in the layout the model's edges have (inputs to feed a
    pipeline, or a reference's outputs to compare with one's)."""
    edges = edge_layouts(graph)
    return {n: convert(x, NCHW, edges.get(n, NCHW)) for n, x in tensors.items()}


def to_ir(graph: Any, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tensors as a pipeline's edges carry them (by name), in the IR's layout."""
    edges = edge_layouts(graph)
    return {n: convert(x, edges.get(n, NCHW), NCHW) for n, x in tensors.items()}


def stacked_to_ir(graph: Any, name: str, frames: np.ndarray) -> np.ndarray:
    """Frames of input ``name`` stacked on a new first axis, from the model's own layout (as a
    user saves them) to the IR's."""
    if edge_layouts(graph).get(name) == NHWC and frames.ndim == 5:
        return np.ascontiguousarray(np.moveaxis(frames, 4, 2))
    return frames
