"""Preparing an ONNX model for conversion: load, fix dynamic inputs, shapes, names.

Real exporters leave work for the importer: PyTorch computes a Flatten's target shape at run time
(Shape -> Gather -> Unsqueeze -> Concat -> Reshape), TF2ONNX and Paddle emit Constant nodes, and
symbolic batch or spatial dims hide shapes. After this module every activation tensor has a
concrete shape and every tensor computable from constants alone is a numpy value (a weight).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgedeploy.errors import InputError, ModelError
from edgedeploy.importers import SHAPE_HINT, check_model_file

log = logging.getLogger(__name__)

#: Ops never folded even when their inputs are constant (their value is not a function of them).
_NON_DETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
     "Bernoulli"}
)



@dataclass
class Prepared:
    """A model ready for op mapping: concrete shapes, constants as values, nodes still ONNX."""

    model: onnx.ModelProto
    opset: int
    inputs: list[tuple[str, tuple[int, ...], str]]
    outputs: list[str]
    nodes: list[onnx.NodeProto]  # the non-constant nodes, uniquely named, in topological order
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    initializers: frozenset[str] = frozenset()
    #: Inputs whose dynamic batch axis was taken as 1 (``fix_inputs``).
    batch_taken_as_1: list[str] = field(default_factory=list)


def load_proto(model: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, object]]:
    """Read a model file (or take a proto) and describe where it came from."""
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        proto = model
        path = None
    else:
        path = check_model_file(model)
        data = path.read_bytes()
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:
            raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})",
                             "is the file complete? re-export or re-download it") from exc
        if path.parent != Path() and any(_uses_external_data(t) for t in proto.graph.initializer):
            onnx.load_external_data_for_model(proto, str(path.parent))
    if not proto.graph.node and not proto.graph.input:
        where = path or "model"
        raise ModelError(f"{where}: the ONNX model has no graph",
                         "is this really an .onnx file? re-export it")
    source = {
        "format": "onnx",
        "path": str(path) if path else None,
        "sha256": hashlib.sha256(data).hexdigest(),
        "opset": default_opset(proto),
        "producer": " ".join(x for x in (proto.producer_name, proto.producer_version) if x),
    }
    return proto, source


def _uses_external_data(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL


def default_opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def real_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old exporters list weights as inputs too)."""
    inits = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in inits]


def fix_inputs(proto: onnx.ModelProto,
               input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None,
               input_name: str | None) -> tuple[onnx.ModelProto, list[str]]:
    """Return a copy whose inputs all have concrete dims, from the overrides where given, and
    the inputs whose batch axis was taken as 1 (:func:`_batch_axis`).

    ``input_shape`` is one shape (see :func:`_override_target` for which input it fixes) or a
    mapping input name -> shape. A symbolic dimension (``batch``) fixed on one input fixes the
    same-named dimension of the inputs given no shape.
    """
    proto = copy.deepcopy(proto)
    inputs = real_inputs(proto)
    overrides = _overrides(inputs, input_shape, input_name)
    bound: dict[str, int] = {}
    for vi in inputs:
        if vi.name in overrides:
            bound.update(_symbols(vi, overrides[vi.name]))
            _apply_override(vi, overrides[vi.name])
    assumed: set[str] = set()
    batched = [vi.name for vi in inputs
               if vi.name not in overrides and _batch_axis(vi, bound, assumed)]
    for vi in inputs:
        if vi.name in overrides:
            continue
        dims = vi.type.tensor_type.shape.dim
        for d in dims:  # a symbol another input's shape fixed
            if not d.HasField("dim_value") and d.dim_param in bound:
                d.dim_value = bound[d.dim_param]
        dynamic = [i for i, d in enumerate(dims) if not d.HasField("dim_value") or d.dim_value <= 0]
        if dynamic or not vi.type.tensor_type.HasField("shape"):
            names = ", ".join(dims[i].dim_param or "?" for i in dynamic) or "rank unknown"
            raise InputError(f"model input {vi.name!r} has dynamic dimensions ({names})",
                             SHAPE_HINT)
    # Stale symbolic annotations would fight the concrete shapes during inference.
    del proto.graph.value_info[:]
    for out in proto.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    return proto, batched


def _batch_axis(vi: onnx.ValueInfoProto, bound: dict[str, int], assumed: set[str]) -> bool:
    """Take an input's dynamic leading axis as a batch of 1 where it is the input's only
    dynamic dimension (``[batch, 3, 224, 224]``, as exporters write a batch axis; onnxruntime
    runs any size), binding its symbol for the other inputs (``assumed``); whether it did.
    Every other dynamic dimension still has to be given: its size changes the work, a batch's
    does not."""
    dims = vi.type.tensor_type.shape.dim

    def free(d: onnx.TensorShapeProto.Dimension) -> bool:
        return ((not d.HasField("dim_value") or d.dim_value <= 0)
                and (d.dim_param not in bound or d.dim_param in assumed))

    if len(dims) < 2 or not free(dims[0]) or any(free(d) for d in dims[1:]):
        return False
    if dims[0].dim_param:
        bound[dims[0].dim_param] = 1
        assumed.add(dims[0].dim_param)
    dims[0].dim_value = 1
    return True


