"""Elementwise ops: ``add`` and ``mul`` (numpy broadcasting, as ONNX and TFLite define it) and a
standalone ``activation`` layer.

Reads:
* add / mul: the operands are every activation input; when the layer has a single input, the
  second operand is the weight with role ``"other"`` (a constant such as a scale or a bias).
  ``attrs["activation"]`` (TFLite fuses one into ADD/MUL) is applied afterwards by ``run_op``.
* activation: ``attrs["activation"]`` (one of :data:`edgedeploy.runtime.ir.ACTIVATIONS`),
  ``attrs["activation_params"]`` (alpha, beta, min, max) and weight ``"slope"`` for PRelu
  (per-channel slopes broadcast along axis 1; a full-shape slope broadcasts as numpy does).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgedeploy.runtime.activations import apply_activation
from edgedeploy.runtime.ir import ACTIVATION, ADD, MUL, Layer
from edgedeploy.runtime.ops.registry import register


def _operands(layer: Layer, inputs: list[np.ndarray],
              weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    operands = list(inputs)
    if "other" in weights:
        operands.append(np.asarray(weights["other"]))
    if len(operands) < 2:
        raise ValueError(f"{layer.op} needs two operands (a second input or weight 'other')")
    return operands


def _dtype(operands: list[np.ndarray]) -> np.dtype:
    # Constants stored as float64 must not promote a float32 activation (ONNX would reject it).
    return np.asarray(operands[0]).dtype


@register(ADD)
def add(layer: Layer, inputs: list[np.ndarray],
        weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    operands = _operands(layer, inputs, weights)
    dtype = _dtype(operands)
    y = np.add(operands[0], np.asarray(operands[1], dtype=dtype))
    for other in operands[2:]:
        y = np.add(y, np.asarray(other, dtype=dtype))  # n-ary Sum
    return [y]


@register(MUL)
def mul(layer: Layer, inputs: list[np.ndarray],
        weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    operands = _operands(layer, inputs, weights)
    dtype = _dtype(operands)
    y = np.multiply(operands[0], np.asarray(operands[1], dtype=dtype))
    for other in operands[2:]:
        y = np.multiply(y, np.asarray(other, dtype=dtype))
    return [y]


@register(ACTIVATION, fuses_activation=False)
def activation(layer: Layer, inputs: list[np.ndarray],
               weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = np.array(inputs[0], dtype=np.result_type(inputs[0].dtype, np.float32), copy=True)
    kind = layer.attrs.get("activation") or "none"
    slope = weights.get("slope")
    if kind == "prelu" and slope is not None and np.ndim(slope) > 1:
        # A slope with its own layout (ONNX PRelu broadcasts unidirectionally): numpy rules.
        s = np.asarray(slope, dtype=x.dtype)
        return [np.where(x >= 0, x, x * s).astype(x.dtype, copy=False)]
    axis = 1 if x.ndim > 1 else 0
    return [apply_activation(x, kind, layer.attrs.get("activation_params"), slope,
                             channel_axis=axis)]
