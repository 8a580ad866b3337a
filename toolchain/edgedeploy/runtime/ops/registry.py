"""The registry of native (non-convolution) IR ops: one function per IR op name.

Kept apart from ``ops/__init__.py`` so the op modules can register themselves without importing
the package they belong to (the ONNX reference evaluator's one-file-per-operator layout).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedeploy.runtime.ir import Layer

#: ``fn(layer, inputs, weights) -> outputs``; ``weights`` maps a role ("weight", "bias", ...) to
#: its array. Implementations never modify their inputs; outputs may be views of them.
OpFn = Callable[[Layer, list[np.ndarray], Mapping[str, np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class OpImpl:
    """One native op: the IR op name, its function and what it reads (for docs and errors)."""

    name: str
    fn: OpFn
    #: Whether ``attrs["activation"]`` is applied after the op (TFLite fuses it into pools, add...).
    fuses_activation: bool = True
    #: Axis a per-channel PRelu slope broadcasts along (dense: the last one).
    channel_axis: int = 1


OPS: dict[str, OpImpl] = {}


def register(name: str, *, fuses_activation: bool = True,
             channel_axis: int = 1) -> Callable[[OpFn], OpFn]:
    """Decorator: register ``fn`` as the native implementation of IR op ``name``."""

    def wrap(fn: OpFn) -> OpFn:
        if name in OPS:
            raise RuntimeError(f"op {name!r} registered twice")
        OPS[name] = OpImpl(name, fn, fuses_activation, channel_axis)
        return fn

    return wrap


def attr(layer: Layer, weights: Mapping[str, np.ndarray], key: str, default: Any = None) -> Any:
    """``layer.attrs[key]``, else a weight with role ``key`` as a list (ONNX inputs kept as
    constants, e.g. Slice starts or Reshape shape), else ``default``."""
    if key in layer.attrs and layer.attrs[key] is not None:
        return layer.attrs[key]
    if key in weights:
        return np.asarray(weights[key]).tolist()
    return default


def int_list(value: Any) -> list[int] | None:
    """A list of Python ints from a list/tuple/array/scalar, or None."""
    if value is None:
        return None
    return [int(v) for v in np.asarray(value).reshape(-1).tolist()]
