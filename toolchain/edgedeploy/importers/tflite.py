"""Import a .tflite model (float32, float16 weights, int8/uint8, sparse) into the layer IR.

Why this shape: the flatbuffer is read with the schema module LiteRT itself ships
(``ai_edge_litert.schema_py_generated``), never by hand, so the reader follows the format LiteRT
runs. TFLite images are NHWC; the IR is NCHW, so rank-4 tensors are transposed (shapes, and
weights: OHWI -> OIHW) and ops that mix ranks convert element order explicitly (see
:mod:`tflite_context`). Graph inputs stay described in ``Graph.source["inputs"]`` with their
TFLite shape and layout, so an executor knows to transpose at the boundary.

FULLY_CONNECTED after a rank-4 tensor permutes its weights (flatten stays a plain NCHW flatten);
RESHAPE of a rank-4 tensor gets explicit transposes (skipped when NHWC and NCHW orders agree).
Integer-quantized operators (int8/uint8, per tensor or per channel) import as opaque layers that
LiteRT segments run, their tensors keeping their element types (:mod:`tflite_quant`); sparse
constants are densified on import (:mod:`tflite_sparse`); custom and select-TF operators stay
LiteRT operators (a LiteRT without them says which one it lacks when the segment loads).

Every layer records ``attrs["tflite_ops"] = [first, last]``, the subgraph-0 operator indices it
came from (one op may emit several layers, e.g. transposes around a RESHAPE; DEQUANTIZE of float16
weights emits none), so ranges of layers can be cut back into LiteRT segments
(:mod:`edgedeploy.importers.tflite_cut`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgedeploy.errors import InputError, ModelError
from edgedeploy.importers import SHAPE_HINT
from edgedeploy.importers.descriptor import build_descriptor
from edgedeploy.importers.tflite_context import (
    Context,
    NotConvertible,
    to_ir_shape,
    to_tflite_shape,
)
from edgedeploy.importers.tflite_custom import check_litert_runs
from edgedeploy.importers.tflite_ops import CONVERTERS, Op, opaque
from edgedeploy.importers.tflite_quant import (
    activation_quantization,
    litert_only,
    quant_params,
    stateful_ops,
    whole_model_layer,
)
from edgedeploy.importers.tflite_sparse import densify
from edgedeploy.runtime import ir

log = logging.getLogger(__name__)
_TT = schema.TensorType
_DTYPES: dict[int, Any] = {
    _TT.FLOAT32: np.float32, _TT.FLOAT16: np.float16, _TT.FLOAT64: np.float64,
    _TT.INT32: np.int32, _TT.INT64: np.int64, _TT.INT16: np.int16, _TT.INT8: np.int8,
    _TT.UINT8: np.uint8, _TT.BOOL: np.bool_, _TT.UINT32: np.uint32, _TT.UINT16: np.uint16,
}
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

ShapeOverride = Sequence[int] | Mapping[str, Sequence[int]] | None


def import_tflite(path: str | Path, *, input_shape: ShapeOverride = None,
                  input_name: str | None = None) -> ir.Graph:
    """Read ``path`` into an IR :class:`~edgedeploy.runtime.ir.Graph` (subgraph 0).

    ``input_shape`` overrides input shapes in the model's own layout (N, H, W, C for images, as
    the file and LiteRT have them, and as the runner takes frames): one shape for the first
    input (or for ``input_name``), or a mapping name -> shape.
    Raises :class:`ModelError` for an unreadable file or an inconsistent one (a sparse
    constant whose metadata does not cover its values, say).
    """
    path = Path(path)
    data, model = _read_model(path)
    sg = model.subgraphs[0]
    names = _tensor_names(sg)
    quantized, params = quant_params(sg)
    tflite_shapes = [tuple(_ints(t.shape)) for t in
                     sg.tensors]
    ctx = Context(names=names, tflite_shapes=tflite_shapes,
                  consts=_constants(path, model, sg, data, names),
                  dtypes={i: np.dtype(_DTYPES[t.type]).name for i, t in enumerate(sg.tensors)
                          if t.type in _DTYPES},
                  quantized=quantized, quant_params=params)
    if input_name is not None and input_shape is not None and not isinstance(input_shape, Mapping):
        input_shape = {input_name: input_shape}
    inputs = _inputs(ctx, sg, names, input_shape)
    ctx.resized = _resized_shapes(path, data, sg, ctx, inputs)
    kinds = [_op_kind(model, op) for op in sg.operators or []]
    check_litert_runs(path, data, kinds)
    stateful = stateful_ops(set(kinds))
    if stateful:  # one LiteRT layer: the variables' readers and writers are never cut apart
        whole_model_layer(ctx, _ints(sg.inputs), _ints(sg.outputs), len(kinds), stateful)
    for index, (op, kind) in enumerate(zip(sg.operators or [], kinds, strict=True)):
        if stateful:
            break  # the whole-model layer stands for every operator
        view = Op(name=f"{kind.lower()}_{index}", kind=kind, inputs=_ints(op.inputs),
                  outputs=_ints(op.outputs), options=op.builtinOptions)
        n_layers = len(ctx.layers)
        try:
            _convert(ctx, view, litert_only(ctx, view, stateful))
        except ModelError as exc:
            raise ModelError(f"{path}: {exc.message}") from None
        for layer in ctx.layers[n_layers:]:
            layer.attrs["tflite_ops"] = [index, index]
    graph = _assemble(path, data, model, ctx, inputs, sg)
    if stateful:
        graph.source["stateful"] = stateful
    try:
        graph.validate()
    except ValueError as exc:
        raise ModelError(f"{path}: the TFLite graph is inconsistent: {exc}") from exc
    return graph


def _read_model(path: Path) -> tuple[bytes, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model: {exc.strerror or exc}") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite model (no 'TFL3' flatbuffer identifier)",
                         hint="TFLite files come from the TFLite converter (.tflite)")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
        _check_structure(model)
    except ModelError as exc:
        raise ModelError(f"{path}: corrupt TFLite file: {exc.message}") from None
    except Exception as exc:  # a truncated flatbuffer fails anywhere in the generated reader
        raise ModelError(f"{path}: corrupt or truncated TFLite file "
                         f"({type(exc).__name__}: {exc})") from None
    return data, model


def _check_structure(model: Any) -> None:
    """Indices in range, so later code can trust the tables."""
    if not model.subgraphs:
        raise ModelError("no subgraph")
    sg = model.subgraphs[0]
    n_tensors, n_buffers = len(sg.tensors or []), len(model.buffers or [])
    n_codes = len(model.operatorCodes or [])
    for t in sg.tensors or []:
        if not 0 <= t.buffer < max(n_buffers, 1):
            raise ModelError(f"tensor {t.name!r} names buffer {t.buffer} of {n_buffers}")
    for i, op in enumerate(sg.operators or []):
        if not 0 <= op.opcodeIndex < n_codes:
            raise ModelError(f"operator {i} has opcode index {op.opcodeIndex} of {n_codes}")
        for t in [*_ints(op.inputs), *_ints(op.outputs)]:
            if not -1 <= t < n_tensors:
                raise ModelError(f"operator {i} names tensor {t} of {n_tensors}")
    for t in [*_ints(sg.inputs), *_ints(sg.outputs)]:
        if not 0 <= t < n_tensors:
            raise ModelError(f"graph input/output {t} of {n_tensors} tensors")


def _ints(values: Any) -> list[int]:
    """A flatbuffer int vector (None, list or numpy array) as a list."""
    return [] if values is None else [int(v) for v in values]


def _text(value: bytes | str | None) -> str:
    """A flatbuffer string; undecodable bytes are replaced, not fatal."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _tensor_names(sg: Any) -> list[str]:
    """TFLite names, made unique deterministically (a repeat gets ``_<index>``)."""
    names: list[str] = []
    seen: set[str] = set()
    for i, t in enumerate(sg.tensors or []):
        name = _text(t.name) or f"tensor_{i}"
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def _op_kind(model: Any, op: Any) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{_text(code.customCode) or '?'}"
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _constants(path: Path, model: Any, sg: Any, data: bytes,
               names: list[str]) -> dict[int, np.ndarray]:
    """Constant tensors (those with buffer data), in TFLite layout and their own dtype."""
    consts: dict[int, np.ndarray] = {}
    made = set(_ints(sg.inputs)) | {t for op in sg.operators or [] for t in _ints(op.outputs)}
    for i in range(len(sg.tensors or [])):
        try:
            value = constant_value(model, sg, data, i, names[i])
        except ModelError as exc:
            raise ModelError(f"{path}: {exc.message}") from None
        if value is None and i not in made:
            value = _empty_constant(sg.tensors[i])
        if value is not None:
            consts[i] = value
    return consts


