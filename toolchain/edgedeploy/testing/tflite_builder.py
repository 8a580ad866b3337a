"""Write small, valid .tflite models from numpy weights, without TensorFlow.

Why: the TFLite importer and the LiteRT engine must be tested on real flatbuffers in the styles the
TF converter emits (fused activations, float16 weights behind DEQUANTIZE, int8/uint8 quantisation
per tensor and per channel, sparse constants behind DENSIFY), and
TensorFlow is not a dependency. The builder fills the object API of the schema module LiteRT ships
(``ai_edge_litert.schema_py_generated``) and packs it with ``flatbuffers``, so every file it writes
is exactly what LiteRT's own reader expects.

Tensors are handled by index; shapes are TFLite's (NHWC for images)::

    b = TFLiteBuilder()
    x = b.input("input", (1, 32, 32, 3))
    y = b.conv2d(x, w_ohwi, bias, stride=2, padding="SAME", activation="relu6")
    b.output(b.softmax(b.fully_connected(b.mean(y, (1, 2)), w_fc, b_fc)))
    b.save("tiny.tflite")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgedeploy.testing.tflite_sparse import sparse_encode

_OPS = schema.BuiltinOperator
_OPT = schema.BuiltinOptions
_ACT = {"none": 0, "relu": 1, "relu_n1_to_1": 2, "relu6": 3, "tanh": 4}
_PADDING = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}
_TYPES = {
    "float32": schema.TensorType.FLOAT32, "float16": schema.TensorType.FLOAT16,
    "int32": schema.TensorType.INT32, "int8": schema.TensorType.INT8,
    "uint8": schema.TensorType.UINT8, "int64": schema.TensorType.INT64,
    "bool": schema.TensorType.BOOL,
}
_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int8": np.int8,
       "uint8": np.uint8, "int64": np.int64, "bool": np.bool_}


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _window_out(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    """TFLite's output length: SAME is ceil(in / stride), VALID ceil((in - eff_k + 1) / stride)."""
    eff = dilation * (k - 1) + 1
    if padding == "SAME":
        return math.ceil(size / stride)
    return math.ceil((size - eff + 1) / stride)


