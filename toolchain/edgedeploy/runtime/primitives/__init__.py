"""Convolution primitives: the registry and every family (importing a family registers it)."""

from __future__ import annotations

from . import (  # noqa: F401  (imported for their registrations)
    depthwise,
    direct,
    fft,
    gemm_1x1,
    im2col_gemm,
    layout,
    winograd_f2x3,
    winograd_f4x3,
)
from .layout import layout_primitive
from .registry import (
    LAYOUT_OP,
    NCHW,
    NHWC,
    NO_ACTIVATION,
    REGISTRY,
    Activation,
    CostTerms,
    Primitive,
    applicable,
    conv2d_reference,
    family_cost,
    get,
    names,
    register,
    unregister,
)

__all__ = [
    "LAYOUT_OP", "NCHW", "NHWC", "NO_ACTIVATION", "REGISTRY", "Activation", "CostTerms",
    "Primitive", "applicable", "conv2d_reference", "family_cost", "get", "layout_primitive",
    "names", "register", "unregister",
]
