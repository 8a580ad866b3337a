"""Dense (fully connected): ``y = x @ W.T + b`` with ``W`` of shape ``(C_out, C_in)``.

Reads: weight ``"weight"`` (C_out, C_in), optional weight ``"bias"`` (C_out,); the fused
activation (``attrs["activation"]``, ``attrs["activation_params"]``, weight ``"slope"``) is applied
by :func:`edgedeploy.runtime.ops.run_op` along the last axis. Any leading dims of ``x`` are kept
(ONNX MatMul semantics), so both Gemm's ``(N, C_in)`` and a batched ``(..., C_in)`` work.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgedeploy.runtime.ir import DENSE, Layer
from edgedeploy.runtime.ops.registry import register


@register(DENSE, channel_axis=-1)
def dense(layer: Layer, inputs: list[np.ndarray],
          weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    w = np.asarray(weights["weight"])
    if w.ndim != 2:
        raise ValueError(f"dense weight must be (C_out, C_in), got {w.shape}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"input has {x.shape[-1]} features, weight expects {w.shape[1]}")
    y = np.matmul(x, w.T)
    bias = weights.get("bias")
    if bias is not None:
        y += np.asarray(bias, dtype=y.dtype).reshape(-1)
    return [y]