def holds_no_elements(t: Any) -> bool:
    """Whether tensor ``t``'s shape has a size 0: one nothing produces is a constant whose
    buffer holds nothing (onnx-tf writes the target of a RESHAPE to a scalar so: shape [0])."""
    shape = _ints(t.shape)
    return bool(shape) and min(shape) == 0


def _empty_constant(t: Any) -> np.ndarray | None:
    """The value of an empty constant (:func:`holds_no_elements`); None for any other."""
    if t.type not in _DTYPES or not holds_no_elements(t):
        return None
    return np.zeros(_ints(t.shape), dtype=_DTYPES[t.type])


def constant_value(model: Any, sg: Any, data: bytes, index: int, name: str
                   ) -> np.ndarray | None:
    """Tensor ``index`` of ``sg`` as an array (TFLite layout, its own dtype, sparse values
    expanded) when it holds buffer data, else None; :class:`ModelError` naming ``name`` when
    the data does not fit the tensor."""
    t = sg.tensors[index]
    buf = model.buffers[t.buffer] if t.buffer > 0 else None
    if buf is None or t.type not in _DTYPES:
        return None
    if buf.offset > 1:  # large models keep buffers after the flatbuffer
        raw = data[buf.offset:buf.offset + buf.size]
        if len(raw) != buf.size:
            raise ModelError(f"buffer of {name!r} lies past the end of the file")
    elif buf.data is not None and len(buf.data):
        raw = bytes(np.asarray(buf.data, dtype=np.uint8))
    else:
        return None
    shape = _ints(t.shape)
    dtype = np.dtype(_DTYPES[t.type])
    if t.sparsity is not None:  # only the kept values are stored: expand them
        if len(raw) % dtype.itemsize:
            raise ModelError(f"sparse constant {name!r} holds {len(raw)} bytes, "
                             f"not whole {dtype.name} values")
        try:
            return densify(np.frombuffer(raw, dtype=dtype), shape, t.sparsity)
        except ModelError as exc:
            raise ModelError(f"constant {name!r}: {exc.message}") from None
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ModelError(f"constant {name!r} holds {len(raw)} bytes, "
                         f"not the {shape} {dtype.name} its shape needs")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _inputs(ctx: Context, sg: Any, names: list[str],
            override: ShapeOverride) -> list[ir.TensorInfo]:
    wanted: dict[str, Sequence[int]] = {}
    if isinstance(override, Mapping):
        wanted = dict(override)
        unknown = sorted(set(wanted) - {names[t] for t in _ints(sg.inputs)})
        if unknown:
            raise InputError(f"input_shape names unknown inputs {unknown}; the model's inputs "
                             f"are {[names[t] for t in _ints(sg.inputs)]}")
    elif override is not None and _ints(sg.inputs):
        wanted = {names[_ints(sg.inputs)[0]]: override}
    infos = []
    for t in _ints(sg.inputs):
        shape = to_ir_shape(ctx.tflite_shapes[t])
        signature = _ints(sg.tensors[t].shapeSignature)
        # a dynamic size past the batch: the file's shape is a placeholder (1 for each), and
        # a model planned at it computes nothing the user runs (a mel front end of 1 sample)
        own = list(ctx.tflite_shapes[t])  # as the file has it: NHWC for images
        if names[t] not in wanted and any(d < 0 for d in signature[1:]):
            dims = ", ".join("?" if d < 0 else str(d) for d in signature)
            raise InputError(f"model input {names[t]!r} has dynamic dimensions ({dims}); the "
                             f"file holds {own} in their place", SHAPE_HINT)
        if names[t] in wanted:
            new = tuple(int(d) for d in wanted[names[t]])
            if len(new) != len(shape) or min(new, default=1) < 1:
                raise InputError(f"input_shape {list(new)} does not fit input {names[t]!r} of "
                                 f"shape {own} (the model's own layout: N, H, W, C for images)")
            shape = to_ir_shape(new)
        ctx.set_output(t, shape)
        dtype = np.dtype(_DTYPES.get(sg.tensors[t].type, np.float32)).name
        infos.append(ir.TensorInfo(names[t], shape, dtype))
    return infos


