"""Static int8 quantization of a float TFLite model with Google's AI Edge Quantizer.

Why this quantizer: it is LiteRT's own (``ai-edge-quantizer``, built on ``ai-edge-litert``, no
TensorFlow), and it writes the int8 kernels LiteRT runs: int8 weights per channel, int8
activations with scales calibrated on frames. The model keeps float inputs and outputs (a
QUANTIZE after each input, a DEQUANTIZE before each output), so a caller feeds it what it fed
the float model.

Four things the quantizer does not take well are fixed first (:func:`float_model`), and one it
writes is undone (:func:`_output_names_kept`):

* weights stored as float16 or sparse behind DEQUANTIZE / DENSIFY operators (common in
  MediaPipe's models): the quantizer quantizes a convolution's weights only when they are a
  constant, so a DEQUANTIZE output is taken for an activation, quantized asymmetrically, and
  LiteRT's int8 conv refuses the model ("zero_point != 0"). They are folded into float32
  constants, as the importer folds them into the IR;
* models without a signature: the quantizer calibrates by signature, so one
  (``serving_default``: subgraph 0's inputs and outputs) is added;
* operator codes written before the schema's ``builtin_code`` field (older converters kept the
  code in ``deprecated_builtin_code`` only, LiteRT reads the larger of the two): the quantizer
  reads ``builtin_code`` alone, takes every such operator for an ADD and quantizes a
  convolution's weights as activations. The field is filled in;
* activations kept as operators of their own (MediaPipe's models: ADD, then RELU): an int8 RELU
  on its own breaks LiteRT's XNNPACK delegate into pieces. It is fused into the operator before
  it, as the TF converter fuses it (blazeface's int8 model went from 142 to 365 fps on one
  thread, seen while developing; its float model runs 614).

And it names a float output ``<name>_dequant``, leaving the output's own name on an int8 tensor
inside; the outputs get their names back, as the runner and applications read them by name.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgedeploy.errors import ModelError
from edgedeploy.importers.tflite import _DTYPES, _ints, _op_kind, _tensor_names, constant_value
from edgedeploy.importers.tflite_cut import _parse
from edgedeploy.importers.tflite_quant import dequantized
from edgedeploy.importers.tflite_sparse import densify

SIGNATURE = "serving_default"
#: Operators that only turn stored weights into float32 (folded by :func:`float_model`).
_WEIGHT_OPS = frozenset({"DEQUANTIZE", "DENSIFY"})


def float_model(data: bytes, input_shapes: Mapping[str, Sequence[int]] | None = None) -> bytes:
    """``data`` with weights behind DEQUANTIZE/DENSIFY folded into float32 constants, RELU
    operators fused into the operator before them, every operator code in ``builtin_code``,
    every tensor name unique across subgraphs, the inputs named in ``input_shapes`` declared at
    those shapes, and a ``serving_default`` signature where it has none; ``data`` itself when
    none of that applies. It computes what ``data`` computes."""
    model = _parse(data)
    _inline_buffers(model, data)
    sg = model.subgraphs[0]
    folded = _fold_weights(model, sg)
    recoded = _fill_builtin_codes(model)
    fused = _fuse_activations(model, sg)
    if folded or fused:
        _drop_unused_tensors(model, sg)
    renamed = _unique_names(model)
    resized = _declare_input_shapes(sg, input_shapes or {})
    if not (folded or recoded or fused or renamed or resized) and model.signatureDefs:
        return data
    if not model.signatureDefs:
        model.signatureDefs = [_signature(sg)]
    return _packed(model, len(data) + sum(a.nbytes for a in folded.values()))


def _unique_names(model: Any) -> bool:
    """Name every tensor apart, across subgraphs (the quantizer keys its parameters by tensor
    name; onnx-tf writes ``arg0`` in both branches of an IF): a repeat in subgraph 0 takes the
    importer's name for it, one in a called subgraph its subgraph's index. Whether any changed."""
    seen: set[bytes] = set()
    changed = False
    for k, sg in enumerate(model.subgraphs or []):
        names = _tensor_names(sg) if k == 0 else None
        for i, t in enumerate(sg.tensors or []):
            name = t.name or b""
            if names is not None and names[i].encode() != name:
                name = names[i].encode()
            while name in seen:
                name = f"{name.decode(errors='replace')}_sg{k}_{i}".encode()
            if name != (t.name or b""):
                t.name, changed = name, True
            seen.add(name)
    return changed


def _declare_input_shapes(sg: Any, shapes: Mapping[str, Sequence[int]]) -> bool:
    """Declare subgraph 0's inputs named in ``shapes`` at those shapes (same rank), their
    signature static: the quantizer calibrates at the declared shapes, and a dynamic size's
    placeholder (a mel front end's one sample) cannot even be prepared. Whether any changed."""
    changed = False
    for i in _ints(sg.inputs):
        t = sg.tensors[i]
        shape = shapes.get((t.name or b"").decode(errors="replace"))
        if shape is not None and len(shape) == len(_ints(t.shape)) and \
                [int(d) for d in shape] != _ints(t.shape):
            t.shape, t.shapeSignature, changed = [int(d) for d in shape], None, True
    return changed


def _inline_buffers(model: Any, data: bytes) -> None:
    """Move the buffers stored after the flatbuffer (where the quantizer and converters of
    large models put them) into it, so a repacked model keeps their bytes (in place)."""
    for buffer in model.buffers or []:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(data[buffer.offset:buffer.offset + buffer.size],
                                        dtype=np.uint8)
            buffer.offset = buffer.size = 0


def _packed(model: Any, size: int) -> bytes:
    """``model`` serialised; :class:`ModelError` when it is too large for one flatbuffer."""
    builder = flatbuffers.Builder(size + 4096)
    try:
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    except Exception as exc:  # flatbuffers refuses buffers past 2 GB, whatever it raises
        raise ModelError(f"int8 quantization of a TFLite model this large (over 2 GB in one "
                         f"flatbuffer) is not supported: {type(exc).__name__}") from None
    return bytes(builder.Output())


def _fold_weights(model: Any, sg: Any) -> dict[int, np.ndarray]:
    """Replace every DEQUANTIZE/DENSIFY of a constant by a constant (in place); the folded
    arrays by tensor index."""
    folded: dict[int, np.ndarray] = {}
    kept = []
    for op in sg.operators or []:
        kind = _op_kind(model, op)
        ins = [i for i in _ints(op.inputs) if i >= 0]
        source = _constant(model, sg, ins[0], folded) if kind in _WEIGHT_OPS and ins else None
        if source is None:
            kept.append(op)
            continue
        out = _ints(op.outputs)[0]
        if kind == "DEQUANTIZE":
            q = sg.tensors[ins[0]].quantization
            if source.dtype == np.float16:
                source = source.astype(np.float32)
            elif q is not None and q.scale is not None and len(q.scale):
                zero = q.zeroPoint if q.zeroPoint is not None else [0]
                source = dequantized(source, np.asarray(q.scale), np.asarray(zero),
                                     int(q.quantizedDimension or 0))
            else:
                kept.append(op)
                continue
        folded[out] = np.ascontiguousarray(source)
    for index, array in folded.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(array.tobytes(), dtype=np.uint8)
        model.buffers.append(buffer)
        sg.tensors[index].buffer = len(model.buffers) - 1
    sg.operators = kept
    return folded


#: Activation operators folded into the operator before them, as its fused activation.
_FUSED = {"RELU": schema.ActivationFunctionType.RELU,
          "RELU6": schema.ActivationFunctionType.RELU6,
          "RELU_N1_TO_1": schema.ActivationFunctionType.RELU_N1_TO_1}


def _fuse_activations(model: Any, sg: Any) -> int:
    """Fold each RELU/RELU6/RELU_N1_TO_1 whose input only it reads (and no caller does) into
    the operator making that input, where that operator takes a fused activation and has none
    (in place); how many were folded."""
    ops = list(sg.operators or [])
    producer = {o: op for op in ops for o in _ints(op.outputs)}
    readers: dict[int, int] = {}
    for op in ops:
        for i in _ints(op.inputs):
            readers[i] = readers.get(i, 0) + 1
    visible = set(_ints(sg.outputs))
    kept = []
    for op in ops:
        kind = _op_kind(model, op)
        source = _ints(op.inputs)[0] if kind in _FUSED and len(_ints(op.inputs)) else -1
        maker = producer.get(source)
        options = getattr(maker, "builtinOptions", None)
        if (maker is None or readers.get(source) != 1 or source in visible
                or len(_ints(maker.outputs)) != 1
                or getattr(options, "fusedActivationFunction", None)
                != schema.ActivationFunctionType.NONE):
            kept.append(op)
            continue
        options.fusedActivationFunction = _FUSED[kind]
        maker.outputs = [_ints(op.outputs)[0]]
        producer[maker.outputs[0]] = maker
    folded = len(ops) - len(kept)
    sg.operators = kept
    return folded


def _drop_unused_tensors(model: Any, sg: Any) -> None:
    """Drop the tensors nothing refers to any more (a folded operator's, a fused activation's
    input) and empty the buffers only they held: LiteRT keeps no data for a tensor no operator
    makes, and the quantizer's calibration reads every tensor."""
    used = {i for op in sg.operators or []
            for i in (*_ints(op.inputs), *_ints(op.outputs), *_ints(op.intermediates))}
    used |= {*_ints(sg.inputs), *_ints(sg.outputs)}
    used |= {int(m.tensorIndex) for sd in model.signatureDefs or []
             if int(sd.subgraphIndex) == 0 for m in (*(sd.inputs or []), *(sd.outputs or []))}
    used.discard(-1)
    order = sorted(used)
    new = {old: k for k, old in enumerate(order)}
    dropped = [t for i, t in enumerate(sg.tensors or []) if i not in used]
    sg.tensors = [sg.tensors[i] for i in order]
    for op in sg.operators or []:
        op.inputs = [new[i] if i >= 0 else -1 for i in _ints(op.inputs)]
        op.outputs = [new[i] for i in _ints(op.outputs)]
        if op.intermediates is not None and len(op.intermediates):
            op.intermediates = [new[i] for i in _ints(op.intermediates)]
    sg.inputs = [new[i] for i in _ints(sg.inputs)]
    sg.outputs = [new[i] for i in _ints(sg.outputs)]
    for sd in model.signatureDefs or []:
        if int(sd.subgraphIndex) == 0:
            for m in (*(sd.inputs or []), *(sd.outputs or [])):
                m.tensorIndex = new[int(m.tensorIndex)]
    live = {t.buffer for g in model.subgraphs for t in g.tensors or []}
    for t in dropped:
        if t.buffer > 0 and t.buffer not in live:
            model.buffers[t.buffer].data = None


def _fill_builtin_codes(model: Any) -> bool:
    """Copy ``deprecated_builtin_code`` into ``builtin_code`` where only the former is set."""
    changed = False
    for code in model.operatorCodes or []:
        if int(code.deprecatedBuiltinCode) > int(code.builtinCode):
            code.builtinCode = int(code.deprecatedBuiltinCode)
            changed = True
    return changed


def _constant(model: Any, sg: Any, index: int, folded: dict[int, np.ndarray]
              ) -> np.ndarray | None:
    """Tensor ``index`` as an array when it is a constant (dense, densified or folded), read
    as the importer reads constants; buffers are inlined (:func:`_inline_buffers`)."""
    if index in folded:
        return folded[index]
    t = sg.tensors[index]
    buffer = model.buffers[t.buffer] if t.buffer > 0 else None
    if (buffer is not None and t.sparsity is not None and t.type in _DTYPES
            and (buffer.data is None or not len(buffer.data))):
        # no stored value at all: an all-zero tensor (the importer reads it as no constant)
        return densify(np.zeros(0, np.dtype(_DTYPES[t.type])), _ints(t.shape), t.sparsity)
    name = (t.name or b"").decode(errors="replace") or f"tensor_{index}"
    return constant_value(model, sg, b"", index, name)


def _signature(sg: Any) -> Any:
    def entry(index: int) -> Any:
        tensor_map = schema.TensorMapT()
        tensor_map.name = sg.tensors[index].name
        tensor_map.tensorIndex = index
        return tensor_map

    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE.encode()
    signature.subgraphIndex = 0
    signature.inputs = [entry(i) for i in _ints(sg.inputs)]
    signature.outputs = [entry(i) for i in _ints(sg.outputs)]
    return signature


def quantize_tflite(data: bytes, frames: Sequence[dict[str, np.ndarray]], *,
                    exclude: Sequence[str] = ()) -> bytes:
    """The static int8 model of the float TFLite model ``data``, calibrated on ``frames``
    (TFLite layout, keyed by the model's input tensor names). Float inputs and outputs; the
    operators whose scope (:func:`op_scopes`) is in ``exclude`` stay float.
    :class:`ModelError` when the quantizer fails or LiteRT cannot load what it wrote."""
    from ai_edge_litert.interpreter import Interpreter

    source = float_model(data, {n: np.shape(v) for n, v in (frames[0] if frames else {}).items()})
    signature = _signature_of(source)
    names = _signature_inputs(source, signature)
    missing = sorted({n for f in frames for n in names if n not in f})
    if missing or not frames:
        raise ModelError(f"calibration frames for int8 quantization lack the model input(s) "
                         f"{missing or sorted(names)}")
    calibration = [{names[n]: np.asarray(f[n]) for n in names} for f in frames]
    exclude = (*exclude, *_output_readers(source), *_branch_scopes(source))
    try:
        from ai_edge_quantizer import quantizer

        # it prints a size report and progress bars, and warns about its own debug option
        with (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()),
              warnings.catch_warnings()):
            warnings.simplefilter("ignore")
            q = quantizer.Quantizer(source, _recipe(exclude))
            result = q.quantize(q.calibrate({signature: calibration}))
        out = bytes(result.quantized_model)
    except Exception as exc:  # the quantizer raises anything from anywhere in its passes
        raise ModelError(f"the AI Edge Quantizer could not quantize the model: "
                         f"{type(exc).__name__}: {exc}") from None
    out = _output_names_kept(out)
    try:
        Interpreter(model_content=out).allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"the AI Edge Quantizer's int8 model does not load in LiteRT: "
                         f"{str(exc)[:300]}") from None
    return out