class TFLiteBuilder:
    """Accumulates tensors, buffers and operators of one subgraph; ``save`` writes the file."""

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.tensors: list[schema.TensorT] = []
        self.buffers: list[schema.BufferT] = [schema.BufferT()]  # buffer 0: the empty sentinel
        self.operators: list[schema.OperatorT] = []
        self.opcodes: list[schema.OperatorCodeT] = []
        self._opcode_index: dict[int, int] = {}
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self._names: set[str] = set()

    # --- tensors -------------------------------------------------------------------------------
    def shape(self, t: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[t].shape)

    def _unique(self, name: str) -> str:
        base, i = name, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def tensor(self, name: str, shape: Sequence[int], dtype: str = "float32", *,
               data: np.ndarray | None = None, scale: Sequence[float] | None = None,
               zero_point: Sequence[int] | None = None, quantized_dimension: int = 0) -> int:
        """Add a tensor (a constant when ``data`` is given); returns its index."""
        t = schema.TensorT()
        t.name = self._unique(name)
        t.shape = [int(d) for d in shape]
        t.type = _TYPES[dtype]
        t.buffer = 0
        if data is not None:
            raw = np.ascontiguousarray(data, dtype=_NP[dtype])
            buf = schema.BufferT()
            buf.data = np.frombuffer(raw.tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = schema.QuantizationParametersT()
            q.scale = [float(s) for s in scale]
            q.zeroPoint = [int(z) for z in (zero_point if zero_point is not None else [0])]
            q.quantizedDimension = quantized_dimension
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def input(self, name: str, shape: Sequence[int], dtype: str = "float32", *,
              signature: Sequence[int] | None = None) -> int:
        """A graph input; ``signature``: its shape signature, -1 where a size is dynamic (the
        shape is then the placeholder the file holds)."""
        t = self.tensor(name, shape, dtype)
        if signature is not None:
            self.tensors[t].shapeSignature = [int(d) for d in signature]
        self.inputs.append(t)
        return t

    def const(self, name: str, array: np.ndarray, *, float16: bool = False,
              sparse: Sequence[int] | None = None, block: tuple[int, int] | None = None) -> int:
        """A float32 constant; ``float16=True`` stores it as float16 behind a DEQUANTIZE op;
        ``sparse`` (the dimensions stored CSR) stores only its non-zero entries behind a DENSIFY
        op, as TFLite's sparsity encoding (``block``: (dimension, size) of one dense block)."""
        array = np.asarray(array)
        if sparse is not None:
            return self.sparse_const(name, array, sparse, block=block, float16=float16)
        if not float16:
            dtype = "int32" if array.dtype.kind in "iu" else "float32"
            return self.tensor(name, array.shape, dtype, data=array)
        half = self.tensor(f"{name}_fp16", array.shape, "float16", data=array.astype(np.float16))
        out = self.tensor(name, array.shape)
        self.op(_OPS.DEQUANTIZE, [half], [out], _OPT.DequantizeOptions,
                schema.DequantizeOptionsT())
        return out

    def sparse_const(self, name: str, array: np.ndarray, csr_dims: Sequence[int], *,
                     block: tuple[int, int] | None = None, float16: bool = False) -> int:
        """The dense float32 tensor DENSIFY (then DEQUANTIZE for float16) makes of ``array``
        stored sparse: traversal in dimension order, the ``csr_dims`` compressed (CSR), the
        rest dense, with an optional dense block of ``block[1]`` along ``block[0]``."""
        dtype = "float16" if float16 else "float32"
        dense = np.asarray(array, dtype=_NP[dtype])
        values, sparsity = sparse_encode(dense, csr_dims, block)
        packed = self.tensor(f"{name}_sparse", dense.shape, dtype, data=values)
        self.tensors[packed].sparsity = sparsity
        out = self.tensor(f"{name}_dense" if float16 else name, dense.shape, dtype)
        self.op(_OPS.DENSIFY, [packed], [out], _OPT.DensifyOptions, schema.DensifyOptionsT())
        if not float16:
            return out
        result = self.tensor(name, dense.shape)
        self.op(_OPS.DEQUANTIZE, [out], [result], _OPT.DequantizeOptions,
                schema.DequantizeOptionsT())
        return result

    def output(self, *tensors: int) -> None:
        self.outputs.extend(tensors)

    # --- operators -----------------------------------------------------------------------------
    def op(self, code: int, inputs: Sequence[int], outputs: Sequence[int],
           options_type: int = 0, options: object = None, version: int = 1) -> None:
        """Append an operator; registers its code with builtin and deprecated codes both set."""
        if code not in self._opcode_index:
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, _OPS.PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = version
            self.opcodes.append(oc)
            self._opcode_index[code] = len(self.opcodes) - 1
        o = schema.OperatorT()
        o.opcodeIndex = self._opcode_index[code]
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        self.operators.append(o)

    def _out(self, name: str | None, default: str, shape: Sequence[int]) -> int:
        return self.tensor(name or f"{default}_{len(self.operators)}", shape)

    def _conv_bias(self, out: int, bias: np.ndarray | None, channels: int) -> int:
        """LiteRT's float conv kernels require a bias tensor: zeros stand in for None."""
        if bias is None:
            bias = np.zeros(channels, np.float32)
        return self.const(f"{self.tensors[out].name}/bias", bias)

    def conv2d(self, x: int, weights: np.ndarray, bias: np.ndarray | None = None, *,
               stride: int | Sequence[int] = 1, padding: str = "SAME",
               dilation: int | Sequence[int] = 1, activation: str = "none",
               float16: bool = False, sparse: Sequence[int] | None = None,
               block: tuple[int, int] | None = None, name: str | None = None) -> int:
        """CONV_2D with OHWI ``weights`` (grouped when C_in is a multiple of I); ``sparse`` and
        ``block`` store the weights sparse (see :meth:`const`)."""
        n, h, w, _ = self.shape(x)
        o, kh, kw, _ = weights.shape
        (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
        out = self._out(name, "conv2d", (n, _window_out(h, kh, sh, dh, padding),
                                         _window_out(w, kw, sw, dw, padding), o))
        wt = self.const(f"{self.tensors[out].name}/weights", weights, float16=float16,
                        sparse=sparse, block=block)
        bt = self._conv_bias(out, bias, o)
        opt = schema.Conv2DOptionsT()
        opt.padding, opt.strideH, opt.strideW = _PADDING[padding], sh, sw
        opt.dilationHFactor, opt.dilationWFactor = dh, dw
        opt.fusedActivationFunction = _ACT[activation]
        self.op(_OPS.CONV_2D, [x, wt, bt], [out], _OPT.Conv2DOptions, opt)
        return out

    def depthwise_conv2d(self, x: int, weights: np.ndarray, bias: np.ndarray | None = None, *,
                         depth_multiplier: int = 1, stride: int | Sequence[int] = 1,
                         padding: str = "SAME", dilation: int | Sequence[int] = 1,
                         activation: str = "none", float16: bool = False,
                         name: str | None = None) -> int:
        """DEPTHWISE_CONV_2D with ``weights`` of shape (1, kH, kW, C * depth_multiplier)."""
        n, h, w, _ = self.shape(x)
        _, kh, kw, cm = weights.shape
        (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
        out = self._out(name, "depthwise", (n, _window_out(h, kh, sh, dh, padding),
                                            _window_out(w, kw, sw, dw, padding), cm))
        wt = self.const(f"{self.tensors[out].name}/weights", weights, float16=float16)
        bt = self._conv_bias(out, bias, cm)
        opt = schema.DepthwiseConv2DOptionsT()
        opt.padding, opt.strideH, opt.strideW = _PADDING[padding], sh, sw
        opt.dilationHFactor, opt.dilationWFactor = dh, dw
        opt.depthMultiplier = depth_multiplier
        opt.fusedActivationFunction = _ACT[activation]
        self.op(_OPS.DEPTHWISE_CONV_2D, [x, wt, bt], [out], _OPT.DepthwiseConv2DOptions, opt,
                version=2)
        return out

    def fully_connected(self, x: int, weights: np.ndarray, bias: np.ndarray | None = None, *,
                        activation: str = "none", keep_num_dims: bool = False,
                        float16: bool = False, name: str | None = None) -> int:
        """FULLY_CONNECTED with ``weights`` (out, in); the input is flattened row-major."""
        shape = self.shape(x)
        units, k = weights.shape
        if keep_num_dims:
            out_shape: tuple[int, ...] = (*shape[:-1], units)
        else:
            out_shape = (int(np.prod(shape)) // k, units)
        out = self._out(name, "dense", out_shape)
        wt = self.const(f"{self.tensors[out].name}/weights", weights, float16=float16)
        bt = self.const(f"{self.tensors[out].name}/bias", bias) if bias is not None else -1
        opt = schema.FullyConnectedOptionsT()
        opt.fusedActivationFunction = _ACT[activation]
        opt.keepNumDims = keep_num_dims
        self.op(_OPS.FULLY_CONNECTED, [x, wt, bt], [out], _OPT.FullyConnectedOptions, opt)
        return out

    def _binary(self, code: int, a: int, b: int, activation: str, name: str | None) -> int:
        shape = np.broadcast_shapes(self.shape(a), self.shape(b))
        out = self._out(name, "add" if code == _OPS.ADD else "mul", shape)
        if code == _OPS.ADD:
            opt, kind = schema.AddOptionsT(), _OPT.AddOptions
        else:
            opt, kind = schema.MulOptionsT(), _OPT.MulOptions
        opt.fusedActivationFunction = _ACT[activation]
        self.op(code, [a, b], [out], kind, opt)
        return out

    def add(self, a: int, b: int, *, activation: str = "none", name: str | None = None) -> int:
        return self._binary(_OPS.ADD, a, b, activation, name)

    def mul(self, a: int, b: int, *, activation: str = "none", name: str | None = None) -> int:
        return self._binary(_OPS.MUL, a, b, activation, name)

    def concat(self, xs: Sequence[int], axis: int = -1, *, activation: str = "none",
               name: str | None = None) -> int:
        shapes = [self.shape(t) for t in xs]
        ax = axis % len(shapes[0])
        shape = list(shapes[0])
        shape[ax] = sum(s[ax] for s in shapes)
        out = self._out(name, "concat", shape)
        opt = schema.ConcatenationOptionsT()
        opt.axis, opt.fusedActivationFunction = axis, _ACT[activation]
        self.op(_OPS.CONCATENATION, list(xs), [out], _OPT.ConcatenationOptions, opt)
        return out

    def pad(self, x: int, paddings: Sequence[Sequence[int]], *, name: str | None = None) -> int:
        """PAD with ``paddings`` [[before, after]] per dimension (zeros)."""
        p = np.asarray(paddings, dtype=np.int32)
        shape = [d + int(a) + int(b) for d, (a, b) in zip(self.shape(x), p, strict=True)]
        out = self._out(name, "pad", shape)
        pt = self.const(f"{self.tensors[out].name}/paddings", p)
        self.op(_OPS.PAD, [x, pt], [out], _OPT.PadOptions, schema.PadOptionsT())
        return out

    def _pool(self, code: int, x: int, size: int | Sequence[int], stride: int | Sequence[int],
              padding: str, activation: str, name: str | None) -> int:
        n, h, w, c = self.shape(x)
        (kh, kw), (sh, sw) = _pair(size), _pair(stride)
        out = self._out(name, "pool", (n, _window_out(h, kh, sh, 1, padding),
                                       _window_out(w, kw, sw, 1, padding), c))
        opt = schema.Pool2DOptionsT()
        opt.padding, opt.strideH, opt.strideW = _PADDING[padding], sh, sw
        opt.filterHeight, opt.filterWidth = kh, kw
        opt.fusedActivationFunction = _ACT[activation]
        self.op(code, [x], [out], _OPT.Pool2DOptions, opt)
        return out

    def max_pool2d(self, x: int, size: int | Sequence[int], stride: int | Sequence[int] = 1, *,
                   padding: str = "VALID", activation: str = "none",
                   name: str | None = None) -> int:
        return self._pool(_OPS.MAX_POOL_2D, x, size, stride, padding, activation, name)

    def avg_pool2d(self, x: int, size: int | Sequence[int], stride: int | Sequence[int] = 1, *,
                   padding: str = "VALID", activation: str = "none",
                   name: str | None = None) -> int:
        return self._pool(_OPS.AVERAGE_POOL_2D, x, size, stride, padding, activation, name)

    def mean(self, x: int, axes: Sequence[int], *, keep_dims: bool = False,
             name: str | None = None) -> int:
        shape = self.shape(x)
        axes_n = {a % len(shape) for a in axes}
        out_shape = [1 if i in axes_n else d for i, d in enumerate(shape)
                     if keep_dims or i not in axes_n]
        out = self._out(name, "mean", out_shape)
        at = self.const(f"{self.tensors[out].name}/axes", np.asarray(axes, dtype=np.int32))
        opt = schema.ReducerOptionsT()
        opt.keepDims = keep_dims
        self.op(_OPS.MEAN, [x, at], [out], _OPT.ReducerOptions, opt)
        return out

    def reshape(self, x: int, shape: Sequence[int], *, name: str | None = None) -> int:
        """RESHAPE to ``shape`` (one -1 allowed), given as a constant shape tensor and option."""
        target = [int(d) for d in shape]
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            target[target.index(-1)] = int(np.prod(self.shape(x))) // known
        out = self._out(name, "reshape", target)
        st = self.const(f"{self.tensors[out].name}/shape", np.asarray(shape, dtype=np.int32))
        opt = schema.ReshapeOptionsT()
        opt.newShape = [int(d) for d in shape]
        self.op(_OPS.RESHAPE, [x, st], [out], _OPT.ReshapeOptions, opt)
        return out

    def softmax(self, x: int, *, beta: float = 1.0, name: str | None = None) -> int:
        out = self._out(name, "softmax", self.shape(x))
        opt = schema.SoftmaxOptionsT()
        opt.beta = beta
        self.op(_OPS.SOFTMAX, [x], [out], _OPT.SoftmaxOptions, opt)
        return out

    def unary(self, x: int, op_name: str, *, name: str | None = None) -> int:
        """Any shape-preserving builtin without options (RELU, RELU6, LOGISTIC, TANH, ABS...)."""
        out = self._out(name, op_name.lower(), self.shape(x))
        self.op(getattr(_OPS, op_name), [x], [out])
        return out

    def relu(self, x: int, *, name: str | None = None) -> int:
        return self.unary(x, "RELU", name=name)

    def relu6(self, x: int, *, name: str | None = None) -> int:
        return self.unary(x, "RELU6", name=name)

    def logistic(self, x: int, *, name: str | None = None) -> int:
        return self.unary(x, "LOGISTIC", name=name)

    def tanh(self, x: int, *, name: str | None = None) -> int:
        return self.unary(x, "TANH", name=name)

    def hard_swish(self, x: int, *, name: str | None = None) -> int:
        out = self._out(name, "hard_swish", self.shape(x))
        self.op(_OPS.HARD_SWISH, [x], [out], _OPT.HardSwishOptions, schema.HardSwishOptionsT())
        return out

    def leaky_relu(self, x: int, alpha: float = 0.2, *, name: str | None = None) -> int:
        out = self._out(name, "leaky_relu", self.shape(x))
        opt = schema.LeakyReluOptionsT()
        opt.alpha = alpha
        self.op(_OPS.LEAKY_RELU, [x], [out], _OPT.LeakyReluOptions, opt)
        return out

    def prelu(self, x: int, alpha: np.ndarray, *, name: str | None = None) -> int:
        """PRELU; ``alpha`` broadcasts against the input (TF exports (1, 1, C) for images)."""
        out = self._out(name, "prelu", self.shape(x))
        at = self.const(f"{self.tensors[out].name}/alpha", np.asarray(alpha, np.float32))
        self.op(_OPS.PRELU, [x, at], [out])
        return out

    def _resize(self, code: int, x: int, size: Sequence[int], align_corners: bool,
                half_pixel_centers: bool, name: str | None) -> int:
        n, _, _, c = self.shape(x)
        out = self._out(name, "resize", (n, int(size[0]), int(size[1]), c))
        st = self.const(f"{self.tensors[out].name}/size", np.asarray(size, dtype=np.int32))
        if code == _OPS.RESIZE_BILINEAR:
            opt, kind = schema.ResizeBilinearOptionsT(), _OPT.ResizeBilinearOptions
        else:
            opt, kind = (schema.ResizeNearestNeighborOptionsT(),
                         _OPT.ResizeNearestNeighborOptions)
        opt.alignCorners, opt.halfPixelCenters = align_corners, half_pixel_centers
        self.op(code, [x, st], [out], kind, opt, version=3 if half_pixel_centers else 1)
        return out

    def resize_nearest(self, x: int, size: Sequence[int], *, align_corners: bool = False,
                       half_pixel_centers: bool = False, name: str | None = None) -> int:
        return self._resize(_OPS.RESIZE_NEAREST_NEIGHBOR, x, size, align_corners,
                            half_pixel_centers, name)

    def resize_bilinear(self, x: int, size: Sequence[int], *, align_corners: bool = False,
                        half_pixel_centers: bool = False, name: str | None = None) -> int:
        return self._resize(_OPS.RESIZE_BILINEAR, x, size, align_corners, half_pixel_centers,
                            name)

    # --- int8 / uint8 quantisation -------------------------------------------------------------
    def quantize(self, x: int, scale: float, zero_point: int = 0, *, dtype: str = "int8",
                 name: str | None = None) -> int:
        """QUANTIZE float32 -> int8 or uint8 (per-tensor), as the TF converter puts at a
        model's input."""
        out = self.tensor(name or f"quantize_{len(self.operators)}", self.shape(x), dtype,
                          scale=[scale], zero_point=[zero_point])
        self.op(_OPS.QUANTIZE, [x], [out], _OPT.QuantizeOptions, schema.QuantizeOptionsT())
        return out

    def max_pool2d_quantized(self, x: int, size: int, stride: int = 1, *,
                             name: str | None = None) -> int:
        """MAX_POOL_2D on a quantized tensor: the output keeps the input's type and scale."""
        n, h, w, c = self.shape(x)
        src = self.tensors[x]
        out = self.tensor(name or f"pool_q_{len(self.operators)}",
                          (n, _window_out(h, size, stride, 1, "VALID"),
                           _window_out(w, size, stride, 1, "VALID"), c),
                          "uint8" if src.type == schema.TensorType.UINT8 else "int8",
                          scale=list(src.quantization.scale),
                          zero_point=list(src.quantization.zeroPoint))
        opt = schema.Pool2DOptionsT()
        opt.padding, opt.strideH, opt.strideW = _PADDING["VALID"], stride, stride
        opt.filterHeight, opt.filterWidth = size, size
        self.op(_OPS.MAX_POOL_2D, [x], [out], _OPT.Pool2DOptions, opt, version=2)
        return out

    def dequantize(self, x: int, *, name: str | None = None) -> int:
        out = self._out(name, "dequantize", self.shape(x))
        self.op(_OPS.DEQUANTIZE, [x], [out], _OPT.DequantizeOptions,
                schema.DequantizeOptionsT(), version=2)
        return out

    def conv2d_int8(self, x: int, weights: np.ndarray, bias: np.ndarray, *, out_scale: float,
                    out_zero_point: int = 0, stride: int = 1, padding: str = "SAME",
                    activation: str = "none", per_channel: bool = True,
                    name: str | None = None) -> int:
        """An int8 CONV_2D as full-integer conversion emits it: symmetric weights (per output
        channel, or one scale with ``per_channel=False``), int32 bias at input_scale *
        weight_scale, int8 output."""
        n, h, w, _ = self.shape(x)
        o, kh, kw, _ = weights.shape
        in_scale = self.tensors[x].quantization.scale[0]
        w_scale = np.maximum(np.abs(weights).reshape(o, -1).max(axis=1), 1e-8) / 127.0
        if not per_channel:
            w_scale = np.full(o, w_scale.max())
        wq = np.clip(np.round(weights / w_scale[:, None, None, None]), -127, 127)
        bq = np.round(np.asarray(bias) / (in_scale * w_scale)).astype(np.int32)
        oh, ow = _window_out(h, kh, stride, 1, padding), _window_out(w, kw, stride, 1, padding)
        out = self.tensor(name or f"conv2d_int8_{len(self.operators)}", (n, oh, ow, o), "int8",
                          scale=[out_scale], zero_point=[out_zero_point])
        base = self.tensors[out].name
        k = o if per_channel else 1
        wt = self.tensor(f"{base}/weights", weights.shape, "int8", data=wq,
                         scale=w_scale[:k].tolist(), zero_point=[0] * k)
        bt = self.tensor(f"{base}/bias", (o,), "int32", data=bq,
                         scale=(in_scale * w_scale[:k]).tolist(), zero_point=[0] * k)
        opt = schema.Conv2DOptionsT()
        opt.padding, opt.strideH, opt.strideW = _PADDING[padding], stride, stride
        opt.fusedActivationFunction = _ACT[activation]
        self.op(_OPS.CONV_2D, [x, wt, bt], [out], _OPT.Conv2DOptions, opt, version=3)
        return out

    # --- output --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        sg = schema.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.operators
        sg.inputs, sg.outputs = list(self.inputs), list(self.outputs)
        sg.name = "main"
        model = schema.ModelT()
        model.version = 3
        model.description = f"edgedeploy.testing.tflite_builder: {self.name}"
        model.operatorCodes, model.subgraphs, model.buffers = self.opcodes, [sg], self.buffers
        fb = flatbuffers.Builder(1024)
        fb.Finish(model.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path


def he_weights(rng: np.random.Generator, shape: Sequence[int], fan_in: int) -> np.ndarray:
    """Seeded He-normal weights, float32 (what the tests and tiny models use)."""
    return (rng.standard_normal(shape) * math.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
