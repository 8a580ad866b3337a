"""Activation functions, applied in place where possible (fused after conv/dense or standalone).

Shared by the conv primitives and the native ops so a fused activation and a standalone one give
bit-identical results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def apply_activation(x: np.ndarray, kind: str, params: Mapping[str, Any] | None = None,
                     slope: np.ndarray | None = None, channel_axis: int = 1) -> np.ndarray:
    """Apply ``kind`` to ``x`` (modifies and returns ``x`` when it is a writable float array).

    ``params``: ``alpha`` (leakyrelu, hardsigmoid), ``beta`` (hardsigmoid), ``min``/``max`` (clip).
    ``slope``: PRelu slope, broadcast along ``channel_axis`` when it is per-channel.
    """
    params = params or {}
    if kind in ("none", "", None):
        return x
    if kind == "relu":
        return np.maximum(x, 0, out=x)
    if kind == "relu6":
        return np.clip(x, 0, 6, out=x)
    if kind == "clip":
        lo = params.get("min", -np.inf)
        hi = params.get("max", np.inf)
        return np.clip(x, lo, hi, out=x)
    if kind == "sigmoid":
        return _sigmoid(x)
    if kind == "tanh":
        return np.tanh(x, out=x)
    if kind == "hardsigmoid":
        alpha = float(params.get("alpha", 0.2))
        beta = float(params.get("beta", 0.5))
        x *= alpha
        x += beta
        return np.clip(x, 0, 1, out=x)
    if kind == "hardswish":
        # x * relu6(x + 3) / 6  (ONNX HardSwish: alpha = 1/6, beta = 0.5)
        t = np.clip(x * (1.0 / 6.0) + 0.5, 0, 1)
        x *= t
        return x
    if kind == "silu":
        s = _sigmoid(x.copy())
        x *= s
        return x
    if kind == "leakyrelu":
        alpha = float(params.get("alpha", 0.01))
        return np.where(x >= 0, x, x * np.float32(alpha)).astype(x.dtype, copy=False)
    if kind == "prelu":
        if slope is None:
            raise ValueError("prelu needs a slope")
        s = _broadcast_slope(slope, x.ndim, channel_axis)
        return np.where(x >= 0, x, x * s).astype(x.dtype, copy=False)
    raise ValueError(f"unknown activation {kind!r}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign to avoid overflow in exp for large |x|.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    x[...] = out
    return x


def _broadcast_slope(slope: np.ndarray, ndim: int, channel_axis: int) -> np.ndarray:
    slope = np.asarray(slope, dtype=np.float32)
    if slope.size == 1:
        return slope.reshape(())
    flat = slope.reshape(-1)
    shape = [1] * ndim
    shape[channel_axis] = flat.size
    return flat.reshape(shape)
