"""The weights a stage's process is handed: arrays only for the layers it runs itself.

A layer that runs inside an engine segment (onnxruntime, LiteRT) has its weights in the
segment model, which the engine's session copies; the IR's array of the same weights is never
read there. Handing a worker the whole graph's weights anyway doubled what an all-onnxruntime
stage held (a VGG-16 worker stayed at 1.7 GB for 0.55 GB of weights) and made every stage spec
carry the model once more. The sizes of the segment layers' weights stay known, so the
executor's memory accounting (``GraphExecutor.weight_bytes``) is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.engines import is_segment_choice


class StageWeights(Mapping[str, np.ndarray]):
    """Arrays of the layers a stage runs natively; for the layers its engine segments run, only
    their sizes (``nbytes_of``): reading one of those is a KeyError that says why."""

    def __init__(self, arrays: Mapping[str, np.ndarray], held: Mapping[str, int]) -> None:
        self._arrays = dict(arrays)
        self._held = {k: int(v) for k, v in held.items() if k not in self._arrays}

    @classmethod
    def of(cls, graph: ir.Graph, start: int, stop: int,
           choices: Mapping[str, str]) -> StageWeights:
        """The weights of ``graph.layers[start:stop]`` under ``choices``: a layer whose choice is
        an engine segment gives its sizes, every other one (native, a primitive, no choice
        given) its arrays."""
        arrays: dict[str, np.ndarray] = {}
        held: dict[str, int] = {}
        for layer in graph.layers[start:stop]:
            in_segment = is_segment_choice(choices.get(layer.name, ""))
            for key in layer.weights.values():
                if key not in graph.weights:
                    continue
                if in_segment:
                    held[key] = weight_nbytes(graph.weights, key)
                else:
                    arrays[key] = graph.weights[key]
        return cls(arrays, held)

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self._arrays:
            return self._arrays[key]
        if key in self._held:
            raise KeyError(f"{key} is held by an engine segment of this stage, not handed over")
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self._arrays or key in self._held

    def __iter__(self) -> Iterator[str]:
        return iter([*self._arrays, *self._held])

    def __len__(self) -> int:
        return len(self._arrays) + len(self._held)

    def nbytes_of(self, key: str) -> int:
        """An array's size, whether it was handed over or is held by a segment."""
        return int(self._arrays[key].nbytes) if key in self._arrays else self._held[key]


def weight_nbytes(weights: Mapping[str, np.ndarray], key: str) -> int:
    """An array's size without loading it where the mapping can tell (a bundle's lazy npz, a
    stage's segment-held weights)."""
    size_of = getattr(weights, "nbytes_of", None)
    return int(size_of(key)) if size_of is not None else int(weights[key].nbytes)
