"""Cutting a contiguous range of a TFLite model's operators into its own .tflite (host side).

Why: a plan may run some IR layers of an imported .tflite model natively and hand others back to
LiteRT; LiteRT runs whole flatbuffers only, so each LiteRT segment ships as a model cut from the
original by tensor name. The importer records in ``layer.attrs["tflite_ops"] = [first, last]``
which subgraph-0 operators each IR layer came from; a segment may only start or stop where no
operator is split between two layers (:func:`litert_boundaries`).

Names: tensors are addressed by the *importer's* unique names (a repeated TFLite name gets
``_<index>``, an empty one ``tensor_<index>``), and the cut file stores those names, so LiteRT's
input/output details of a segment carry the IR's tensor names.

Layout: in the IR a tensor standing for a rank-4 TFLite tensor is its NCHW transposition (TFLite
is NHWC); tensors of any other rank keep TFLite's shape and element order. A runner feeding a cut
segment from IR arrays therefore transposes rank-4 inputs with axes (0, 2, 3, 1) and rank-4
outputs back with (0, 3, 1, 2): :func:`edgedeploy.runtime.layouts.ir_to_tflite` and
:func:`~edgedeploy.runtime.layouts.tflite_to_ir`. A cut keeps the file's shapes: for an IR
imported with an ``input_shape`` override, resize the segment's inputs (``LiteRTModel``'s
``input_shapes``).

The cut is a backward slice: the operators the outputs need, stopping at the given inputs and at
constants, kept in their original order. Constants (buffers after the flatbuffer included) are
inlined, 16-byte aligned as the TF converter writes them; unused tensors, buffers and operator
codes are dropped; signature defs and the TFLITE_METADATA entry (they describe the old inputs and
outputs) are dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgedeploy.errors import ModelError
from edgedeploy.importers.tflite import _ints, _tensor_names, holds_no_elements
from edgedeploy.runtime.executor import segment_io
from edgedeploy.runtime.ir import Graph, Layer

_DROPPED_METADATA = {"TFLITE_METADATA"}  # input/output descriptions of the original model
_ALIGN = 16


def cut_tflite(data: bytes, inputs: Sequence[str], outputs: Sequence[str],
               shapes: Mapping[str, Sequence[int]] | None = None) -> bytes:
    """A valid .tflite computing ``outputs`` from ``inputs`` (subgraph 0; importer names).

    ``shapes``: input shapes (TFLite layout) the cut declares in place of the file's, of the
    same rank: a segment LiteRT must allocate at the shape it will run, where the file's
    placeholder for a dynamic size cannot even be prepared.
    Raises :class:`ModelError` for an unreadable model, an unknown or constant boundary name, or
    outputs that need a tensor neither computed from ``inputs`` nor constant.
    """
    model = _parse(data)
    sg = model.subgraphs[0]
    names = _tensor_names(sg)
    index = {n: i for i, n in enumerate(names)}
    ins, outs = _lookup(index, inputs, "input"), _lookup(index, outputs, "output")
    buffers = _Buffers(model, data)
    for t in (*ins, *outs):
        if buffers.is_const(sg.tensors[t]):
            raise ModelError(f"segment boundary {names[t]!r} is a constant, not an activation")
    kept = _slice(sg, names, buffers, ins, outs)
    kept = sorted(set(kept) | _side_effects(sg, names, buffers, ins, set(kept)))
    ops = [sg.operators[i] for i in kept]
    used = {t for op in ops for t in _op_tensors(op)}
    tensors = sorted(used | set(ins) | set(outs))
    renumber = {old: new for new, old in enumerate(tensors)}
    for t in tensors:
        tensor = sg.tensors[t]
        tensor.name = names[t]
        tensor.buffer = 0 if t in ins else buffers.carry(tensor.buffer)
        shape = (shapes or {}).get(names[t]) if t in ins else None
        if shape is not None and len(shape) == len(_ints(tensor.shape)):
            tensor.shape = [int(d) for d in shape]
            tensor.shapeSignature = None
    for op in ops:
        op.inputs = [renumber[t] if t >= 0 else -1 for t in _ints(op.inputs)]
        op.outputs = [renumber[t] for t in _ints(op.outputs)]
        if op.intermediates is not None:
            op.intermediates = [renumber[t] for t in _ints(op.intermediates)]
    sg.tensors, sg.operators = [sg.tensors[t] for t in tensors], ops
    sg.inputs, sg.outputs = [renumber[t] for t in ins], [renumber[t] for t in outs]
    model.subgraphs = [sg, *_called_subgraphs(model, ops, buffers)]
    all_ops = [op for g in model.subgraphs for op in g.operators or []]
    codes = sorted({op.opcodeIndex for op in all_ops})
    for op in all_ops:
        op.opcodeIndex = codes.index(op.opcodeIndex)
        _fix_op(op, data)
    for g in model.subgraphs:
        g.debugMetadataIndex = -1
    model.operatorCodes = [model.operatorCodes[c] for c in codes]
    model.metadata = [m for m in model.metadata or []
                      if _text(m.name) not in _DROPPED_METADATA] or None
    for m in model.metadata or []:
        m.buffer = buffers.carry(m.buffer)
    model.buffers, model.metadataBuffer, model.signatureDefs = buffers.new, None, None
    builder = flatbuffers.Builder(buffers.nbytes + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def layer_op_ranges(graph: Graph) -> list[tuple[int, int]]:
    """(first, last) TFLite operator index of each layer; ModelError if one lacks the record."""
    ranges = [_op_range(layer) for layer in graph.layers]
    missing = [layer.name for layer, r in zip(graph.layers, ranges, strict=True) if r is None]
    if missing:
        raise ModelError(f"layers {missing[:4]} carry no 'tflite_ops' record",
                         hint="re-import the .tflite model with this edgedeploy version")
    return [r for r in ranges if r is not None]


def litert_boundaries(graph: Graph) -> frozenset[int]:
    """Layer indices where a LiteRT segment may start or stop: 0, len(layers), and every ``k``
    whose neighbours split no TFLite operator (layers[k-1] ends before layers[k] starts); only
    0 and len(layers) for a stateful model (resource variables)."""
    n = len(graph.layers)
    cuts = {0, n}
    if graph.source.get("format") != "tflite" or graph.source.get("stateful"):
        return frozenset(cuts)  # a stateful model's variables must stay in one interpreter
    ranges = [_op_range(layer) for layer in graph.layers]
    for k in range(1, n):
        before, after = ranges[k - 1], ranges[k]
        if before is not None and after is not None and before[1] < after[0]:
            cuts.add(k)
    return frozenset(cuts)


def segment_tensors(graph: Graph, start: int, stop: int,
                    data: bytes | None = None) -> tuple[list[str], list[str]]:
    """The IR boundary tensors of ``graph.layers[start:stop]``, checked to be a LiteRT segment:
    aligned with TFLite operators and every name a tensor of the source model (``data``, else
    the file at ``graph.source["path"]``)."""
    n = len(graph.layers)
    if not 0 <= start < stop <= n:
        raise ModelError(f"segment [{start}, {stop}) is not a non-empty range of {n} layers")
    if graph.source.get("format") != "tflite":
        raise ModelError(f"graph {graph.name!r} was not imported from a .tflite model")
    cuts = litert_boundaries(graph)
    split = [k for k in (start, stop) if k not in cuts]
    if split:
        raise ModelError(f"segment [{start}, {stop}) splits a TFLite operator at layer index "
                         f"{split[0]}", hint=f"aligned boundaries: {sorted(cuts)}")
    inputs, outputs = segment_io(graph, start, stop)
    names = set(_tensor_names(_parse(_source_bytes(graph, data)).subgraphs[0]))
    foreign = [t for t in [*inputs, *outputs] if t not in names]
    if foreign:
        raise ModelError(f"segment [{start}, {stop}) has boundary tensors that are not tensors of "
                         f"the TFLite model: {foreign}")
    return inputs, outputs


# --- helpers -------------------------------------------------------------------------------
class _Buffers:
    """Old buffer index -> new, carrying data over (inlined, aligned); empty buffers -> 0."""

    def __init__(self, model: Any, data: bytes) -> None:
        self.old, self.data = model.buffers or [], data
        self.new: list[Any] = [schema.BufferT()]
        self.nbytes = 0
        self._map: dict[int, int] = {}

    def _buffer(self, b: int) -> Any:
        if not 0 <= b < max(len(self.old), 1):
            raise ModelError(f"a tensor names buffer {b} of {len(self.old)}")
        return self.old[b] if b > 0 else None

    def raw(self, b: int) -> bytes | None:
        buf = self._buffer(b)
        if buf is None:
            return None
        if buf.offset > 1:  # large models keep buffers after the flatbuffer
            raw = self.data[buf.offset:buf.offset + buf.size]
            if len(raw) != buf.size:
                raise ModelError(f"buffer {b} lies past the end of the file")
            return raw
        return bytes(np.asarray(buf.data, np.uint8)) if buf.data is not None else None

    def is_const(self, tensor: Any) -> bool:
        buf = self._buffer(tensor.buffer)
        if buf is None:
            return False
        return buf.size > 0 if buf.offset > 1 else buf.data is not None and len(buf.data) > 0

    def carry(self, b: int) -> int:
        if b not in self._map:
            raw = self.raw(b)
            if not raw:
                return 0
            self.new.append(_AlignedBuffer(raw))
            self.nbytes += len(raw) + _ALIGN
            self._map[b] = len(self.new) - 1
        return self._map[b]


class _AlignedBuffer(schema.BufferT):  # type: ignore[misc]
    """A buffer whose data starts 16-byte aligned (the object API aligns bytes to 1)."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw

    def Pack(self, builder: flatbuffers.Builder) -> int:  # the object API's method name
        builder.StartVector(1, len(self.raw), _ALIGN)
        builder.head -= len(self.raw)
        builder.Bytes[builder.head:builder.head + len(self.raw)] = self.raw
        vec = builder.EndVector()
        schema.BufferStart(builder)
        schema.BufferAddData(builder, vec)
        return int(schema.BufferEnd(builder))


