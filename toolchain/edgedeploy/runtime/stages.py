"""Cutting a graph into pipeline stages and running one stage inside a pipeline process.

A pipeline cut at layer indices ``cuts`` has boundaries; the tensors crossing boundary ``k`` are
everything produced up to it (graph inputs included) that a later layer or the caller still needs.
A skip connection that jumps over a whole stage is passed through by that stage unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import GraphExecutor, segment_io


def boundary_tensors(graph: ir.Graph, cut: int) -> list[str]:
    """Tensors live across a cut before layer index ``cut`` (deterministic order)."""
    graph_outputs = [t.name for t in graph.outputs]
    available = [t.name for t in graph.inputs] + [t for layer in graph.layers[:cut]
                                                   for t in layer.outputs]
    needed = {t for layer in graph.layers[cut:] for t in layer.inputs} | set(graph_outputs)
    if cut >= len(graph.layers):
        return [t for t in graph_outputs if t in set(available)]
    return [t for t in available if t in needed]


def stage_ranges(n_layers: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """``cuts`` are the first layer index of every stage after the first."""
    bounds = [0, *sorted(cuts), n_layers]
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"cuts {list(cuts)} do not split {n_layers} layers into non-empty stages")
    return list(itertools.pairwise(bounds))


@dataclass(frozen=True)
class StageIO:
    start: int
    stop: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def plan_stage_io(graph: ir.Graph, cuts: Sequence[int]) -> list[StageIO]:
    """Inputs/outputs of every stage (outputs of the last are the graph outputs)."""
    out = []
    for start, stop in stage_ranges(len(graph.layers), cuts):
        out.append(StageIO(start, stop, tuple(boundary_tensors(graph, start)),
                           tuple(boundary_tensors(graph, stop))))
    return out


class GraphStage:
    """The callable a pipeline process runs: list of input arrays -> list of output arrays."""

    def __init__(self, graph: ir.Graph, io: StageIO, choices: Mapping[str, str],
                 segments: Mapping[tuple[tuple[str, ...], tuple[str, ...]], bytes | str]
                 | None = None,
                 cpus: Sequence[int] | None = None) -> None:
        self.io = io
        segs = dict(segments or {})

        def provider(inputs: list[str], outputs: list[str]) -> bytes | str:
            # Handed over, not kept: a segment's model bytes must not outlive its session.
            return segs.pop((tuple(inputs), tuple(outputs)))

        self.executor = GraphExecutor(graph, choices, start=io.start, stop=io.stop,
                                      segment_provider=provider if segs else None, cpus=cpus)

    def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        env = dict(zip(self.io.inputs, xs, strict=True))
        env.update(self.executor.run({t: env[t] for t in self.executor.inputs}))
        return [env[t] for t in self.io.outputs]


def ort_segments_needed(graph: ir.Graph, io: StageIO,
                        choices: Mapping[str, str]) -> list[tuple[list[str], list[str]]]:
    """The (inputs, outputs) of every onnxruntime segment a stage will ask its provider for."""
    from edgedeploy.runtime.executor import ORT, default_choice

    result = []
    i = io.start
    while i < io.stop:
        layer = graph.layers[i]
        if (choices.get(layer.name) or default_choice(layer)) != ORT:
            i += 1
            continue
        j = i
        while j < io.stop and (choices.get(graph.layers[j].name)
                               or default_choice(graph.layers[j])) == ORT:
            j += 1
        result.append(segment_io(graph, i, j))
        i = j
    return result
