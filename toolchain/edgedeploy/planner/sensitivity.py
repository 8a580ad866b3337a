"""Which layers of an int8 model cost the most accuracy: the error each quantized node adds.

The fp32 model (after onnxruntime's pre-quantization pass, whose node names the quantizer
keeps) and its static QDQ int8 model run the same frames with every node's float tensors
exposed. A quantized node's added error is the error of its output against fp32 less the
largest error already on its float inputs, each by the project's one error measure
(``max_rel_error``): the quantization of its inputs and weights and what the node does with
them, not what reached it. Keeping the nodes that add the most in fp32 is how the planner
mends an int8 model that breaks the accuracy guard (``planner.precision``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgedeploy.runtime.executor import max_rel_error
from edgedeploy.runtime.vocab import ORT_ERRORS_ONLY

_QDQ = ("QuantizeLinear", "DequantizeLinear")
#: Contiguous runs a model is cut into for keeping part of it in fp32.
REGIONS = 8


@dataclass(frozen=True)
class QuantizedNode:
    """A compute node of the int8 model fed through DequantizeLinear, by its fp32 tensors."""

    name: str
    inputs: tuple[str, ...]  # the fp32 tensors behind its float and dequantized inputs
    outputs: tuple[str, ...]


def quantized_nodes(int8: onnx.ModelProto) -> list[QuantizedNode]:
    """The nodes of a QDQ model that take at least one dequantized input, each input traced back
    through DequantizeLinear and QuantizeLinear to the fp32 tensor it quantizes (weights, whose
    DequantizeLinear reads a constant, have no float path and are left out)."""
    producer = {o: n for n in int8.graph.node for o in n.output}
    constants = {i.name for i in int8.graph.initializer}

    def source(name: str) -> str | None:
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return name
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            return None  # a constant's DequantizeLinear: a quantized weight
        return q.input[0]

    nodes = []
    for node in int8.graph.node:
        if node.op_type in _QDQ or not any(
                producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
                for i in node.input):
            continue
        inputs = tuple(s for i in node.input if i and (s := source(i)) is not None
                       and s not in constants)
        nodes.append(QuantizedNode(node.name, inputs, tuple(o for o in node.output if o)))
    return nodes


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.value_info, *inferred.graph.output]
    return {v.name for v in infos if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


def _exposed(model: onnx.ModelProto, names: Iterable[str]) -> bytes:
    """``model`` with ``names`` added as graph outputs, serialised."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in sorted(set(names) - present):
        out.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return out.SerializeToString()


def _run(model: bytes, names: list[str], frames: list[dict[str, np.ndarray]]
         ) -> dict[str, np.ndarray]:
    """``names`` over ``frames`` (stacked), every graph optimisation off so no tensor is fused
    away and the int8 model computes exactly what its QDQ nodes say."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = ORT_ERRORS_ONLY  # its warnings are about the model file
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    runs = [sess.run(names, f) for f in frames]
    return {n: np.stack([r[k] for r in runs]) for k, n in enumerate(names)}


def _seen(int8: onnx.ModelProto) -> dict[str, str]:
    """fp32 tensor name -> the int8 model's tensor its consumers read: the output of the
    QuantizeLinear-DequantizeLinear pair on it where it has one (so a Relu the quantizer folded
    into its uint8 range counts as applied), else the tensor itself."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in int8.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    seen = {}
    for node in int8.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        dqs = [d for d in consumers.get(node.output[0], []) if d.op_type == "DequantizeLinear"]
        if dqs:
            seen[node.input[0]] = dqs[0].output[0]
    return seen


def added_errors(fp32: Path, int8: Path, frames: list[dict[str, np.ndarray]]
                 ) -> dict[str, float]:
    """The error each quantized node of ``int8`` adds (node name -> error, >= 0) on ``frames``;
    ``fp32`` is the model ``int8`` was quantized from, after the pre-quantization pass. Every
    tensor is compared as its consumers read it, after its quantize-dequantize pair."""
    reference, quantized = onnx.load(str(fp32)), onnx.load(str(int8))
    nodes = quantized_nodes(quantized)
    seen = _seen(quantized)
    floats = _float_tensors(reference)
    graph_inputs = {i.name for i in reference.graph.input}
    wanted = sorted({t for n in nodes for t in (*n.inputs, *n.outputs)} & floats)
    as_read = {t: seen.get(t, t) for t in wanted}
    exposed = [t for t in wanted if t not in graph_inputs]
    want = _run(_exposed(reference, exposed), exposed, frames)
    int8_names = sorted({as_read[t] for t in wanted} - graph_inputs)
    got = _run(_exposed(quantized, int8_names), int8_names, frames)
    for name in graph_inputs & set(wanted):
        want[name] = np.stack([f[name] for f in frames])
        got.setdefault(name, want[name])
    error = {t: max_rel_error({t: got[as_read[t]]}, {t: want[t]}) for t in wanted}
    added = {}
    for node in nodes:
        out = [error[t] for t in node.outputs if t in error]
        if out:
            before = max((error.get(t, 0.0) for t in node.inputs), default=0.0)
            added[node.name] = max(0.0, max(out) - before)
    return added


def regions(model: onnx.ModelProto, count: int = REGIONS) -> list[list[str]]:
    """The model's node names (in graph order, which ONNX keeps topological) cut into ``count``
    contiguous runs of near-equal length: the unit the planner keeps in fp32. A whole run stays
    float, so no tensor inside it is quantized (a node alone would keep the quantize-dequantize
    pairs its quantized neighbours put on its inputs and outputs)."""
    return runs([n.name for n in model.graph.node], count)


def runs(names: list[str], count: int = REGIONS) -> list[list[str]]:
    """``names`` cut into ``count`` contiguous runs of near-equal length (fewer when there are
    fewer names)."""
    count = max(1, min(count, len(names)))
    bounds = [round(k * len(names) / count) for k in range(count + 1)]
    return [names[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def ranked_regions(parts: list[list[str]], added: dict[str, float]) -> list[int]:
    """Region indexes by the error their nodes add, most first (ties: earlier first)."""
    score = [sum(added.get(n, 0.0) for n in part) for part in parts]
    return sorted(range(len(parts)), key=lambda k: (-score[k], k))

__all__ = ["REGIONS", "QuantizedNode", "added_errors", "quantized_nodes", "ranked_regions",
           "regions", "runs"]
