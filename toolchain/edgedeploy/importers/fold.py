"""Graph rewrites after op mapping: BatchNorm folding, bias and activation fusion, SiLU patterns.

Every rewrite keeps the tensor-name contract of the IR: a fused layer keeps the first node's name
and takes over the *last* node's output tensor, so each surviving tensor still names a tensor of
the source model. A rewrite only fires when the intermediate tensor has exactly one consumer and is
not a graph output; otherwise the intermediate value is needed and the layers stay apart.

Standalone BatchNormalization (not after a conv or a 2-D dense) becomes a depthwise 1x1
``conv2d`` (weight ``gamma / sqrt(var + eps)``, bias ``beta - mean * scale``): exact, one layer,
and it keeps the BN's output name. A BN the IR cannot express (training mode, not 4-D) stays opaque.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.ir import Layer

BN_OP = "BatchNormalization"
FUSIBLE_ACTIVATIONS = frozenset(ir.ACTIVATIONS) - {"none"}


class Rewriter:
    """The layer list plus what rewrites consult: weights, shapes and the graph's outputs."""

    def __init__(self, layers: list[Layer], weights: dict[str, np.ndarray],
                 shapes: dict[str, tuple[int, ...]], graph_outputs: set[str]) -> None:
        self.layers = layers
        self.weights = weights
        self.shapes = shapes
        self.graph_outputs = graph_outputs

    def consumers(self) -> dict[str, list[Layer]]:
        out: dict[str, list[Layer]] = {}
        for layer in self.layers:
            for t in layer.inputs:
                out.setdefault(t, []).append(layer)
        return out

    def producers(self) -> dict[str, Layer]:
        return {t: layer for layer in self.layers for t in layer.outputs}

    def sole_consumer(self, tensor: str, consumers: dict[str, list[Layer]]) -> Layer | None:
        users = consumers.get(tensor, [])
        if len(users) != 1 or tensor in self.graph_outputs:
            return None
        return users[0]

    def store(self, owner: str, role: str, value: np.ndarray) -> str:
        key, k = f"{owner}::{role}", 1
        while key in self.weights:
            key, k = f"{owner}::{role}{k}", k + 1
        self.weights[key] = np.ascontiguousarray(value, dtype=np.float32)
        return key

    def absorb(self, head: Layer, tail: Layer) -> None:
        """``head`` now also computes ``tail``: it takes over tail's outputs; tail is dropped."""
        head.outputs = list(tail.outputs)
        head.attrs.setdefault("fused", []).append(tail.name)
        merge_op_ranges(head, tail)
        self.layers.remove(tail)

    def run(self, *passes: Callable[[Rewriter], bool]) -> None:
        """Apply each pass until it no longer changes anything."""
        for p in passes:
            while p(self):
                pass


def merge_op_ranges(keep: Layer, gone: Layer) -> None:
    """A merged layer covers the TFLite operators of both (``attrs["tflite_ops"]``), so LiteRT
    segment boundaries (:mod:`tflite_cut`) never fall inside it."""
    ranges = [x.attrs["tflite_ops"] for x in (keep, gone) if "tflite_ops" in x.attrs]
    if ranges:
        keep.attrs["tflite_ops"] = [min(r[0] for r in ranges), max(r[1] for r in ranges)]


def is_bn(layer: Layer) -> bool:
    return (layer.op == ir.OPAQUE and layer.attrs.get("onnx_op_type") == BN_OP
            and "bn" in layer.attrs)


def bn_scale_shift(rw: Rewriter, bn: Layer) -> tuple[np.ndarray, np.ndarray]:
    """y = x * scale + shift for an inference-mode BatchNormalization."""
    g = rw.weights[bn.weights["scale"]].astype(np.float64)
    b = rw.weights[bn.weights["bias"]].astype(np.float64)
    mean = rw.weights[bn.weights["mean"]].astype(np.float64)
    var = rw.weights[bn.weights["var"]].astype(np.float64)
    scale = g / np.sqrt(var + float(bn.attrs["bn"]["epsilon"]))
    return scale, b - mean * scale


def fold_batchnorm(rw: Rewriter) -> bool:
    """Conv/Dense -> BN becomes one layer with rescaled weights (one rewrite per call)."""
    consumers = rw.consumers()
    for layer in rw.layers:
        if layer.op not in (ir.CONV2D, ir.DENSE) or layer.attrs.get("activation") != "none":
            continue
        bn = rw.sole_consumer(layer.outputs[0], consumers)
        if bn is None or not is_bn(bn) or len(layer.outputs) != 1:
            continue
        if layer.op == ir.DENSE and len(rw.shapes[layer.outputs[0]]) != 2:
            continue  # BN normalises axis 1, which is the features only for 2-D outputs
        scale, shift = bn_scale_shift(rw, bn)
        w = rw.weights[layer.weights["weight"]].astype(np.float64)
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        old_b = rw.weights[layer.weights["bias"]] if "bias" in layer.weights else 0.0
        layer.weights["weight"] = rw.store(layer.name, "weight_bn", w)
        layer.weights["bias"] = rw.store(layer.name, "bias_bn", np.asarray(old_b) * scale + shift)
        rw.absorb(layer, bn)
        return True
    return False


