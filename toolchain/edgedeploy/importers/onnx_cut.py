"""Cutting a contiguous segment of a model into its own ONNX model (host side: imports onnx).

The onnxruntime engine runs a stage's layers as one session; the bundle ships that session's
model, cut from the original by tensor name (the IR keeps source tensor names for this reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx.checker
import onnx.shape_inference
import onnx.utils
from onnx import helper, numpy_helper

from edgedeploy.errors import InputError, ModelError
from edgedeploy.importers.onnx_prep import outer_scope_inputs
from edgedeploy.runtime.executor import segment_io as runtime_segment_io
from edgedeploy.runtime.ir import Graph


def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(str(model))
    except Exception as exc:  # OSError, protobuf DecodeError, ...
        raise ModelError(f"cannot read ONNX model {model}: {exc}") from exc


def _known_tensors(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {i.name for i in g.input} | {i.name for i in g.initializer}
    for node in g.node:
        names.update(node.output)
    return names


def extract_segment(model: str | Path | onnx.ModelProto, inputs: Sequence[str],
                    outputs: Sequence[str]) -> bytes:
    """The sub-model computing ``outputs`` from ``inputs``, serialized and checker-validated."""
    return SegmentCutter(model)(inputs, outputs)


class SegmentCutter:
    """Cuts many segments from one model, paying for loading and shape inference once.

    Uses onnx.utils.Extractor, which keeps exactly the nodes and initializers the outputs need
    and types the new graph inputs/outputs from the value_infos shape inference produced.
    """

    def __init__(self, model: str | Path | onnx.ModelProto, *,
                 constants: Mapping[str, np.ndarray] | None = None,
                 shapes: Mapping[str, Sequence[int]] | None = None,
                 dtypes: Mapping[str, str] | None = None) -> None:
        """``constants``: tensors the importer folded (name -> value), fed to segments as
        initializers; ``shapes`` and ``dtypes``: concrete tensor shapes and element types (the
        IR's), declared on boundaries that shape inference cannot type."""
        proto = _load(model)
        self._known = _known_tensors(proto)
        self._constants = dict(constants or {})
        self._producer = {o: n for n in proto.graph.node for o in n.output}
        typed = _with_value_infos(proto, sorted(self._known), shapes or {}, dtypes or {})
        self._extractor = onnx.utils.Extractor(typed)

    @classmethod
    def for_graph(cls, graph: Graph, model: str | Path | onnx.ModelProto | None = None
                  ) -> SegmentCutter:
        """A cutter for the ONNX model ``graph`` was imported from, with its folded constants
        and concrete (override-resolved) tensor shapes."""
        folded = graph.source.get("onnx_folded", [])
        return cls(model if model is not None else graph.source["path"],
                   constants={name: graph.weights[name] for name in folded},
                   shapes={name: t.shape for name, t in graph.tensors.items()},
                   dtypes={name: t.dtype for name, t in graph.tensors.items()})

    def __call__(self, inputs: Sequence[str], outputs: Sequence[str]) -> bytes:
        unknown = [t for t in [*inputs, *outputs] if t not in self._known]
        if unknown:
            raise InputError(f"segment boundary names tensor(s) not in the model: {unknown}",
                             hint="use the tensor names of the original model (edgedeploy inspect)")
        folded = self._folded_reads(inputs, outputs)
        sub = self._extract([*inputs, *folded], list(outputs))
        _inline_constants(sub, {name: self._constants[name] for name in folded})
        # IR 3 (the ONNX zoo's Caffe2 exports) wants every initializer listed as a graph input
        # too, and a segment's weights are not its inputs; IR 4 lifts that and nothing else
        sub.ir_version = max(sub.ir_version, 4)
        _check_closed(sub, inputs)
        try:
            onnx.checker.check_model(sub)
        except onnx.checker.ValidationError as exc:
            raise ModelError(f"the extracted segment is not a valid ONNX model: {exc}") from exc
        return sub.SerializeToString()


    def _extract(self, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
        """The Extractor's cut, plus the producers of tensors that kept subgraphs (If, Loop)
        read from outside: the Extractor follows ``node.input`` only, so they are asked for as
        extra outputs and those outputs removed again."""
        extra: list[str] = []
        for _ in range(8):
            try:
                sub = self._extractor.extract_model(inputs, [*outputs, *extra])
            except (KeyError, ValueError) as exc:
                raise ModelError(
                    f"cannot cut the segment {inputs} -> {outputs}: {exc}") from exc
            weights = self._extractor.initializers
            missing = _unproduced_outer_reads(sub, inputs)
            sub.graph.initializer.extend(weights[t] for t in missing if t in weights)
            missing = [t for t in missing if t not in weights]
            if not missing:
                break
            extra += [t for t in missing if t in self._known and t not in extra]
        if extra:
            keep = [o for o in sub.graph.output if o.name not in set(extra) - set(outputs)]
            del sub.graph.output[:]
            sub.graph.output.extend(keep)
        return sub

    def _folded_reads(self, inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        """Folded constants the segment's nodes read (walking back from the outputs)."""
        stop, seen, found = set(inputs), set(), []
        todo = list(outputs)
        while todo:
            t = todo.pop()
            if t in seen or t in stop:
                continue
            seen.add(t)
            if t in self._constants:
                found.append(t)
                continue
            node = self._producer.get(t)
            if node is not None:
                todo.extend(i for i in [*node.input, *outer_scope_inputs(node)] if i)
        return sorted(found)


def _inline_constants(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> None:
    """Turn the graph inputs named in ``values`` into initializers holding those values."""
    if not values:
        return
    keep = [vi for vi in model.graph.input if vi.name not in values]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for name in sorted(values):
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(values[name]), name))


def _with_value_infos(proto: onnx.ModelProto, names: Sequence[str],
                      shapes: Mapping[str, Sequence[int]] | None = None,
                      dtypes: Mapping[str, str] | None = None) -> onnx.ModelProto:
    """A copy typed by shape inference (the Extractor types the cut from value_info); a tensor
    inference cannot type (contrib ops such as QLinearAdd, custom domains) is declared with the
    IR's element type and shape (read from an onnxruntime run at import), float32 of unknown
    shape when the IR does not know it either. A wrong element type here is what makes a cut
    segment fail to load ("Type (tensor(float)) of output arg ... does not match tensor(uint8)").
    """
    typed = onnx.ModelProto()
    typed.CopyFrom(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(_weightless(proto))
    except Exception:  # inference is best effort: custom domains, partial models
        inferred = None
    g = typed.graph
    if inferred is not None:  # the values typed, the weights as they are
        del g.value_info[:]
        g.value_info.extend(inferred.graph.value_info)
        del g.output[:]
        g.output.extend(inferred.graph.output)
    shapes, dtypes = shapes or {}, dtypes or {}
    typed_ok = {v.name for v in [*g.value_info, *g.input, *g.output]
                if v.type.tensor_type.HasField("shape") and v.type.tensor_type.elem_type}
    outputs = {v.name: v for v in g.output}
    for name in names:
        if name not in typed_ok:
            shape = [int(d) for d in shapes[name]] if name in shapes else None
            info = helper.make_tensor_value_info(name, elem_type(dtypes.get(name, "float32")),
                                                 shape)
            if name in outputs:  # the Extractor types a cut's outputs by the graph's own
                outputs[name].type.CopyFrom(info.type)
            else:
                g.value_info.append(info)
    return typed


#: Initializers of at least this many elements go to shape inference as their type and shape
#: alone (:func:`_weightless`).
WEIGHTLESS_MIN_ELEMENTS = 4096
#: Element types of tensors whose values an operator's shape inference may read (a Reshape's
#: shape, a Slice's starts), however large: kept whole.
_SHAPE_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def _weightless(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its large initializers' values left out, their type and shape kept: what
    shape inference reads of a weight. Inference serializes the model it is given, and VGG-16's
    0.5 GB took 4 s to infer where its graph alone takes a fraction (seen while developing).
    Values inference may read stay: small tensors (a Resize's scales) and integer ones."""
    light = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(light, field, getattr(proto, field))
    light.opset_import.extend(proto.opset_import)
    light.functions.extend(proto.functions)
    g, src = light.graph, proto.graph
    g.name = src.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(g, field).extend(getattr(src, field))
    for t in src.initializer:
        if t.data_type in _SHAPE_TYPES or int(np.prod(t.dims)) < WEIGHTLESS_MIN_ELEMENTS:
            g.initializer.append(t)
        else:
            g.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    return light


def elem_type(dtype: str) -> int:
    """The ONNX element type of a numpy dtype name (``"uint8"`` -> ``TensorProto.UINT8``)."""
    try:
        return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    except (TypeError, KeyError, ValueError):
        return onnx.TensorProto.FLOAT


def _unproduced_outer_reads(sub: onnx.ModelProto, inputs: Sequence[str]) -> list[str]:
    """Outer-scope reads of kept subgraphs that nothing in the cut provides."""
    available = set(inputs) | {i.name for i in sub.graph.initializer} | {""}
    available |= {o for n in sub.graph.node for o in n.output}
    return [t for n in sub.graph.node for t in outer_scope_inputs(n) if t not in available]


def _check_closed(sub: onnx.ModelProto, inputs: Sequence[str]) -> None:
    """Every tensor a kept node reads must come from the segment inputs, an initializer or a
    kept node; otherwise the boundary misses an input."""
    available = set(inputs) | {i.name for i in sub.graph.initializer} | {""}
    missing: list[str] = []
    for node in sub.graph.node:
        missing += [t for t in [*node.input, *outer_scope_inputs(node)]
                    if t not in available and t not in missing]
        available.update(node.output)
    if missing:
        raise InputError(f"the segment reads tensor(s) {missing} that are not among its inputs",
                         hint="add them to the segment inputs (segment_io computes the boundary)")


def segment_io(graph: Graph, layers_range: range | tuple[int, int]) -> tuple[list[str], list[str]]:
    """(inputs, outputs) crossing the boundary of ``graph.layers[start:stop]``.

    Inputs: tensors read inside and produced before ``start`` (or graph inputs), in order of
    first read. Outputs: tensors produced inside and read at or after ``stop`` or being graph
    outputs, in order of production. Weights are not tensors here (they travel as initializers).
    """
    if isinstance(layers_range, range):
        if layers_range.step != 1:
            raise InputError(f"a segment is a contiguous range, got step {layers_range.step}")
        start, stop = layers_range.start, layers_range.stop
    else:
        start, stop = layers_range
    if not 0 <= start < stop <= len(graph.layers):
        raise InputError(f"segment [{start}, {stop}) is empty or outside the graph's "
                         f"{len(graph.layers)} layers")
    return runtime_segment_io(graph, start, stop)