def _parse(data: bytes) -> Any:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError("not a TFLite model (no 'TFL3' flatbuffer identifier)")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    except Exception as exc:  # a corrupt flatbuffer fails anywhere in the generated reader
        raise ModelError(f"corrupt TFLite model ({type(exc).__name__}: {exc})") from None
    if not model.subgraphs:
        raise ModelError("the TFLite model has no subgraph")
    return model


def _source_bytes(graph: Graph, data: bytes | None) -> bytes:
    if data is None:
        path = Path(graph.source.get("path", ""))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read the source model {path}: {exc}") from None
    want = graph.source.get("sha256")
    if want and hashlib.sha256(data).hexdigest() != want:
        raise ModelError(f"the TFLite model is not the one graph {graph.name!r} was imported from "
                         "(sha256 differs)")
    return data


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""


def _lookup(index: dict[str, int], names: Sequence[str], role: str) -> list[int]:
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ModelError(f"segment {role}(s) {unknown} are not tensors of the TFLite model",
                         hint="use the importer's tensor names (repeats get '_<index>')")
    if len(set(names)) != len(names):
        raise ModelError(f"segment {role}s {list(names)} name a tensor twice")
    return [index[n] for n in names]


def _op_tensors(op: Any) -> list[int]:
    return [t for t in [*_ints(op.inputs), *_ints(op.outputs), *_ints(op.intermediates)]
            if t >= 0]


