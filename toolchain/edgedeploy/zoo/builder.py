"""A small ONNX graph builder that writes models the way a PyTorch export looks.

Why not onnx.helper directly: every zoo model needs the same chores — seeded He-normal weights,
BatchNormalization with non-trivial statistics (so importers really have to fold it), deterministic
node and initializer names (``layer1.0.conv1`` / ``layer1.0.conv1.weight``), and shape tracking so
a classifier head can adapt to the actual input size and a too-small input fails with a clear
message instead of an invalid model.

The exported shape follows ``torch.onnx.export`` at opset 17 in eval mode with BN left unfused:
Conv -> BatchNormalization -> Relu, Flatten before Gemm (transB=1), ReLU6 as Clip with min/max
inputs, SiLU as Sigmoid + Mul, nearest upsampling as Resize with a scales input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgedeploy.errors import InputError

OPSET = 17
#: IR version 8 is what PyTorch writes for opset 17; older onnxruntime builds on boards load it.
IR_VERSION = 8
ACTIVATIONS = ("relu", "relu6", "hardswish", "silu", "leakyrelu", "sigmoid")


@dataclass(frozen=True)
class Tensor:
    """An activation tensor while building: its ONNX name and its NCHW (or N, F) shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[1]


def _pool_out(size: int, k: int, s: int, p0: int, p1: int, ceil: bool) -> int:
    """Output length of a pooling window (PyTorch/ONNX rule, ceil mode included)."""
    span = size + p0 + p1 - k
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p0:  # the last window must start inside the input
        out -= 1
    return out


