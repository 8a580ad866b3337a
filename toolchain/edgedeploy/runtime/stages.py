"""Cutting a graph into pipeline stages and running one stage inside a pipeline process.

A pipeline cut at layer indices ``cuts`` has boundaries; the tensors crossing boundary ``k`` are
everything produced up to it (graph inputs included) that a later layer or the caller still needs.
A skip connection that jumps over a whole stage is passed through by that stage unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.engines import EngineOptions, engine_spec, is_segment_choice
from edgedeploy.runtime.executor import GraphExecutor, default_choice, segment_io, tensor_dtype
from edgedeploy.runtime.layouts import edge_layouts
from edgedeploy.runtime.vocab import NCHW

#: A segment model's identity: (segment file format, input names, output names). Engines that
#: share a format (onnxruntime on CPU and on a GPU) share the file.
SegmentKey = tuple[str, tuple[str, ...], tuple[str, ...]]


def segment_key(engine: str, inputs: Sequence[str], outputs: Sequence[str]) -> SegmentKey:
    return (engine_spec(engine).segment_format, tuple(inputs), tuple(outputs))


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


def unfused_cuts(graph: ir.Graph) -> frozenset[int]:
    """Layer indices a stage must not start at: there the cut would separate a
    DequantizeLinear from a consumer, whose segment would then start at a float tensor, and
    onnxruntime would run that consumer in float instead of fusing DequantizeLinear -> op ->
    QuantizeLinear into an integer kernel (its output moves by a quantization step, and a float
    tensor four times the int8 one crosses the hop). A cut before the DequantizeLinear carries
    the int8 tensor instead."""
    last_use: dict[str, int] = {}
    for j, layer in enumerate(graph.layers):
        for t in layer.inputs:
            last_use[t] = j
    out: set[int] = set()
    for i, layer in enumerate(graph.layers):
        if layer.attrs.get("onnx_op_type") == "DequantizeLinear":
            for t in layer.outputs:
                out.update(range(i + 1, last_use.get(t, i) + 1))
    return frozenset(out)


def plan_stage_io(graph: ir.Graph, cuts: Sequence[int]) -> list[StageIO]:
    """Inputs/outputs of every stage (outputs of the last are the graph outputs)."""
    out = []
    for start, stop in stage_ranges(len(graph.layers), cuts):
        out.append(StageIO(start, stop, tuple(boundary_tensors(graph, start)),
                           tuple(boundary_tensors(graph, stop))))
    return out


class GraphStage:
    """The callable a pipeline process runs: list of input arrays -> list of output arrays,
    the model's own inputs and outputs among them in the model's own layout
    (``layouts.edge_layouts``), every other tensor in the IR's."""

    def __init__(self, graph: ir.Graph, io: StageIO, choices: Mapping[str, str],
                 segments: Mapping[SegmentKey, bytes | str] | None = None,
                 cpus: Sequence[int] | None = None,
                 options: EngineOptions | None = None) -> None:
        self.io = io
        segs = dict(segments or {})

        def provider(engine: str, inputs: list[str], outputs: list[str]) -> bytes | str:
            # Handed over, not kept: a segment's model bytes must not outlive its session.
            return segs.pop(segment_key(engine, inputs, outputs))

        self.executor = GraphExecutor(graph, choices, start=io.start, stop=io.stop,
                                      segment_provider=provider if segs else None, cpus=cpus,
                                      options=options, edges=edge_layouts(graph))
        #: Where the one engine session takes frames in order (``run_ordered``): the stage's
        #: inputs in the engine's order and the engine's outputs the stage hands on (None:
        #: the same order, all of them).
        self._ordered = False
        self._order: list[int] | None = None
        self._pick: list[int] | None = None
        self._session = self._sole_session()

    def _sole_session(self) -> object | None:
        """The engine session that is the whole stage, where frames can go to it as they come:
        one segment step reading exactly the stage's inputs in the layouts they arrive in,
        making every output the stage hands on in the layouts it hands them on, and fed the
        element types it takes. On a model of 10-20 us a call the executor's bookkeeping
        around that one call cost a third as much again (seen while developing)."""
        ex = self.executor
        if len(ex.steps) != 1 or ex.steps[0].kind != "segment":
            return None
        step = ex.steps[0]
        four = {t for t in (*step.inputs, *step.outputs) if len(ex.graph.shape(t)) == 4}
        same = all(ex.edges.get(t, NCHW) == step.layout_in for t in four & set(step.inputs)) \
            and all(ex.edges.get(t, NCHW) == step.layout_out for t in four & set(step.outputs))
        if (not same or set(step.inputs) != set(self.io.inputs)
                or not set(self.io.outputs) <= set(step.outputs)):
            return None
        self._dtypes = [tensor_dtype(ex.graph, t) for t in self.io.inputs]
        session: Any = step.session
        self._ordered = hasattr(session, "run_ordered")
        if self._ordered:  # the engine's own call order, picked once
            order = [self.io.inputs.index(n) for n in session.input_names]
            pick = [list(session.output_names).index(t) for t in self.io.outputs]
            self._order = None if order == list(range(len(order))) else order
            self._pick = None if pick == list(range(len(session.output_names))) else pick
        return session

    def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        session: Any = self._session
        if session is not None:
            if self._ordered:
                outs = session.run_ordered(xs if self._order is None
                                           else [xs[i] for i in self._order])
                return outs if self._pick is None else [outs[j] for j in self._pick]
            feeds = {t: x if x.dtype == want else x.astype(want)
                     for t, x, want in zip(self.io.inputs, xs, self._dtypes, strict=True)}
            out = session.run(feeds)
            return [out[t] for t in self.io.outputs]
        env = dict(zip(self.io.inputs, xs, strict=True))
        env.update(self.executor.run({t: env[t] for t in self.executor.inputs}))
        return [env[t] for t in self.io.outputs]


