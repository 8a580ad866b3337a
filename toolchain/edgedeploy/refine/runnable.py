"""What a candidate needs from the device, checked before it is measured.

Refinement moves cut points and choices; every run of layers on a segment engine then needs its
own segment model. Measured through a deployed bundle's runner, a candidate can only use the
segments that bundle ships (cutting ONNX or .tflite models needs the host's onnx and flatbuffer
code, which the light device runtime does not carry), and a LiteRT run must cover whole TFLite
operators wherever it is measured. Candidates that break either are invalid, so the search never
proposes them instead of failing an evaluation on the board.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from edgedeploy.refine.candidate import Candidate, Space
from edgedeploy.runtime import ir
from edgedeploy.runtime.stages import (
    SegmentKey,
    StageIO,
    batchable,
    segment_key,
    segments_needed,
)
from edgedeploy.runtime.vocab import LITERT, TFLITE


def _segments(graph: ir.Graph, space: Space, cand: Candidate
              ) -> list[tuple[int, str, list[str], list[str]]]:
    choices = dict(zip(space.layer_names, cand.choices, strict=True))
    out = []
    for k, s in enumerate(cand.stages):
        for engine, ins, outs in segments_needed(graph, StageIO(s.start, s.stop, (), ()),
                                                 choices):
            out.append((k, engine, ins, outs))
    return out


def check_for(graph: ir.Graph, space: Space, shipped: Collection[SegmentKey] | None = None,
              free_batch: bool = True) -> Callable[[Candidate], list[str]]:
    """The ``Space.runnable`` predicate: LiteRT runs aligned to operators and, with
    ``shipped``, every segment among those the deployed bundle carries, free in the batch
    (``free_batch``) where a stage micro-batches."""
    bounds: frozenset[int] | None = None
    if graph.source.get("format") == TFLITE:
        from edgedeploy.importers.tflite_cut import litert_boundaries

        bounds = litert_boundaries(graph)

    def check(cand: Candidate) -> list[str]:
        out = _misaligned(cand, bounds) if bounds is not None else []
        if shipped is not None and not out:
            out += [f"stage {k}: the {engine} segment {ins} -> {outs} is not in the deployed "
                    "bundle" for k, engine, ins, outs in _segments(graph, space, cand)
                    if segment_key(engine, ins, outs) not in shipped]
            if not free_batch:
                out += [f"stage {k}: batches {s.batch} frames; the deployed bundle's segments "
                        "hold a batch of one" for k, s in enumerate(cand.stages) if s.batch > 1]
        choices = dict(zip(space.layer_names, cand.choices, strict=True))
        out += [f"stage {k}: cannot batch {s.batch} frames (its edge tensors must lead with a "
                "batch axis of 1)" for k, s in enumerate(cand.stages)
                if s.batch > 1 and not out and not batchable(graph, s.start, s.stop, choices)]
        return out

    return check


def _misaligned(cand: Candidate, bounds: frozenset[int]) -> list[str]:
    """LiteRT runs that start or stop inside a TFLite operator."""
    out = []
    for k, s in enumerate(cand.stages):
        i = s.start
        while i < s.stop:
            if cand.choices[i] != LITERT:
                i += 1
                continue
            j = i
            while j < s.stop and cand.choices[j] == LITERT:
                j += 1
            if i not in bounds or j not in bounds:
                out.append(f"stage {k}: the litert run {i}..{j} splits a TFLite operator")
            i = j
    return out