def _output_names_kept(data: bytes) -> bytes:
    """The quantized model with its outputs named as the float model's: the quantizer names a
    float output ``<name>_dequant`` and leaves ``<name>`` on the int8 tensor before it, and a
    caller (the runner, ``run --verify``, an application) reads outputs by name."""
    model = _parse(data)
    sg = model.subgraphs[0]
    by_name = {t.name: i for i, t in enumerate(sg.tensors or [])}
    changed = False
    for i in _ints(sg.outputs):
        name = sg.tensors[i].name or b""
        base = name[: -len(b"_dequant")] if name.endswith(b"_dequant") else None
        if base is None or base not in by_name:
            continue
        sg.tensors[by_name[base]].name = base + b"_int8"
        sg.tensors[i].name = base
        changed = True
    if not changed:
        return data
    _inline_buffers(model, data)  # the quantizer stores buffers after the flatbuffer
    return _packed(model, len(data))


def _output_readers(data: bytes) -> list[str]:
    """Scopes of the operators that read a model output: the quantizer keeps an output float
    but hands its int8-expecting readers that float tensor, a model LiteRT refuses ("output->type
    != input_type"); kept float, they read it as it is and the quantizer requantizes after
    them."""
    model = _parse(data)
    sg = model.subgraphs[0]
    outputs = set(_ints(sg.outputs))
    return [_scope(sg, op) for op in sg.operators or [] if outputs & set(_ints(op.inputs))]


