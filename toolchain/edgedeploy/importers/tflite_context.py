"""Bookkeeping shared by the TFLite op converters: tensor names, IR shapes, constants, emission.

The layout invariant every converter keeps: an IR tensor standing for a rank-4 TFLite tensor is its
NCHW transposition (TFLite images are NHWC); tensors of any other rank keep TFLite's shape and
element order. Ops that change rank from or to 4 (RESHAPE, FULLY_CONNECTED, MEAN without
keep_dims) must therefore convert element order explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgedeploy.runtime import ir

#: NHWC -> NCHW (apply to a TFLite rank-4 shape or array) and back.
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)
#: A TFLite (NHWC) axis -> the IR's (NCHW) axis, for rank-4 tensors.
_AXIS_NHWC_TO_NCHW = (0, 2, 3, 1)


class NotConvertible(Exception):
    """A converter cannot express this operator in the IR; it becomes an ``opaque`` layer."""


def to_ir_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    return tuple(shape[i] for i in TO_NCHW) if len(shape) == 4 else shape


def to_tflite_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    return tuple(shape[i] for i in TO_NHWC) if len(shape) == 4 else shape


def ir_axis(axis: int, rank: int) -> int:
    """A TFLite axis (maybe negative) as the IR's axis."""
    a = axis % rank
    return _AXIS_NHWC_TO_NCHW[a] if rank == 4 else a


def same_order(nhwc: Sequence[int]) -> bool:
    """True when NHWC and NCHW hold a rank-4 tensor's elements in the same memory order.

    That is when C == 1 or H * W == 1 (e.g. after global pooling): a reshape then needs no
    transpose.
    """
    _, h, w, c = nhwc
    return c == 1 or h * w == 1


@dataclass
class Context:
    """The state of one import: TFLite tensor index -> IR name, shape, constant value."""

    names: list[str]
    tflite_shapes: list[tuple[int, ...]]
    consts: dict[int, np.ndarray]
    #: TFLite tensor index -> numpy element type name (tensors of a type numpy lacks: absent).
    dtypes: dict[int, str] = field(default_factory=dict)
    #: Indices of integer-quantized tensors (int8/uint8/int16 with scales): LiteRT's business.
    quantized: frozenset[int] = frozenset()
    #: TFLite tensor index -> (scale, zero_point, quantized dimension) of quantized tensors.
    quant_params: dict[int, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    #: TFLite shapes after an input-shape override, as LiteRT propagates them (else empty).
    resized: dict[int, tuple[int, ...]] = field(default_factory=dict)
    layers: list[ir.Layer] = field(default_factory=list)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    tensors: dict[str, ir.TensorInfo] = field(default_factory=dict)
    _taken: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._taken.update(self.names)

    # --- reading -------------------------------------------------------------------------------
    def is_const(self, t: int) -> bool:
        return t in self.consts

    def const(self, t: int) -> np.ndarray:
        if t not in self.consts:
            raise NotConvertible(f"input {self.names[t]!r} is not a constant")
        return self.consts[t]

    def shape(self, t: int) -> tuple[int, ...]:
        """The IR shape of an activation tensor."""
        if t not in self.shapes:
            raise NotConvertible(f"input {self.names[t]!r} has no known shape")
        return self.shapes[t]

    def rank(self, t: int) -> int:
        return len(self.shape(t))

    # --- writing -------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A tensor name not used by the model, for tensors the conversion adds."""
        name, i = base, 1
        while name in self._taken:
            name, i = f"{base}_{i}", i + 1
        self._taken.add(name)
        return name

    def set_output(self, t: int, ir_shape: Sequence[int]) -> str:
        """Record the IR shape of TFLite tensor ``t``; returns its IR name."""
        shape = tuple(int(d) for d in ir_shape)
        self.shapes[t] = shape
        self.tensors[self.names[t]] = ir.TensorInfo(self.names[t], shape,
                                                    self.dtypes.get(t, "float32"))
        return self.names[t]

    def emit(self, name: str, op: str, inputs: Sequence[str], outputs: Sequence[str],
             attrs: dict[str, Any] | None = None,
             weights: dict[str, np.ndarray] | None = None) -> ir.Layer:
        """Append a layer; its weights are stored under ``<layer name>/<role>``.

        Float weights are stored as float32; the descriptor is filled once all shapes are known.
        """
        refs: dict[str, str] = {}
        for role, array in (weights or {}).items():
            key = f"{name}/{role}"
            array = np.asarray(array)
            if array.dtype.kind == "f":
                array = array.astype(np.float32)
            self.weights[key] = np.ascontiguousarray(array)
            refs[role] = key
        layer = ir.Layer(name=name, op=op, inputs=list(inputs), outputs=list(outputs),
                         descriptor=ir.Descriptor(op), attrs=dict(attrs or {}), weights=refs)
        self.layers.append(layer)
        return layer

    def add_intermediate(self, base: str, ir_shape: Sequence[int]) -> str:
        name = self.fresh(base)
        self.tensors[name] = ir.TensorInfo(name, tuple(int(d) for d in ir_shape))
        return name

    def transpose(self, layer: str, src: str, src_shape: Sequence[int], perm: Sequence[int],
                  dst: str | None = None) -> tuple[str, tuple[int, ...]]:
        """Emit a transpose; ``dst`` names its output (a fresh name when None)."""
        out_shape = tuple(int(src_shape[p]) for p in perm)
        if dst is None:
            dst = self.add_intermediate(f"{src}/{'nhwc' if tuple(perm) == TO_NHWC else 't'}",
                                        out_shape)
        self.emit(layer, ir.TRANSPOSE, [src], [dst], {"perm": list(perm)})
        return dst, out_shape

    def reshape(self, layer: str, src: str, src_shape: Sequence[int], shape: Sequence[int],
                dst: str) -> None:
        shape = [int(s) for s in shape]
        self.emit(layer, ir.RESHAPE, [src], [dst], {"shape": shape, "target_shape": shape})

    def to_tflite_order(self, layer: str, t: int) -> tuple[str, tuple[int, ...]]:
        """The activation ``t`` with TFLite's element order: a transpose for rank-4 NHWC data
        unless NHWC and NCHW already agree (see :func:`same_order`)."""
        name, shape = self.names[t], self.shape(t)
        if len(shape) == 4 and not same_order(to_tflite_shape(shape)):
            return self.transpose(f"{layer}/to_nhwc", name, shape, TO_NHWC)
        return name, shape

    def reshape_to_output(self, layer: str, src: str, src_shape: Sequence[int], t: int,
                          tflite_shape: Sequence[int]) -> None:
        """Reshape data in TFLite element order to output ``t`` of ``tflite_shape``, adding the
        transpose back to NCHW when the output is rank-4 and the orders differ."""
        ir_shape = to_ir_shape(tflite_shape)
        if len(tflite_shape) == 4 and not same_order(tflite_shape):
            mid = self.add_intermediate(f"{self.names[t]}/nhwc", tflite_shape)
            self.reshape(f"{layer}/reshape", src, src_shape, tflite_shape, mid)
            self.transpose(f"{layer}/to_nchw", mid, tflite_shape, TO_NCHW,
                           dst=self.set_output(t, ir_shape))
        else:
            self.reshape(layer, src, src_shape, ir_shape, self.set_output(t, ir_shape))
