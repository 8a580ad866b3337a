"""A one-node ONNX Conv model written without the ``onnx`` package.

The profiler times onnxruntime's own kernel on one layer shape by loading a model that holds
just that Conv. On a board the runtime has numpy and onnxruntime but not ``onnx`` (a host-side
package), and shipping the models from the host would mean megabytes of random weights per
shape; so the protobuf is written here, field by field (ONNX's ``onnx.proto``, proto2 wire
format: varints and length-delimited fields, repeated scalars unpacked).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgedeploy.runtime import ir

#: ONNX ``TensorProto.FLOAT`` and the ``AttributeProto`` types used here.
_FLOAT, _INT, _INTS = 1, 2, 7
IR_VERSION, OPSET = 8, 17


def _varint(value: int) -> bytes:
    out = bytearray()
    value = int(value)
    if value < 0:
        value += 1 << 64  # two's complement, as protobuf encodes negative int64
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _str(field: int, text: str) -> bytes:
    return _bytes(field, text.encode())


def _ints(field: int, values: Iterable[int]) -> bytes:
    return b"".join(_int(field, v) for v in values)


def _attr_ints(name: str, values: Iterable[int]) -> bytes:
    return _bytes(5, _str(1, name) + _ints(8, values) + _int(20, _INTS))


def _attr_int(name: str, value: int) -> bytes:
    return _bytes(5, _str(1, name) + _int(3, value) + _int(20, _INT))


def _tensor(name: str, array: np.ndarray) -> bytes:
    data = np.ascontiguousarray(array, dtype="<f4")
    return _ints(1, data.shape) + _int(2, _FLOAT) + _str(8, name) + _bytes(9, data.tobytes())


def _value_info(name: str, shape: Iterable[int]) -> bytes:
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)
    tensor_type = _int(1, _FLOAT) + _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


def conv_model(d: ir.Descriptor, weight: np.ndarray, bias: np.ndarray | None = None) -> bytes:
    """The serialized ModelProto of the conv ``d``: input "x", output "y" (as
    ``costmodel.profiler.conv_onnx`` builds it with the onnx package)."""
    inputs = ["x", "w"] + (["b"] if bias is not None else [])
    node = (b"".join(_str(1, n) for n in inputs) + _str(2, "y") + _str(4, "Conv")
            + _attr_ints("kernel_shape", [d.kernel_h, d.kernel_w])
            + _attr_ints("strides", [d.stride_h, d.stride_w])
            + _attr_ints("dilations", [d.dilation_h, d.dilation_w])
            + _attr_ints("pads", [d.pad_top, d.pad_left, d.pad_bottom, d.pad_right])
            + _attr_int("group", d.groups))
    inits = _bytes(5, _tensor("w", weight))
    if bias is not None:
        inits += _bytes(5, _tensor("b", bias))
    graph = (_bytes(1, node) + _str(2, "conv") + inits
             + _bytes(11, _value_info("x", [d.n, d.c_in, d.h, d.w]))
             + _bytes(12, _value_info("y", [d.n, d.c_out, d.h_out, d.w_out])))
    opset = _str(1, "") + _int(2, OPSET)
    return (_int(1, IR_VERSION) + _str(2, "edgedeploy") + _bytes(7, graph)
            + _bytes(8, opset))