def _overrides(inputs: list[onnx.ValueInfoProto],
               input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None,
               input_name: str | None) -> dict[str, tuple[int, ...]]:
    """Input name -> the shape the caller gives it."""
    if isinstance(input_shape, Mapping):
        names = [v.name for v in inputs]
        unknown = sorted(set(input_shape) - set(names))
        if unknown:
            raise InputError(f"the input shapes name {unknown}, which the model has no input "
                             f"called", f"its inputs are: {', '.join(names) or '(none)'}")
        return {k: tuple(int(d) for d in v) for k, v in input_shape.items()}
    target = _override_target(inputs, input_shape, input_name)
    if target is None or input_shape is None:
        return {}
    return {target: tuple(int(d) for d in input_shape)}


def _symbols(vi: onnx.ValueInfoProto, shape: Sequence[int]) -> dict[str, int]:
    """Symbolic dimension name -> the size an override gives it."""
    dims = vi.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        return {}
    return {d.dim_param: int(s) for d, s in zip(dims, shape, strict=True)
            if d.dim_param and not d.HasField("dim_value")}


def _override_target(inputs: list[onnx.ValueInfoProto], input_shape: Sequence[int] | None,
                     input_name: str | None) -> str | None:
    names = [v.name for v in inputs]
    if input_name is not None and input_name not in names:
        raise InputError(f"model has no input named {input_name!r}",
                         f"its inputs are: {', '.join(names) or '(none)'}")
    if input_shape is None:
        return input_name
    if input_name is not None:
        return input_name
    if len(names) == 1:
        return names[0]
    dynamic = [v.name for v in inputs if any(
        not d.HasField("dim_value") or d.dim_value <= 0 for d in v.type.tensor_type.shape.dim)]
    if len(dynamic) == 1:
        return dynamic[0]
    raise InputError(f"the model has {len(names)} inputs; which one does the shape override mean?",
                     f"name it with --input-name (one of: {', '.join(names)})")


def _apply_override(vi: onnx.ValueInfoProto, shape: Sequence[int]) -> None:
    tt = vi.type.tensor_type
    dims = tt.shape.dim
    if tt.HasField("shape") and len(dims) != len(shape):
        raise InputError(f"input {vi.name!r} has rank {len(dims)} but the shape override "
                         f"{tuple(shape)} has rank {len(shape)}",
                         f"give {len(dims)} comma-separated sizes")
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != shape[i]:
            raise InputError(f"input {vi.name!r} has a fixed size {d.dim_value} in dimension {i};"
                             f" the override asks for {shape[i]}",
                             "only dynamic dimensions can be overridden")
    tt.ClearField("shape")
    tt.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=int(s)) for s in shape)


def infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with data propagation (strict first, lenient if strict refuses)."""
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and friends; fall back, then check
        log.info("strict shape inference failed (%s); retrying leniently", exc)
    try:
        return onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:
        raise ModelError(f"ONNX shape inference failed: {exc}",
                         "check the model with onnx.checker; is the input shape right?") from exc


def known_shapes(proto: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Concrete shapes and dtypes of every annotated tensor (unknown dims are left out)."""
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    g = proto.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        if tt.elem_type:
            dtypes[vi.name] = _dtype_name(tt.elem_type)
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    return shapes, dtypes


def _dtype_name(elem_type: int) -> str:
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def name_nodes(proto: onnx.ModelProto) -> None:
    """Give every node a unique, deterministic name (unnamed ones: ``<OpType>_<index>``)."""
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        base = node.name or f"{node.op_type}_{i}"
        name, k = base, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        seen.add(name)


def outer_scope_inputs(node: onnx.NodeProto) -> list[str]:
    """Tensors a node's subgraphs (If branches, Loop and Scan bodies) read from the enclosing
    graph: inputs in all but name, which a segment boundary must carry like ``node.input``."""
    names: list[str] = []
    for attr in node.attribute:
        graphs = ([attr.g] if attr.type == onnx.AttributeProto.GRAPH
                  else list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else [])
        for g in graphs:
            defined = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
            for inner in g.node:
                for t in [*inner.input, *outer_scope_inputs(inner)]:
                    if t not in defined and t not in names:
                        names.append(t)
                defined.update(inner.output)
    return names
