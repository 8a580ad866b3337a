"""Constant folding and the onnxruntime shape fallback for ONNX import.

Folding: a node is constant when it is a Constant node, a Shape/Size of a tensor whose shape is
known, or a deterministic standard op whose inputs are all constant. Constant nodes are evaluated
with ONNX's reference evaluator (pure numpy) and vanish from the graph; their values become weights
of the layers that read them. A node the evaluator cannot run simply stays in the graph (an opaque
layer), so folding never rejects a model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgedeploy.errors import ModelError
from edgedeploy.importers.onnx_prep import (
    _NON_DETERMINISTIC,
    Prepared,
    default_opset,
    fix_inputs,
    infer,
    known_shapes,
    name_nodes,
    real_inputs,
)
from edgedeploy.runtime.vocab import ORT_ERRORS_ONLY

log = logging.getLogger(__name__)


def prepare(proto: onnx.ModelProto,
            input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
            input_name: str | None = None) -> Prepared:
    """Fixed inputs, every shape concrete, constants folded; see the module docstring."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    work, batched = fix_inputs(_skeleton(proto), input_shape, input_name)
    name_nodes(work)
    toposort(work)
    work = infer(work)
    shapes, dtypes = known_shapes(work)
    opset = default_opset(work)
    consts = dict(inits)
    live = fold_constants(work, consts, shapes, opset)
    if any(o and o not in shapes for n in live for o in n.output):
        # Only now is onnxruntime worth its cost: a live tensor's shape is still open.
        ort_shapes, ort_dtypes = shapes_from_onnxruntime(_with_weights(work, inits))
        shapes.update(ort_shapes)
        dtypes.update(ort_dtypes)
        consts = dict(inits)
        live = fold_constants(work, consts, shapes, opset)
    for name, value in consts.items():
        shapes.setdefault(name, tuple(value.shape))
        dtypes.setdefault(name, str(value.dtype))
    return Prepared(
        model=work,
        opset=opset,
        inputs=[(v.name, shapes[v.name], dtypes.get(v.name, "float32"))
                for v in real_inputs(work)],
        outputs=[o.name for o in work.graph.output],
        nodes=live,
        shapes=shapes,
        dtypes=dtypes,
        consts=consts,
        initializers=frozenset(inits),
        batch_taken_as_1=batched,
    )


#: Initializers larger than this never feed shape computations; inference skips their payload.
_SKELETON_MIN_ELEMS = 4096


def _skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose big initializers keep dims and type but no data (inference stays cheap).

    Shape inference serialises the whole model; on VGG-16 that is half a gigabyte twice.
    """
    work = onnx.ModelProto()
    _copy_fields(proto, work, skip="graph")
    _copy_fields(proto.graph, work.graph, skip="initializer")
    for t in proto.graph.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) < _SKELETON_MIN_ELEMS:
            work.graph.initializer.append(t)
        else:
            work.graph.initializer.append(onnx.TensorProto(name=t.name, dims=t.dims,
                                                           data_type=t.data_type))
    return work


def _copy_fields(src: Any, dst: Any, skip: str) -> None:
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if hasattr(value, "extend"):  # repeated field
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _with_weights(work: onnx.ModelProto, inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    full = onnx.ModelProto()
    full.CopyFrom(work)
    del full.graph.initializer[:]
    full.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    return full


def toposort(proto: onnx.ModelProto) -> None:
    """Sort nodes topologically, keeping the file's order wherever it is already valid."""
    nodes = list(proto.graph.node)
    available = {v.name for v in proto.graph.input} | {t.name for t in proto.graph.initializer}
    available.add("")
    ordered: list[onnx.NodeProto] = []
    pending = nodes
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # inputs that nothing produces (outer-scope names, bugs)
            missing = sorted({i for n in rest for i in n.input if i not in available})
            raise ModelError(f"the ONNX graph reads tensors nothing produces: {missing[:5]}",
                             "check the model with onnx.checker.check_model")
        pending = rest
    del proto.graph.node[:]
    proto.graph.node.extend(ordered)


