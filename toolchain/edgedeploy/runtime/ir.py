"""The layer IR shared by host and device: plain dataclasses and numpy, nothing else.

Conventions (importers must produce them, primitives and engines may rely on them):

* Activations are NCHW, float32 unless the source says otherwise: a quantized model's tensors
  keep their element type (uint8, int8, int32) in ``TensorInfo.dtype`` and cross stage boundaries
  so; a TFLite importer transposes NHWC models into this form.
* Convolution weights are OIHW: ``(C_out, C_in / groups, kH, kW)``; depthwise is ``groups == C_in``.
* Dense (fully connected) weights are ``(C_out, C_in)``: ``y = x @ W.T + b``.
* Layers are stored in a topological order; tensor names are those of the source model wherever a
  tensor survived import (so an onnxruntime segment can be cut from the original model by name).
* Fused activations sit in ``Layer.attrs["activation"]`` with their parameters in
  ``attrs["activation_params"]`` (e.g. LeakyRelu alpha, HardSigmoid alpha/beta, clip min/max);
  a PRelu slope is a weight with role ``"slope"``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

#: Ops the IR knows. Anything else imports as ``OPAQUE`` and runs through onnxruntime.
CONV2D = "conv2d"
DENSE = "dense"
MAXPOOL = "maxpool"
AVGPOOL = "avgpool"
GLOBAL_AVGPOOL = "global_avgpool"
ADD = "add"
MUL = "mul"
CONCAT = "concat"
ACTIVATION = "activation"
RESIZE = "resize"
FLATTEN = "flatten"
RESHAPE = "reshape"
TRANSPOSE = "transpose"
SPLIT = "split"
SLICE = "slice"
SOFTMAX = "softmax"
PAD = "pad"
MEAN = "mean"
OPAQUE = "opaque"

KNOWN_OPS = frozenset(
    {CONV2D, DENSE, MAXPOOL, AVGPOOL, GLOBAL_AVGPOOL, ADD, MUL, CONCAT, ACTIVATION, RESIZE,
     FLATTEN, RESHAPE, TRANSPOSE, SPLIT, SLICE, SOFTMAX, PAD, MEAN, OPAQUE}
)

#: Activations a conv/dense layer may carry fused, or an ``activation`` layer may apply.
ACTIVATIONS = frozenset(
    {"none", "relu", "relu6", "clip", "sigmoid", "hardsigmoid", "hardswish", "silu", "prelu",
     "leakyrelu", "tanh"}
)

BYTES_PER_ELEMENT = 4  # float32 throughout

#: Arithmetic precisions a descriptor may carry (``Descriptor.precision``).
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Descriptor:
    """The shape facts of a layer: what the cost model and primitive predicates see.

    For non-spatial or non-conv ops the spatial fields describe the (first) input and the output as
    NCHW where that makes sense, and default to 1 otherwise.
    """

    op: str
    n: int = 1
    c_in: int = 1
    h: int = 1
    w: int = 1
    c_out: int = 1
    h_out: int = 1
    w_out: int = 1
    kernel_h: int = 1
    kernel_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    pad_top: int = 0
    pad_left: int = 0
    pad_bottom: int = 0
    pad_right: int = 0
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1
    activation: str = "none"
    has_bias: bool = False
    #: Elements of all activation inputs / outputs (covers multi-input ops such as concat).
    elems_in: int = 0
    elems_out: int = 0
    #: The arithmetic the source model asks for: ``fp32``, ``fp16`` or ``int8`` (a quantized
    #: operator, or a QDQ-wrapped one whose float form is the dequantized computation).
    precision: str = "fp32"

    # --- derived facts -------------------------------------------------------------------------
    @property
    def kernel(self) -> tuple[int, int]:
        return (self.kernel_h, self.kernel_w)

    @property
    def stride(self) -> tuple[int, int]:
        return (self.stride_h, self.stride_w)

    @property
    def dilation(self) -> tuple[int, int]:
        return (self.dilation_h, self.dilation_w)

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), the ONNX order is (top, left, bottom, right) as well."""
        return (self.pad_top, self.pad_left, self.pad_bottom, self.pad_right)

    @property
    def is_depthwise(self) -> bool:
        return self.op == CONV2D and self.groups > 1 and self.groups == self.c_in

    @property
    def macs(self) -> int:
        if self.op == CONV2D:
            return (self.n * self.c_out * self.h_out * self.w_out
                    * (self.c_in // self.groups) * self.kernel_h * self.kernel_w)
        if self.op == DENSE:
            return self.n * self.c_in * self.c_out
        return 0

    @property
    def weight_params(self) -> int:
        if self.op == CONV2D:
            w = self.c_out * (self.c_in // self.groups) * self.kernel_h * self.kernel_w
        elif self.op == DENSE:
            w = self.c_out * self.c_in
        else:
            return 0
        return w + (self.c_out if self.has_bias else 0)

    @property
    def flops(self) -> int:
        """2 x MACs for conv/dense; one op per output element for everything else."""
        return 2 * self.macs if self.macs else self.elems_out

    @property
    def bytes_in(self) -> int:
        return self.elems_in * BYTES_PER_ELEMENT

    @property
    def bytes_out(self) -> int:
        return self.elems_out * BYTES_PER_ELEMENT

    @property
    def bytes_weights(self) -> int:
        return self.weight_params * BYTES_PER_ELEMENT

    def to_dict(self) -> dict[str, Any]:
        """Every field; ``precision`` only when not fp32, so float graphs serialise as before."""
        d = asdict(self)
        if d.get("precision") == "fp32":
            del d["precision"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Descriptor:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_(self, **changes: Any) -> Descriptor:
        return replace(self, **changes)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def elems(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        """Bytes of one such tensor in its own element type (what a ring slot holds)."""
        return self.elems * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorInfo:
        return cls(d["name"], tuple(int(x) for x in d["shape"]), d.get("dtype", "float32"))


@dataclass
class Layer:
    """One node of the IR.

    ``inputs``/``outputs`` name activation tensors; ``weights`` maps a role ("weight", "bias",
    "slope", ...) to a key of :attr:`Graph.weights`. ``attrs`` holds op-specific settings
    (axis, perm, shape, mode, the original ONNX op type for opaque nodes, ...).
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    descriptor: Descriptor
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "descriptor": self.descriptor.to_dict(),
            "attrs": _jsonable(self.attrs),
            "weights": dict(self.weights),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layer:
        return cls(
            name=d["name"],
            op=d["op"],
            inputs=list(d["inputs"]),
            outputs=list(d["outputs"]),
            descriptor=Descriptor.from_dict(d["descriptor"]),
            attrs=dict(d.get("attrs", {})),
            weights=dict(d.get("weights", {})),
        )


@dataclass
class Graph:
    """A model after import: layers in topological order, tensor shapes and weights."""

    name: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    layers: list[Layer]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    #: Where it came from: {"format": "onnx"|"tflite", "path": ..., "sha256": ..., ...}.
    source: dict[str, Any] = field(default_factory=dict)

    # --- queries -------------------------------------------------------------------------------
    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of an activation tensor, graph inputs and outputs included (KeyError if none)."""
        if name in self.tensors:
            return tuple(self.tensors[name].shape)
        for t in [*self.inputs, *self.outputs]:
            if t.name == name:
                return tuple(t.shape)
        raise KeyError(name)

    def producers(self) -> dict[str, int]:
        """Tensor name -> index of the layer producing it (graph inputs are absent)."""
        return {t: i for i, layer in enumerate(self.layers) for t in layer.outputs}

    def consumers(self) -> dict[str, list[int]]:
        """Tensor name -> indices of the layers reading it, in order."""
        out: dict[str, list[int]] = {}
        for i, layer in enumerate(self.layers):
            for t in layer.inputs:
                out.setdefault(t, []).append(i)
        return out

    def param_count(self, layer: Layer) -> int:
        return int(sum(self.weights[k].size for k in layer.weights.values() if k in self.weights))

    def totals(self) -> dict[str, int]:
        macs = sum(layer.descriptor.macs for layer in self.layers)
        return {
            "layers": len(self.layers),
            "macs": int(macs),
            "flops": int(sum(layer.descriptor.flops for layer in self.layers)),
            "params": int(sum(self.param_count(layer) for layer in self.layers)),
            "bytes_weights": int(sum(w.nbytes for w in self.weights.values())),
        }

    def validate(self) -> None:
        """Check the structural invariants; raises ValueError naming the first violation."""
        known = {t.name for t in self.inputs}
        seen_names: set[str] = set()
        for layer in self.layers:
            if layer.name in seen_names:
                raise ValueError(f"duplicate layer name {layer.name!r}")
            seen_names.add(layer.name)
            if layer.op not in KNOWN_OPS:
                raise ValueError(f"layer {layer.name!r}: unknown op {layer.op!r}")
            for t in layer.inputs:
                if t not in known:
                    raise ValueError(f"layer {layer.name!r} reads {t!r} before it is produced")
            for role, key in layer.weights.items():
                if key not in self.weights:
                    raise ValueError(f"layer {layer.name!r}: missing weight {role}={key!r}")
            known.update(layer.outputs)
        for t in self.outputs:
            if t.name not in known:
                raise ValueError(f"graph output {t.name!r} is never produced")

    # --- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything but the weight arrays (those go to an .npz beside the JSON)."""
        return {
            "name": self.name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "layers": [layer.to_dict() for layer in self.layers],
            "tensors": {k: v.to_dict() for k, v in sorted(self.tensors.items())},
            "source": _jsonable(self.source),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], weights: dict[str, np.ndarray] | None = None) -> Graph:
        return cls(
            name=d["name"],
            inputs=[TensorInfo.from_dict(t) for t in d["inputs"]],
            outputs=[TensorInfo.from_dict(t) for t in d["outputs"]],
            layers=[Layer.from_dict(x) for x in d["layers"]],
            tensors={k: TensorInfo.from_dict(v) for k, v in d.get("tensors", {}).items()},
            weights=dict(weights or {}),
            source=dict(d.get("source", {})),
        )

    def save(self, directory: str | Path) -> None:
        """Write ``graph.json`` and ``weights.npz`` (deterministic: sorted keys, no timestamps)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "graph.json").write_text(
            json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"
        )
        with open(directory / "weights.npz", "wb") as fh:
            np.savez(fh, **{k: self.weights[k] for k in sorted(self.weights)})

    @classmethod
    def load(cls, directory: str | Path) -> Graph:
        directory = Path(directory)
        d = json.loads((directory / "graph.json").read_text())
        with np.load(directory / "weights.npz") as npz:
            weights = {k: npz[k] for k in npz.files}
        return cls.from_dict(d, weights)


def conv_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                     dilation: int = 1) -> int:
    """Output length of a convolution/pooling window along one axis (floor mode)."""
    effective = dilation * (kernel - 1) + 1
    return (size + pad_begin + pad_end - effective) // stride + 1


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays and tuples into JSON-friendly values, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
