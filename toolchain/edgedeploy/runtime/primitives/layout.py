"""Layout transforms NCHW <-> NHWC as primitives, so the planner can price them like any layer
(Anderson & Gregg 2018: the edge cost of PBQP primitive selection).
"""

from __future__ import annotations

import numpy as np

from ..ir import Descriptor
from .registry import LAYOUT_OP, NCHW, NHWC, Activation, Primitive, Weights, register


def _always(d: Descriptor) -> bool:
    return True


def _no_weights(d: Descriptor, weights: Weights) -> dict[str, np.ndarray]:
    return {}


def _no_workspace(d: Descriptor) -> int:
    return 0


def _to_nhwc(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _to_nchw(d: Descriptor, packed: Weights, x: np.ndarray, act: Activation) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


register(Primitive("layout/nchw_to_nhwc", "layout", LAYOUT_OP, NCHW, NHWC, _always, _no_weights,
                   _no_workspace, _to_nhwc))
register(Primitive("layout/nhwc_to_nchw", "layout", LAYOUT_OP, NHWC, NCHW, _always, _no_weights,
                   _no_workspace, _to_nchw))


def layout_primitive(src: str, dst: str) -> Primitive | None:
    """The transform from layout ``src`` to ``dst`` (None when they are equal)."""
    from .registry import get

    return None if src == dst else get(f"layout/{src}_to_{dst}")