def _slice(sg: Any, names: list[str], buffers: _Buffers, ins: list[int],
           outs: list[int]) -> list[int]:
    """Indices of the operators ``outs`` need, back to ``ins`` and constants, in order."""
    producer = {t: i for i, op in enumerate(sg.operators or []) for t in _ints(op.outputs)}
    graph_inputs, stops = set(_ints(sg.inputs)), set(ins)
    kept: set[int] = set()
    todo = [(t, t) for t in outs]
    seen: set[int] = set()
    while todo:
        t, origin = todo.pop()
        if t in seen or t in stops:
            continue
        seen.add(t)
        tensor = sg.tensors[t]
        if t in producer:
            kept.add(producer[t])
            todo.extend((u, origin) for u in _ints(sg.operators[producer[t]].inputs) if u >= 0)
        elif not (buffers.is_const(tensor) or tensor.isVariable or holds_no_elements(tensor)):
            why = "a graph input" if t in graph_inputs else "produced by no operator"
            raise ModelError(f"output {names[origin]!r} cannot be computed from inputs "
                             f"{[names[i] for i in ins]}: it needs {names[t]!r}, {why}")
    for i in kept:
        clash = [names[t] for t in _ints(sg.operators[i].outputs) if t in stops]
        if clash:
            raise ModelError(f"the cut splits operator {i}: it computes input {clash[0]!r} "
                             "and a tensor the outputs need")
    return sorted(kept)


def _side_effects(sg: Any, names: list[str], buffers: _Buffers, ins: list[int],
                  kept: set[int]) -> set[int]:
    """Operators with no outputs (ASSIGN_VARIABLE, CALL_ONCE: a streaming model's state
    updates) that the segment can compute, with what they need: no output asks for them, but
    dropping them would freeze the state."""
    extra: set[int] = set()
    for i, op in enumerate(sg.operators or []):
        if i in kept or _ints(op.outputs):
            continue
        try:
            need = _slice(sg, names, buffers, ins, [t for t in _ints(op.inputs) if t >= 0])
        except ModelError:
            continue
        extra.update([i, *need])
    return extra


def _fix_op(op: Any, data: bytes) -> None:
    """Inline custom options stored after the flatbuffer; drop debug metadata links."""
    if op.largeCustomOptionsOffset > 1:
        start, size = op.largeCustomOptionsOffset, op.largeCustomOptionsSize
        op.customOptions = np.frombuffer(data[start:start + size], np.uint8)
        op.largeCustomOptionsOffset = op.largeCustomOptionsSize = 0
    op.debugMetadataIndex = -1


def _called_subgraphs(model: Any, ops: list[Any], buffers: _Buffers) -> list[Any]:
    """Subgraphs 1.. stay whole (same indices, buffers carried) when a kept op calls one (IF,
    WHILE, CALL_ONCE, StableHLO regions); otherwise they are dropped."""
    def calls(op: Any) -> bool:
        return any("subgraph" in key.lower() for opt in (op.builtinOptions, op.builtinOptions2)
                   if opt is not None for key in vars(opt))

    if not any(calls(op) for op in ops):
        return []
    rest = model.subgraphs[1:]
    for tensor in (t for sg in rest for t in sg.tensors or []):
        tensor.buffer = buffers.carry(tensor.buffer)
    return rest


def _op_range(layer: Layer) -> tuple[int, int] | None:
    r = layer.attrs.get("tflite_ops")
    return (int(r[0]), int(r[1])) if r is not None and len(r) == 2 else None