def _resized_shapes(path: Path, data: bytes, sg: Any, ctx: Context,
                    inputs: list[ir.TensorInfo]) -> dict[int, tuple[int, ...]]:
    """Every tensor's TFLite shape once the inputs take the overridden shapes, as LiteRT
    propagates them (empty when nothing was overridden). Opaque operators keep LiteRT's
    output shapes, so they need this; RESHAPE targets written for batch 1 do too."""
    wanted = {t: to_tflite_shape(info.shape) for t, info in zip(_ints(sg.inputs), inputs,
                                                                strict=True)}
    if all(tuple(ctx.tflite_shapes[t]) == shape for t, shape in wanted.items()):
        return {}
    from edgedeploy.runtime.engines.litert import interpreter_class

    Interpreter = interpreter_class()
    resolver = getattr(__import__(Interpreter.__module__, fromlist=["OpResolverType"]),
                       "OpResolverType", None)
    # No XNNPACK: a delegated partition keeps its intermediates' old shapes in the tensor table.
    kwargs = ({"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
              if resolver is not None else {})
    try:
        interp = Interpreter(model_content=data, **kwargs)
        for t, shape in wanted.items():
            interp.resize_tensor_input(t, list(shape), strict=False)
        interp.allocate_tensors()
        details = interp.get_tensor_details()
    except (ValueError, RuntimeError) as exc:  # the IR may still follow the new shapes
        log.info("%s: LiteRT cannot propagate input shapes %s (%s); file shapes kept for its "
                 "operators", path, [list(i.shape) for i in inputs], exc)
        return {}
    return {int(d["index"]): tuple(int(x) for x in d["shape"]) for d in details}


def _convert(ctx: Context, op: Op, keep: str | None = None) -> None:
    """Run the op's converter; anything it cannot express, or that must stay a LiteRT operator
    (``keep`` says why), becomes an opaque layer."""
    fn = CONVERTERS.get(op.kind)
    if fn is None or keep:
        opaque(ctx, op, keep)
        return
    n_layers, tensors, weights = len(ctx.layers), set(ctx.tensors), set(ctx.weights)
    try:
        fn(ctx, op)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        # Operands that contradict each other (a corrupt but parseable file).
        raise ModelError(f"operator {op.name} ({op.kind}) is inconsistent: {exc}") from None
    except NotConvertible as exc:
        del ctx.layers[n_layers:]
        for key in set(ctx.tensors) - tensors:
            del ctx.tensors[key]
        for key in set(ctx.weights) - weights:
            del ctx.weights[key]
        opaque(ctx, op, str(exc))


def _boundary(name: str, ir_shape: Sequence[int], dtype: str = "float32") -> dict[str, Any]:
    rank4 = len(ir_shape) == 4
    out = {"name": name, "shape": list(to_tflite_shape(ir_shape)),
           "layout": "NHWC" if rank4 else "plain",
           "to_ir_perm": [0, 3, 1, 2] if rank4 else list(range(len(ir_shape)))}
    if dtype != "float32":  # integer boundaries (quantized models) say so
        out["dtype"] = dtype
    return out


def _assemble(path: Path, data: bytes, model: Any, ctx: Context, inputs: list[ir.TensorInfo],
              sg: Any) -> ir.Graph:
    outputs = []
    for t in _ints(sg.outputs):
        if t not in ctx.shapes:
            raise ModelError(f"{path}: graph output {ctx.names[t]!r} is a constant or unused")
        outputs.append(ir.TensorInfo(ctx.names[t], ctx.shapes[t], ctx.dtypes.get(t, "float32")))
    for info in inputs:
        ctx.tensors[info.name] = info
    shapes = {k: v.shape for k, v in ctx.tensors.items()}
    dtypes = {k: v.dtype for k, v in ctx.tensors.items()}
    for layer in ctx.layers:
        layer.descriptor = build_descriptor(layer, shapes, ctx.weights, dtypes)
    source = {
        "format": "tflite", "path": str(path), "sha256": hashlib.sha256(data).hexdigest(),
        "input_layout": "NHWC",
        "inputs": [_boundary(t.name, t.shape, t.dtype) for t in inputs],
        "outputs": [_boundary(t.name, t.shape, t.dtype) for t in outputs],
        "subgraphs": len(model.subgraphs), "tflite_schema_version": int(model.version),
        "opaque_ops": sorted({x.attrs["tflite_op"] for x in ctx.layers if x.op == ir.OPAQUE}),
    }
    quantization = activation_quantization(ctx)
    if quantization:
        source["quantization"] = quantization
    return ir.Graph(name=path.stem, inputs=inputs, outputs=outputs, layers=ctx.layers,
                    tensors=dict(ctx.tensors), weights=ctx.weights, source=source)