def ring_dtype(graph: ir.Graph, name: str) -> str:
    """A boundary tensor's element type as the rings carry it: integer types as the IR has
    them (uint8/int8/int32 in quantized graphs), float32 for every float tensor (the executor
    computes floats in float32). One rule for a pipeline on the host and the board's runner."""
    info = graph.tensors.get(name)
    dtype = np.dtype(info.dtype) if info is not None and info.dtype else np.dtype(np.float32)
    return "float32" if dtype.kind == "f" else str(dtype)


#: Frames per call tried for a stage that can micro-batch (measured where the objective is
#: throughput: by measure-to-decide on the best baseline, by refinement on a device).
BATCH_SIZES = (2, 4)


def batchable(graph: ir.Graph, start: int, stop: int, choices: Mapping[str, str]) -> bool:
    """Can layers ``[start, stop)`` run several frames per call? Only inside CPU engines'
    ONNX segments, which take a free leading batch axis (native kernels are built per shape),
    and only when every tensor crossing the stage's edges leads with a batch axis of 1."""
    from edgedeploy.runtime.engines import ENGINES
    from edgedeploy.runtime.vocab import ONNX

    for layer in graph.layers[start:stop]:
        spec = ENGINES.get(choices.get(layer.name, ""))
        if (spec is None or spec.segment_format != ONNX or spec.on_gpu
                or fixes_batch(layer, graph.shape(layer.inputs[0])[:1] == (1,))):
            return False
    edges = [*boundary_tensors(graph, start), *boundary_tensors(graph, stop)]
    return all(graph.shape(t)[:1] == (1,) for t in edges)


def fixes_batch(layer: ir.Layer, reads_batch_of_one: bool = False) -> bool:
    """A Reshape to a constant shape that spells the batch out (a leading literal, not 0 to copy
    it nor -1): frames batched into it would not fit or, with a -1 further on, would be mixed
    into one. A leading 1 of a tensor that leads with 1 (``reads_batch_of_one``; PP-OCR's
    classifier reshapes to [1, 200], Caffe2's AlexNet to [1, 9216]) does not count: a segment
    with a free batch axis copies the axis there (``importers.onnx_batch``). Squeeze and
    Unsqueeze, also IR reshapes, keep the batch axis in the segment and do not count."""
    if layer.op != ir.RESHAPE or "onnx_op_type" in layer.attrs:
        return False
    shape = list(layer.attrs.get("shape") or [])
    if not shape or (shape[0] == 1 and reads_batch_of_one and not layer.attrs.get("allowzero")):
        return False
    return shape[0] > 0 or (shape[0] == 0 and bool(layer.attrs.get("allowzero")))


def segments_needed(graph: ir.Graph, io: StageIO,
                    choices: Mapping[str, str]) -> list[tuple[str, list[str], list[str]]]:
    """(engine, inputs, outputs) of every segment a stage will ask its provider for: maximal
    runs of consecutive layers with the same segment-engine choice."""
    fmt = str(graph.source.get("format") or "onnx")

    def choice(i: int) -> str:
        layer = graph.layers[i]
        return choices.get(layer.name) or default_choice(layer, fmt)

    result = []
    i = io.start
    while i < io.stop:
        engine = choice(i)
        if not is_segment_choice(engine):
            i += 1
            continue
        j = i
        while j < io.stop and choice(j) == engine:
            j += 1
        ins, outs = segment_io(graph, i, j)
        result.append((engine, ins, outs))
        i = j
    return result