def batchnorm_to_conv(rw: Rewriter) -> bool:
    """A BN left standing becomes a depthwise 1x1 conv2d (see the module docstring)."""
    for i, bn in enumerate(rw.layers):
        if not is_bn(bn) or len(rw.shapes[bn.inputs[0]]) != 4:
            continue
        scale, shift = bn_scale_shift(rw, bn)
        c = scale.shape[0]
        attrs = {"kernel": [1, 1], "strides": [1, 1], "dilations": [1, 1], "pads": [0, 0, 0, 0],
                 "group": c, "activation": "none", "activation_params": {},
                 "folded_from": BN_OP}
        weights = {"weight": rw.store(bn.name, "weight_bn", scale.reshape(c, 1, 1, 1)),
                   "bias": rw.store(bn.name, "bias_bn", shift)}
        rw.layers[i] = Layer(bn.name, ir.CONV2D, list(bn.inputs), list(bn.outputs),
                             ir.Descriptor(ir.CONV2D), attrs, weights)
        return True
    return False


def fuse_bias_add(rw: Rewriter) -> bool:
    """MatMul -> Add(constant bias) (TF2ONNX, Paddle) becomes a dense layer with a bias."""
    consumers = rw.consumers()
    for layer in rw.layers:
        if (layer.op != ir.DENSE or "bias" in layer.weights
                or layer.attrs.get("activation") != "none"):
            continue
        add = rw.sole_consumer(layer.outputs[0], consumers)
        if add is None or add.op != ir.ADD or "other" not in add.weights:
            continue
        c_out = rw.weights[layer.weights["weight"]].shape[0]
        bias = rw.weights[add.weights["other"]]
        if bias.size != c_out or (bias.ndim > 1 and bias.shape[-1] != c_out):
            continue
        layer.weights["bias"] = rw.store(layer.name, "bias", bias.reshape(-1))
        rw.absorb(layer, add)
        return True
    return False


def fuse_swish(rw: Rewriter) -> bool:
    """Mul(x, Sigmoid(x)) is SiLU and Mul(x, HardSigmoid(x; 1/6, 1/2)) is HardSwish."""
    consumers = rw.consumers()
    producers = rw.producers()
    for mul in rw.layers:
        if mul.op != ir.MUL or len(mul.inputs) != 2:
            continue
        for x, s in (mul.inputs, mul.inputs[::-1]):
            gate = producers.get(s)
            kind = _swish_kind(gate)
            if gate is None or kind is None or gate.inputs != [x]:
                continue
            if rw.sole_consumer(s, consumers) is not mul:
                continue
            ops = mul.attrs.get("tflite_ops")
            mul.op, mul.inputs = ir.ACTIVATION, [x]
            mul.attrs = {"activation": kind, "activation_params": {}, "fused": [gate.name]}
            if ops is not None:
                mul.attrs["tflite_ops"] = ops
            merge_op_ranges(mul, gate)
            rw.layers.remove(gate)
            return True
    return False


def _swish_kind(gate: Layer | None) -> str | None:
    if gate is None or gate.op != ir.ACTIVATION:
        return None
    if gate.attrs["activation"] == "sigmoid":
        return "silu"
    p = gate.attrs.get("activation_params", {})
    if gate.attrs["activation"] == "hardsigmoid" and abs(p.get("alpha", 0) - 1 / 6) < 1e-6 \
            and abs(p.get("beta", 0) - 0.5) < 1e-6:
        return "hardswish"
    return None


def fuse_activation(rw: Rewriter) -> bool:
    """An activation whose input comes only from a conv/dense rides on that layer."""
    consumers = rw.consumers()
    producers = rw.producers()
    for act in rw.layers:
        if act.op != ir.ACTIVATION or act.attrs["activation"] not in FUSIBLE_ACTIVATIONS:
            continue
        head = producers.get(act.inputs[0])
        if head is None or head.op not in (ir.CONV2D, ir.DENSE) or len(head.outputs) != 1:
            continue
        if head.attrs.get("activation") != "none" or rw.sole_consumer(act.inputs[0],
                                                                      consumers) is not act:
            continue
        head.attrs["activation"] = act.attrs["activation"]
        head.attrs["activation_params"] = dict(act.attrs.get("activation_params", {}))
        if "slope" in act.weights:
            head.weights["slope"] = act.weights["slope"]
        rw.absorb(head, act)
        head.attrs["fused"].extend(act.attrs.get("fused", []))
        return True
    return False


def fuse_all(rw: Rewriter) -> None:
    """The rewrite order matters: bias before BN, BN before activations, SiLU before fusing it."""
    rw.run(fuse_bias_add, fold_batchnorm, batchnorm_to_conv, fuse_swish, fuse_activation)
