"""``softmax`` over one axis (ONNX opset >= 13 semantics: that axis alone, not a flattened tail).

Reads: ``attrs["axis"]`` (default -1). Also ``attrs["beta"]`` (TFLite SOFTMAX's input scale,
default 1). Numerically stable: the maximum along the axis is subtracted first.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgedeploy.runtime.ir import SOFTMAX, Layer
from edgedeploy.runtime.ops.registry import register


@register(SOFTMAX)
def softmax(layer: Layer, inputs: list[np.ndarray],
            weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    axis = int(layer.attrs.get("axis", -1))
    beta = float(layer.attrs.get("beta", 1.0))
    z = x - x.max(axis=axis, keepdims=True)
    if beta != 1.0:
        z *= np.asarray(beta, dtype=z.dtype)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return [z]
