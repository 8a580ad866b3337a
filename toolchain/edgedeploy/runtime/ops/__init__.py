"""Native implementations of every non-convolution IR op, behind one registry.

``conv2d`` runs through the primitives (``runtime/primitives``) and ``opaque`` through the
onnxruntime engine; everything else runs here with numpy. Each op family is one module (see its
docstring for the ``attrs`` it reads); every op is checked against onnxruntime's own kernel in
``tests/runtime/test_ops*.py``.

Contract: an op never modifies its inputs; an output may be a view of an input (reshape, flatten,
slice, split), so treat outputs as read-only or copy them. Fused activations
(``attrs["activation"]``, ``attrs["activation_params"]``, weight role ``"slope"``) are applied here
after any op that does not consume them itself, since TFLite fuses activations into pools, adds and
concatenations.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgedeploy.runtime.activations import apply_activation
from edgedeploy.runtime.errors import ExecutionError
from edgedeploy.runtime.ir import Layer
from edgedeploy.runtime.ops import (  # noqa: F401  (importing registers the ops)
    concat,
    dense,
    elementwise,
    pool,
    resize,
    shape,
    softmax,
)
from edgedeploy.runtime.ops.registry import OPS, OpFn, OpImpl, register

__all__ = ["OPS", "OpFn", "OpImpl", "register", "run_op", "supported_ops"]


def supported_ops() -> list[str]:
    """The IR op names that run natively, sorted."""
    return sorted(OPS)


def run_op(layer: Layer, inputs: list[np.ndarray],
           weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``layer`` on ``inputs`` (activations, in ``layer.inputs`` order).

    ``weights`` maps a role (``"weight"``, ``"bias"``, ``"slope"``, ``"other"``...) to its array;
    the caller resolves ``layer.weights`` keys. Returns one array per ``layer.outputs``.
    """
    impl = OPS.get(layer.op)
    if impl is None:
        where = {"conv2d": " (convolutions run through the primitives)",
                 "opaque": " (opaque nodes run through the onnxruntime engine)"}.get(layer.op, "")
        raise ExecutionError(
            f"layer {layer.name!r}: op {layer.op!r} has no native implementation{where}",
            hint=f"native ops: {', '.join(supported_ops())}",
        )
    try:
        outputs = impl.fn(layer, inputs, weights)
        if impl.fuses_activation:
            outputs = [_fused_activation(layer, y, inputs, weights, impl.channel_axis)
                       for y in outputs]
    except ExecutionError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        shapes = ", ".join(str(tuple(np.shape(x))) for x in inputs)
        raise ExecutionError(
            f"layer {layer.name!r} ({layer.op}) failed on inputs of shape {shapes}: {exc}"
        ) from exc
    return outputs


def _fused_activation(layer: Layer, y: np.ndarray, inputs: list[np.ndarray],
                      weights: Mapping[str, np.ndarray], channel_axis: int) -> np.ndarray:
    kind = layer.attrs.get("activation") or "none"
    if kind == "none":
        return y
    # apply_activation works in place: never on a view of an input or a read-only array.
    if (not y.flags.writeable or y.dtype.kind != "f"
            or any(np.may_share_memory(y, x) for x in inputs)):
        y = np.array(y, dtype=np.result_type(y.dtype, np.float32), copy=True)
    axis = channel_axis % y.ndim if y.ndim else 0
    return apply_activation(y, kind, layer.attrs.get("activation_params"),
                            weights.get("slope"), channel_axis=axis)