def _pads(pad: int | tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from an int or a 4-tuple."""
    if isinstance(pad, int):
        return (pad, pad, pad, pad)
    return tuple(pad)  # type: ignore[return-value]


class GraphBuilder:
    """Accumulates nodes and initializers; :meth:`model` returns the finished ModelProto.

    Weights come from one ``numpy.random.Generator`` seeded once, consumed in build order, so the
    same (architecture, seed, size) always gives a byte-identical model.
    """

    def __init__(self, name: str, *, seed: int = 0) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        # Built in place: copying a VGG-sized initializer list into a graph costs seconds.
        self._model = onnx.ModelProto()
        self.graph = self._model.graph
        self.graph.name = name
        self.macs = 0
        self.params = 0  # published convention: weights, biases, BN gamma/beta (no running stats)
        self._names: set[str] = set()
        self._shared: dict[str, str] = {}
        self._batch: int | str = 1

    # --- plumbing --------------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"duplicate node name {name!r}")  # a zoo-module bug, not user input
        self._names.add(name)
        return name

    def _node(self, op: str, inputs: list[str], name: str, shape: tuple[int, ...],
              **attrs: object) -> Tensor:
        name = self._unique(name)
        if any(d < 1 for d in shape):
            raise InputError(
                f"model {self.name}: the input is too small, layer {name!r} would have shape "
                f"{tuple(shape)}", hint="use a larger input size (--size)")
        self.graph.node.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return Tensor(name, tuple(int(d) for d in shape))

    def _init(self, name: str, array: np.ndarray, *, count: bool = True) -> str:
        dtype = TensorProto.FLOAT if array.dtype == np.float32 else TensorProto.INT64
        data = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
        self.graph.initializer.add(name=name, data_type=dtype, dims=array.shape, raw_data=data)
        if count:
            self.params += int(array.size)
        return name

    def _normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        out = self.rng.standard_normal(shape, dtype=np.float32)
        out *= np.float32(std)
        return out

    def _const(self, key: str, value: np.ndarray) -> str:
        """A small shared constant initializer (Clip bounds, Resize scales, Reshape shapes)."""
        if key not in self._shared:
            self._shared[key] = self._init(key, value, count=False)
        return self._shared[key]

    # --- graph inputs and outputs ----------------------------------------------------------------
    def input(self, name: str, shape: tuple[int, ...], batch: int | str = 1) -> Tensor:
        """Declare a float input; a string ``batch`` makes the first dimension symbolic."""
        dims: list[int | str] = [batch, *shape[1:]]
        self.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        self._batch = batch
        self._names.add(name)
        return Tensor(name, (batch if isinstance(batch, int) else 1, *shape[1:]))

    def output(self, x: Tensor, name: str) -> Tensor:
        """Rename the tensor ``x`` to ``name`` and declare it a graph output."""
        for node in self.graph.node:
            node.output[:] = [name if o == x.name else o for o in node.output]
            node.input[:] = [name if i == x.name else i for i in node.input]
        dims: list[int | str] = [self._batch, *x.shape[1:]]
        self.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        return Tensor(name, x.shape)

    def model(self, *, doc: str = "", metadata: dict[str, object] | None = None
              ) -> onnx.ModelProto:
        """The finished model (the builder's own proto: build a fresh builder for another)."""
        model = self._model
        model.ir_version = IR_VERSION
        model.opset_import.add(domain="", version=OPSET)
        model.producer_name = "edgedeploy.zoo"
        model.doc_string = doc
        for key, value in sorted((metadata or {}).items()):
            model.metadata_props.add(key=key, value=str(value))
        return model

    # --- layers ----------------------------------------------------------------------------------
    def conv(self, x: Tensor, c_out: int, k: int | tuple[int, int], stride: int = 1,
             pad: int | tuple[int, int, int, int] | None = None, groups: int = 1,
             bias: bool | None = None, bn: bool = True, act: str | None = "relu", *, name: str,
             bn_name: str | None = None, act_name: str | None = None, dilation: int = 1,
             bn_eps: float = 1e-5, gamma: float = 1.0, alpha: float = 0.1) -> Tensor:
        """Conv [-> BatchNormalization] [-> activation]; bias defaults to ``not bn`` (PyTorch).

        ``gamma`` scales the BN weights (a small value mimics the last BN of a trained residual
        block and keeps activations of deep random networks in a sane range).
        """
        kh, kw = (k, k) if isinstance(k, int) else k
        pad = (dilation * (kh - 1) // 2) if pad is None else pad
        pt, pl, pb, pr = _pads(pad)
        n, c_in, h, w = x.shape
        if c_in % groups or c_out % groups:
            raise ValueError(f"{name}: channels {c_in}->{c_out} not divisible by groups {groups}")
        fan_in = (c_in // groups) * kh * kw
        wname = self._init(f"{name}.weight",
                           self._normal((c_out, c_in // groups, kh, kw), math.sqrt(2.0 / fan_in)))
        inputs = [x.name, wname]
        if bias if bias is not None else not bn:
            inputs.append(self._init(f"{name}.bias", self._normal((c_out,), 0.05)))
        ho = (h + pt + pb - dilation * (kh - 1) - 1) // stride + 1
        wo = (w + pl + pr - dilation * (kw - 1) - 1) // stride + 1
        y = self._node("Conv", inputs, name, (n, c_out, ho, wo), kernel_shape=[kh, kw],
                       strides=[stride, stride], pads=[pt, pl, pb, pr],
                       dilations=[dilation, dilation], group=groups)
        self.macs += n * c_out * ho * wo * fan_in
        if bn:
            y = self.batchnorm(y, name=bn_name or _bn_name(name), eps=bn_eps, gamma=gamma)
        if act:
            y = self.act(y, act, name=act_name or f"{name}.{act}", alpha=alpha)
        return y

    def batchnorm(self, x: Tensor, *, name: str, eps: float = 1e-5, gamma: float = 1.0) -> Tensor:
        """BN with realistic, non-trivial statistics so that folding it is really exercised."""
        c = x.channels
        scale = (np.float32(gamma) * (1.0 + self._normal((c,), 0.1))).astype(np.float32)
        beta = self._normal((c,), 0.1)
        mean = self._normal((c,), 0.1)
        var = np.exp(self._normal((c,), 0.2)).astype(np.float32)
        inputs = [self._init(f"{name}.weight", scale), self._init(f"{name}.bias", beta),
                  self._init(f"{name}.running_mean", mean, count=False),
                  self._init(f"{name}.running_var", var, count=False)]
        return self._node("BatchNormalization", [x.name, *inputs], name, x.shape,
                          epsilon=eps, momentum=0.9)

    def act(self, x: Tensor, kind: str, *, name: str, alpha: float = 0.1) -> Tensor:
        """One activation as PyTorch exports it."""
        if kind == "relu":
            return self._node("Relu", [x.name], name, x.shape)
        if kind == "relu6":
            lo = self._const("relu6.min", np.array(0.0, np.float32))
            hi = self._const("relu6.max", np.array(6.0, np.float32))
            return self._node("Clip", [x.name, lo, hi], name, x.shape)
        if kind == "hardswish":
            return self._node("HardSwish", [x.name], name, x.shape)
        if kind == "leakyrelu":
            return self._node("LeakyRelu", [x.name], name, x.shape, alpha=alpha)
        if kind == "sigmoid":
            return self.sigmoid(x, name=name)
        if kind == "silu":
            s = self.sigmoid(x, name=f"{name}.sigmoid")
            return self._node("Mul", [x.name, s.name], name, x.shape)
        raise ValueError(f"unknown activation {kind!r}; known: {', '.join(ACTIVATIONS)}")

    def sigmoid(self, x: Tensor, *, name: str) -> Tensor:
        return self._node("Sigmoid", [x.name], name, x.shape)

    def _pool(self, op: str, x: Tensor, k: int, stride: int | None,
              pad: int | tuple[int, int, int, int], ceil: bool, name: str,
              **extra: object) -> Tensor:
        stride = k if stride is None else stride
        pt, pl, pb, pr = _pads(pad)
        n, c, h, w = x.shape
        shape = (n, c, _pool_out(h, k, stride, pt, pb, ceil), _pool_out(w, k, stride, pl, pr, ceil))
        return self._node(op, [x.name], name, shape, kernel_shape=[k, k], strides=[stride, stride],
                          pads=[pt, pl, pb, pr], ceil_mode=int(ceil), **extra)

    def maxpool(self, x: Tensor, k: int, stride: int | None = None,
                pad: int | tuple[int, int, int, int] = 0, ceil: bool = False, *,
                name: str) -> Tensor:
        return self._pool("MaxPool", x, k, stride, pad, ceil, name)

    def avgpool(self, x: Tensor, k: int, stride: int | None = None,
                pad: int | tuple[int, int, int, int] = 0, ceil: bool = False, *, name: str,
                count_include_pad: bool = False) -> Tensor:
        return self._pool("AveragePool", x, k, stride, pad, ceil, name,
                          count_include_pad=int(count_include_pad))

    def global_avgpool(self, x: Tensor, *, name: str) -> Tensor:
        return self._node("GlobalAveragePool", [x.name], name, (*x.shape[:2], 1, 1))

    def adaptive_avgpool(self, x: Tensor, out: int, *, name: str) -> Tensor:
        """torch's AdaptiveAvgPool2d as its exporter writes it: nothing when the size already
        matches, an AveragePool when it divides evenly, otherwise left as is (the classifier then
        flattens the actual size, so non-reference input sizes still give valid models)."""
        h, w = x.shape[2:]
        if out == 1:
            return self.global_avgpool(x, name=name)
        if h == w and h > out and h % out == 0:
            return self.avgpool(x, h // out, name=name)
        return x

    def add(self, a: Tensor, b: Tensor, *, name: str) -> Tensor:
        if a.shape != b.shape:
            raise InputError(f"model {self.name}: {name} adds shapes {a.shape} and {b.shape}",
                             hint="this input size does not fit the architecture")
        return self._node("Add", [a.name, b.name], name, a.shape)

    def concat(self, xs: list[Tensor], axis: int = 1, *, name: str) -> Tensor:
        rest = {tuple(d for i, d in enumerate(t.shape) if i != axis) for t in xs}
        if len(rest) != 1:
            raise InputError(f"model {self.name}: {name} concatenates mismatched shapes "
                             f"{[t.shape for t in xs]}",
                             hint="this input size does not fit the architecture")
        shape = list(xs[0].shape)
        shape[axis] = sum(t.shape[axis] for t in xs)
        return self._node("Concat", [t.name for t in xs], name, tuple(shape), axis=axis)

    def flatten(self, x: Tensor, axis: int = 1, *, name: str) -> Tensor:
        return self._node("Flatten", [x.name], name,
                          (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])), axis=axis)

    def reshape(self, x: Tensor, shape: tuple[int, ...], *, name: str) -> Tensor:
        """Reshape to ``shape`` (first dim may be -1 or 0 to keep the batch dynamic)."""
        spec = self._const(f"{name}.shape", np.array(shape, np.int64))
        known = math.prod(d for d in shape if d > 0)
        resolved = tuple(d if d > 0 else math.prod(x.shape) // known for d in shape)
        return self._node("Reshape", [x.name, spec], name, resolved)

    def gemm(self, x: Tensor, c_out: int, *, name: str, bias: bool = True,
             act: str | None = None) -> Tensor:
        """Linear layer as Gemm(transB=1) with an (out, in) weight, like torch.nn.Linear."""
        n, c_in = x.shape
        inputs = [x.name, self._init(f"{name}.weight",
                                     self._normal((c_out, c_in), math.sqrt(2.0 / c_in)))]
        if bias:
            inputs.append(self._init(f"{name}.bias", self._normal((c_out,), 0.05)))
        y = self._node("Gemm", inputs, name, (n, c_out), alpha=1.0, beta=1.0, transB=1)
        self.macs += n * c_in * c_out
        return self.act(y, act, name=f"{name}.{act}") if act else y

    def resize(self, x: Tensor, scale: int, *, name: str) -> Tensor:
        """Nearest upsampling by an integer factor (torch.nn.Upsample's export)."""
        scales = self._const(f"resize.scales.{scale}",
                             np.array([1, 1, scale, scale], np.float32))
        n, c, h, w = x.shape
        return self._node("Resize", [x.name, "", scales], name, (n, c, h * scale, w * scale),
                          mode="nearest", coordinate_transformation_mode="asymmetric",
                          nearest_mode="floor")

    def softmax(self, x: Tensor, axis: int = -1, *, name: str) -> Tensor:
        return self._node("Softmax", [x.name], name, x.shape, axis=axis)


def _bn_name(conv_name: str) -> str:
    """``layer1.0.conv1`` -> ``layer1.0.bn1``, ``b.conv`` -> ``b.bn``; else append ``.bn``."""
    head, _, last = conv_name.rpartition(".")
    if last.startswith("conv"):
        return f"{head}.bn{last[4:]}" if head else f"bn{last[4:]}"
    return f"{conv_name}.bn"
