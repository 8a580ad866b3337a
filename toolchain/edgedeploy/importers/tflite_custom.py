"""Custom and select-TF operators: kept for LiteRT, refused on import when LiteRT lacks them.

Why: a custom operator (MediaPipe's ``Convolution2DTransposeBias``, ``Landmarks2TransformMatrix``)
or a select-TF one (``Flex*``) is code the model does not carry; the IR keeps it as an opaque
layer for a LiteRT segment. Whether this LiteRT registers it (XNNPACK runs some MediaPipe ones)
is only known by asking it, so a model with such operators is opened once at import: an
operator nobody here can run is named now, in one error, instead of when a pipeline stage
fails to start.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from edgedeploy.errors import UnsupportedModelError

_UNRESOLVED = re.compile(r"unresolved custom op:\s*([A-Za-z0-9_/-]+)", re.IGNORECASE)


def foreign_ops(kinds: Sequence[str]) -> list[str]:
    """The custom (``CUSTOM:<name>``) and select-TF (``Flex...``) operator names, sorted."""
    names = {k.split(":", 1)[1] for k in kinds if k.startswith("CUSTOM:")}
    return sorted(names)


def check_litert_runs(path: Path, data: bytes, kinds: Sequence[str]) -> None:
    """Raise :class:`UnsupportedModelError` naming the custom operator LiteRT cannot resolve."""
    custom = foreign_ops(kinds)
    if not custom:
        return
    from edgedeploy.runtime.engines.litert import interpreter_class

    try:
        interp = interpreter_class()(model_content=data)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        missing = sorted(set(_UNRESOLVED.findall(str(exc)))) or custom
        flex = [c for c in missing if c.startswith("Flex")]
        raise UnsupportedModelError(
            f"{path}: LiteRT here cannot run the custom operator(s) {', '.join(missing)} "
            f"(the model's custom operators: {', '.join(custom)}); edgedeploy keeps such "
            "operators for LiteRT segments, and this LiteRT does not register them",
            hint=("select TF operators need LiteRT built with Flex delegates; " if flex else "")
            + "run the model with the runtime that registers them (MediaPipe's own graph for "
              "MediaPipe models), or export it without custom operators") from None
