"""An oracle for the layer IR: rebuild one IR layer as ONNX and check it against onnxruntime.

Each IR layer is rebuilt as a tiny ONNX model from nothing but the IR (op, attrs, weights) and run
on the values onnxruntime computed for its inputs in the original model; its output must equal what
the original model computes for the same tensor name. One check covers BN folding, activation and
bias fusion and every resolved attribute; importers of any format and tests of users' own models
can use it (``check_against_onnxruntime(model, graph)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.runtime import ir
from edgedeploy.runtime.ir import Graph, Layer
from edgedeploy.testing import onnx_models as zoo

__all__ = ["check_against_onnxruntime", "layer_as_onnx"]


def _feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in graph.inputs}


def _activation_nodes(kind: str, params: dict[str, float], x: str, y: str,
                      slope: str | None) -> list[onnx.NodeProto]:
    mk = helper.make_node
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "hardswish": "HardSwish"}
    if kind == "none":
        return [mk("Identity", [x], [y])]
    if kind in simple:
        return [mk(simple[kind], [x], [y])]
    if kind == "relu6":
        return [mk("Clip", [x, "lo6", "hi6"], [y])]
    if kind == "clip":
        return [mk("Clip", [x, "clo" if "min" in params else "", "chi" if "max" in params else ""],
                   [y])]
    if kind == "hardsigmoid":
        return [mk("HardSigmoid", [x], [y], alpha=params["alpha"], beta=params["beta"])]
    if kind == "leakyrelu":
        return [mk("LeakyRelu", [x], [y], alpha=params["alpha"])]
    if kind == "prelu":
        return [mk("PRelu", [x, slope or ""], [y])]
    if kind == "silu":
        return [mk("Sigmoid", [x], [y + "_s"]), mk("Mul", [x, y + "_s"], [y])]
    raise AssertionError(kind)


def layer_as_onnx(layer: Layer, graph: Graph) -> onnx.ModelProto:
    """An ONNX model computing ``layer`` from the IR alone (the oracle's other half)."""
    a, w = layer.attrs, {role: graph.weights[k] for role, k in layer.weights.items()}
    inits = {k: v for k, v in w.items()}
    x = layer.inputs[0] if layer.inputs else ""
    out = layer.outputs[0]
    mk = helper.make_node
    nodes: list[onnx.NodeProto]
    if layer.op in (ir.CONV2D, ir.DENSE):
        pre = "pre_activation"
        if layer.op == ir.CONV2D:
            ins = [x, "weight"] + (["bias"] if "bias" in w else [])
            nodes = [mk("Conv", ins, [pre], kernel_shape=a["kernel"], strides=a["strides"],
                        pads=a["pads"], dilations=a["dilations"], group=a["group"])]
        else:  # y = x @ W.T + b over the last axis, whatever the rank
            inits["weight_t"] = w["weight"].T.copy()
            nodes = [mk("MatMul", [x, "weight_t"], [pre + "_mm"]),
                     mk("Add", [pre + "_mm", "bias"], [pre]) if "bias" in w
                     else mk("Identity", [pre + "_mm"], [pre])]
        nodes += _activation_nodes(a["activation"], a.get("activation_params", {}), pre, out,
                                   "slope" if "slope" in w else None)
    elif layer.op == ir.ACTIVATION:
        nodes = _activation_nodes(a["activation"], a.get("activation_params", {}), x, out,
                                  "slope" if "slope" in w else None)
    else:
        nodes = [_structural_node(layer, inits)]
    p = a.get("activation_params", {})
    for name, value in (("lo6", 0.0), ("hi6", 6.0), ("clo", p.get("min", 0.0)),
                        ("chi", p.get("max", 0.0))):
        inits[name] = np.array(value, dtype=np.float32)
    used = {i for n in nodes for i in n.input}
    graph_inputs = [helper.make_tensor_value_info(t, TensorProto.FLOAT, graph.tensors[t].shape)
                    for t in dict.fromkeys(layer.inputs)]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in layer.outputs]
    g = helper.make_graph(nodes, "oracle", graph_inputs, outputs,
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()
                           if k in used])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _structural_node(layer: Layer, inits: dict[str, Any]) -> onnx.NodeProto:
    a, mk, op = layer.attrs, helper.make_node, layer.op
    ins, outs = list(layer.inputs), list(layer.outputs)
    ints = lambda name, v: inits.setdefault(name, np.array(v, dtype=np.int64)) is not None  # noqa: E731
    if op in (ir.ADD, ir.MUL):
        if "other" in layer.weights:
            ins = [ins[0], "other"] if a["constant_position"] == 1 else ["other", ins[0]]
        return mk("Add" if op == ir.ADD else "Mul", ins, outs)
    if op == ir.CONCAT:
        return mk("Concat", ins, outs, axis=a["axis"])
    if op in (ir.MAXPOOL, ir.AVGPOOL):
        extra = {"count_include_pad": a["count_include_pad"]} if op == ir.AVGPOOL else {}
        return mk("MaxPool" if op == ir.MAXPOOL else "AveragePool", ins, outs,
                  kernel_shape=a["kernel"], strides=a["strides"], pads=a["pads"],
                  ceil_mode=a["ceil_mode"], **extra)
    if op == ir.GLOBAL_AVGPOOL:
        return mk("GlobalAveragePool", ins, outs)
    if op == ir.MEAN:
        ints("axes", a["axes"])
        return mk("ReduceMean", [*ins, "axes"], outs, keepdims=a["keepdims"])
    if op in (ir.RESHAPE, ir.FLATTEN):
        ints("shape", a["target_shape"])
        return mk("Reshape", [*ins, "shape"], outs)
    if op == ir.TRANSPOSE:
        return mk("Transpose", ins, outs, perm=a["perm"])
    if op == ir.SPLIT:
        ints("split", a["split"])
        return mk("Split", [*ins, "split"], outs, axis=a["axis"])
    if op == ir.SLICE:
        for k in ("starts", "ends", "axes", "steps"):
            ints(k, a[k])
        return mk("Slice", [*ins, "starts", "ends", "axes", "steps"], outs)
    if op == ir.SOFTMAX:
        return mk("Softmax", ins, outs, axis=a["axis"])
    if op == ir.PAD:
        ints("pads", a["pads"])
        inits["value"] = np.array(a["value"], dtype=np.float32)
        return mk("Pad", [*ins, "pads", "value"], outs, mode=a["mode"])
    if op == ir.RESIZE:
        if a["scales"] is not None:
            inits["scales"] = np.array(a["scales"], dtype=np.float32)
            sizes = ["", "scales"]
        else:
            ints("sizes", a["sizes"])
            sizes = ["", "", "sizes"]
        return mk("Resize", [*ins, *sizes], outs, mode=a["mode"], nearest_mode=a["nearest_mode"],
                  coordinate_transformation_mode=a["coordinate_transformation_mode"])
    raise AssertionError(f"no oracle for {op}")


def check_against_onnxruntime(model: onnx.ModelProto, graph: Graph, rtol: float = 1e-4) -> None:
    """Every IR tensor's shape and every non-opaque layer's values match onnxruntime."""
    import onnxruntime as ort

    feeds = _feeds(graph)
    ref = zoo.ort_tensor_values(model, feeds, names=list(graph.tensors))
    values = {**ref, **feeds}
    for name, info in graph.tensors.items():
        assert tuple(values[name].shape) == info.shape, name
    for layer in graph.layers:
        if layer.op == ir.OPAQUE:
            continue
        sess = ort.InferenceSession(layer_as_onnx(layer, graph).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        got = sess.run(None, {t: values[t] for t in dict.fromkeys(layer.inputs)})
        for name, value in zip(layer.outputs, got, strict=True):
            scale = max(1.0, float(np.abs(values[name]).max()))
            np.testing.assert_allclose(value, values[name], rtol=rtol, atol=rtol * scale,
                                       err_msg=f"layer {layer.name} ({layer.op}) -> {name}")