def shapes_from_onnxruntime(
    proto: onnx.ModelProto,
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Run the model once with every intermediate exposed, to read shapes inference left open."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    declared = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in declared:
                probe.graph.output.append(onnx.ValueInfoProto(name=out))
                declared.add(out)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = ORT_ERRORS_ONLY
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        feeds = {i.name: _sample(i) for i in sess.get_inputs()}
        names = [o.name for o in sess.get_outputs()]
        values = sess.run(names, feeds)
    except Exception as exc:
        raise ModelError(f"cannot determine tensor shapes: ONNX shape inference left some open "
                         f"and onnxruntime could not run the model ({exc})",
                         "check the model runs in onnxruntime with the given input shape") from exc
    shapes = {n: tuple(int(d) for d in np.shape(v)) for n, v in zip(names, values, strict=True)}
    dtypes = {n: str(np.asarray(v).dtype) for n, v in zip(names, values, strict=True)}
    log.info("read %d tensor shapes from an onnxruntime run", len(shapes))
    return shapes, dtypes


def _sample(node_arg: object) -> np.ndarray:
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in node_arg.shape]  # type: ignore[attr-defined]
    kind = node_arg.type  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    if "float16" in kind:
        return rng.standard_normal(shape).astype(np.float16)
    if "double" in kind:
        return rng.standard_normal(shape)
    if "float" in kind:
        return rng.standard_normal(shape).astype(np.float32)
    if "bool" in kind:
        return np.zeros(shape, dtype=bool)
    dtype = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
             "tensor(int8)": np.int8}.get(kind, np.int64)
    return np.zeros(shape, dtype=dtype)


def fold_constants(proto: onnx.ModelProto, consts: dict[str, np.ndarray],
                   shapes: dict[str, tuple[int, ...]], opset: int) -> list[onnx.NodeProto]:
    """Evaluate constant nodes into ``consts``; return the nodes that remain (the live ones)."""
    live: list[onnx.NodeProto] = []
    for node in proto.graph.node:
        value = _try_fold(node, consts, shapes, opset)
        if value is None:
            live.append(node)
            continue
        for name, v in zip(node.output, value, strict=False):
            if name:
                consts[name] = np.asarray(v)
    return live


def _try_fold(node: onnx.NodeProto, consts: dict[str, np.ndarray],
              shapes: dict[str, tuple[int, ...]], opset: int) -> list[np.ndarray] | None:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NON_DETERMINISTIC:
        return None
    if node.op_type == "Constant":
        return [_constant_value(node)]
    src = node.input[0] if node.input else ""
    if node.op_type in ("Shape", "Size") and src in shapes and src not in consts:
        shape = shapes[node.input[0]]
        if node.op_type == "Size":
            return [np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return [np.array(shape[slice(start, end)], dtype=np.int64)]
    inputs = [i for i in node.input if i]
    if not inputs or not all(i in consts for i in inputs):
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for a in node.attribute):
        return None
    return _evaluate(node, consts, opset)


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    value = onnx.helper.get_attribute_value(attr)
    if attr.name == "value":
        return numpy_helper.to_array(value)
    if attr.name == "sparse_value":  # rare: densify
        dense = np.zeros(tuple(value.dims), dtype=numpy_helper.to_array(value.values).dtype)
        idx = numpy_helper.to_array(value.indices)
        flat = idx if idx.ndim == 1 else np.ravel_multi_index(idx.T, dense.shape)
        dense.reshape(-1)[flat] = numpy_helper.to_array(value.values)
        return dense
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}.get(attr.name)
    if dtype is None:
        return np.array(value)
    return np.array(value, dtype=dtype)


def _evaluate(node: onnx.NodeProto, consts: dict[str, np.ndarray],
              opset: int) -> list[np.ndarray] | None:
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    def untyped(names: Sequence[str]) -> list[onnx.ValueInfoProto]:
        return [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
                for n in dict.fromkeys(n for n in names if n)]

    feeds = {i: consts[i] for i in node.input if i}
    # First as a one-node model of the file's opset: the evaluator runs a bare node at the
    # newest version of its op (Unsqueeze-13 reads its axes from an input; an opset-9 model has
    # them as an attribute). Then bare, for ops it implements only in newer versions whose
    # meaning did not change (DequantizeLinear from 19 on).
    graph = helper.make_graph([node], "fold", untyped(node.input), untyped(node.output))
    versioned = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    failure: Exception | None = None
    for make in (lambda: ReferenceEvaluator(versioned),
                 lambda: ReferenceEvaluator(node, opsets={"": opset})):
        try:
            return [np.asarray(v) for v in make().run(None, feeds)]
        except Exception as exc:  # stays in the graph as a live node; onnxruntime will run it
            failure = exc
    log.info("could not fold %s (%s): %s", node.name, node.op_type, failure)
    return None
