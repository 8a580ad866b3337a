"""ONNX -> layer IR: the entry point that strings preparation, op mapping and fusion together.

Steps: load (:mod:`onnx_prep`), fix dynamic inputs and infer every shape and fold constants
(:mod:`onnx_const`), drop Identity/Dropout, map each remaining node to a layer (:mod:`onnx_ops`,
:mod:`onnx_ops_tensor`), fuse (:mod:`fold`), describe (:mod:`descriptor`). Tensor names are the
source model's throughout, so an onnxruntime segment can be cut from the original file with
``onnx.utils.Extractor`` by the names the IR uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from edgedeploy.errors import ModelError
from edgedeploy.importers import onnx_ops_tensor  # noqa: F401  (registers its converters)
from edgedeploy.importers.descriptor import build_descriptor
from edgedeploy.importers.fold import Rewriter, fuse_all
from edgedeploy.importers.onnx_const import prepare
from edgedeploy.importers.onnx_ops import Ctx, convert, layer
from edgedeploy.importers.onnx_prep import Prepared, load_proto
from edgedeploy.runtime import ir
from edgedeploy.runtime.ir import Graph, Layer, TensorInfo

_PASS_THROUGH = frozenset({"Identity", "Dropout"})


def import_onnx(model: str | Path | onnx.ModelProto, *,
                input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                input_name: str | None = None) -> Graph:
    """Import an ONNX model (a path or a loaded proto) into the layer IR.

    ``input_shape`` fixes the dynamic dims of ``input_name`` (or of the only / the only dynamic
    input), or of every input it names when it is a mapping name -> shape; a dynamic dim left
    without an override raises :class:`InputError` saying how to give it.
    """
    proto, source = load_proto(model)
    prep = prepare(proto, input_shape, input_name)
    nodes = _bypass_pass_through(prep)
    consumers: dict[str, int] = {}
    for node in nodes:
        for t in node.input:
            consumers[t] = consumers.get(t, 0) + 1
    ctx = Ctx(prep, consumers=consumers)
    layers = [convert(ctx, node) for node in nodes]
    _mark_quantized(nodes, layers, quantized_weights(proto, set(prep.initializers)))
    layers = _constant_outputs(ctx, layers) + layers
    rw = Rewriter(layers, ctx.weights, prep.shapes, set(prep.outputs))
    fuse_all(rw)
    for lyr in rw.layers:
        lyr.descriptor = build_descriptor(lyr, prep.shapes, rw.weights, prep.dtypes)
    used = {k for lyr in rw.layers for k in lyr.weights.values()}
    graph = Graph(
        name=proto.graph.name or (Path(source["path"]).stem if source["path"] else "model"),
        inputs=[TensorInfo(n, s, d) for n, s, d in prep.inputs],
        outputs=[_info(prep, o) for o in prep.outputs],
        layers=rw.layers,
        tensors={},
        weights={k: v for k, v in rw.weights.items() if k in used},
        source=source,
    )
    folded = _folded_constants(proto, prep, nodes)
    graph.weights.update(folded)
    graph.source["onnx_folded"] = sorted(folded)
    if prep.batch_taken_as_1:
        graph.source["batch_taken_as_1"] = list(prep.batch_taken_as_1)
    graph.tensors = {t.name: t for t in graph.inputs}
    for lyr in graph.layers:
        graph.tensors.update((o, _info(prep, o)) for o in lyr.outputs)
    try:
        graph.validate()
    except ValueError as exc:  # a bug in the importer, but say which model triggered it
        raise ModelError(f"import produced an inconsistent graph: {exc}",
                         "please report this with the model attached") from exc
    return graph


def _folded_constants(proto: onnx.ModelProto, prep: Prepared,
                      nodes: list[onnx.NodeProto]) -> dict[str, object]:
    """Tensors computed by nodes but constant here (shape arithmetic, anchor grids) that a
    non-constant node reads: an onnxruntime segment takes them as initializers instead of
    recomputing them from the graph input they were derived from."""
    initializers = {t.name for t in proto.graph.initializer}
    kept = quantized_weights(proto, initializers)
    out = {}
    for node in nodes:
        if all(o in prep.consts for o in node.output if o):
            continue  # a constant node: folded away itself
        for t in node.input:
            if t and t in prep.consts and t not in initializers and t not in kept:
                out[t] = prep.consts[t]
    return out


def _mark_quantized(nodes: list[onnx.NodeProto], layers: list[Layer], weights: set[str]) -> None:
    """A layer reading a QDQ weight computes in int8 where an engine fuses it (onnxruntime's
    QLinearConv); its float form is the dequantized computation. Say so in its attrs."""
    if not weights:
        return
    for node, lyr in zip(nodes, layers, strict=True):
        if any(t in weights for t in node.input):
            lyr.attrs["precision"] = "int8"


def quantized_weights(proto: onnx.ModelProto, initializers: set[str]) -> set[str]:
    """Outputs of DequantizeLinear nodes computed from initializers alone (QDQ weights).

    A segment keeps these as the file has them (int8 initializer -> DequantizeLinear) instead of
    taking the folded float value: onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear
    into an integer kernel only when it sees the weight's DequantizeLinear, and given a float
    weight instead it re-quantizes it per tensor (its WeightBiasQuantization pass), which is
    not the model's arithmetic.
    """
    producer = {o: n for n in proto.graph.node for o in n.output if o}

    def from_initializers(name: str, depth: int = 0) -> bool:
        if name in initializers or not name:
            return True
        node = producer.get(name)
        if node is None or depth > 8:
            return False
        return all(from_initializers(i, depth + 1) for i in node.input)

    return {o for n in proto.graph.node if n.op_type == "DequantizeLinear"
            for o in n.output if o and from_initializers(o)}


def _info(prep: Prepared, name: str) -> TensorInfo:
    if name not in prep.shapes:
        raise ModelError(f"no shape known for tensor {name!r}",
                         "check the model runs in onnxruntime with the given input shape")
    return TensorInfo(name, tuple(int(d) for d in prep.shapes[name]),
                      prep.dtypes.get(name, "float32"))


def _bypass_pass_through(prep: Prepared) -> list[onnx.NodeProto]:
    """Remove Identity and inference Dropout by renaming tensors (see :func:`_resolve`).

    Normally consumers of the output read the input instead; when the output is a graph output
    the producer of the input is renamed to emit it, so graph outputs keep their names.
    """
    outputs, rename = set(prep.outputs), {}
    produced = {o for n in prep.nodes for o in n.output}
    read = {i for n in prep.nodes for i in n.input} | outputs
    kept: list[onnx.NodeProto] = []
    for node in prep.nodes:
        # old exporters name Dropout's mask though nothing reads it
        mask_used = node.op_type == "Dropout" and len(node.output) > 1 and node.output[1] in read
        if node.op_type not in _PASS_THROUGH or mask_used or node.input[0] in prep.consts:
            kept.append(node)
            continue
        src, out = _resolve(rename, node.input[0]), node.output[0]
        if out not in outputs:
            rename[out] = src
        elif src in produced and src not in outputs and src not in prep.consts:
            rename[src] = out
        else:  # graph input straight to a graph output: let onnxruntime copy it
            kept.append(node)
    if not rename:
        return kept
    result = []
    for node in kept:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.input[:] = [_resolve(rename, i) if i else i for i in node.input]
        new.output[:] = [_resolve(rename, o) if o else o for o in node.output]
        result.append(new)
    return result


def _resolve(rename: dict[str, str], name: str) -> str:
    seen = set()
    while name in rename and name not in seen:
        seen.add(name)
        name = rename[name]
    return name


def _constant_outputs(ctx: Ctx, layers: list[Layer]) -> list[Layer]:
    """Graph outputs that are constants (detector anchors, say) get a producing opaque layer."""
    produced = {o for lyr in layers for o in lyr.outputs}
    extra = []
    for name in ctx.prep.outputs:
        if name in produced or name not in ctx.prep.consts:
            continue
        node = onnx.helper.make_node("Constant", [], [name], name=f"{name}::constant")
        lyr = layer(node, ir.OPAQUE, [], {"onnx_op_type": "Constant", "domain": "ai.onnx",
                                          "onnx_attrs": {}, "onnx_inputs": []},
                    {"value": ctx.weight(name)})
        extra.append(lyr)
    return extra