def _branch_scopes(data: bytes) -> list[str]:
    """Scopes of the operators in called subgraphs (an IF's branches): calibration runs one
    branch a frame, and the quantizer fails on the operators it never saw run; kept float."""
    model = _parse(data)
    return [_scope(sg, op) for sg in (model.subgraphs or [])[1:] for op in sg.operators or []]


def _scope(sg: Any, op: Any) -> str:
    return "".join(f"{sg.tensors[i].name.decode()};" for i in _ints(op.outputs) if i >= 0)


def op_scopes(data: bytes) -> list[str]:
    """Each operator's scope, the name the quantizer's recipes match (its output tensors'
    names, each followed by ';'), in subgraph 0's order, for the model :func:`float_model`
    makes of ``data``."""
    model = _parse(float_model(data))
    sg = model.subgraphs[0]
    return [_scope(sg, op) for op in sg.operators or []]


def _recipe(exclude: Sequence[str] = ()) -> Any:
    """Every supported operator int8 (weights per channel, activations calibrated) but those
    whose scope is in ``exclude``; the model's inputs and outputs stay float."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(regex=".*",
                              operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                              activation_num_bits=8, weight_num_bits=8)
    for edge in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        manager.add_quantization_config(regex=".*", operation_name=edge,
                                        algorithm_key=AlgorithmName.NO_QUANTIZE)
    if exclude:  # the last matching recipe wins
        scopes = "|".join(re.escape(scope) for scope in sorted(set(exclude)))
        manager.add_quantization_config(regex=f"^(?:{scopes})$",
                                        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                        algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def _signature_of(data: bytes) -> str:
    model = schema.Model.GetRootAs(data, 0)
    if model.SignatureDefsLength() == 0:
        raise ModelError("the TFLite model has no signature after float_model")
    key = model.SignatureDefs(0).SignatureKey()
    return key.decode() if isinstance(key, bytes) else str(key)


def _signature_inputs(data: bytes, signature: str) -> dict[str, str]:
    """Input tensor name -> the signature's name for it (they differ in converted models)."""
    model = schema.Model.GetRootAs(data, 0)
    sg = model.Subgraphs(0)
    names = {}
    for k in range(model.SignatureDefs(0).InputsLength()):
        entry = model.SignatureDefs(0).Inputs(k)
        tensor = sg.Tensors(entry.TensorIndex()).Name()
        names[tensor.decode()] = entry.Name().decode()
    return names
