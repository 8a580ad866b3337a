"""Static QDQ quantization of an ONNX model with onnxruntime.quantization.

One quantizer for everything that makes an int8 model: the planner's int8 variant of a user's
model (``planner.precision``, behind its accuracy guard) and the calibration models a profile
runs whole to learn what int8 costs on a board (``costmodel.segments``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgedeploy.errors import ModelError

log = logging.getLogger("edgedeploy.importers")


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of frames."""

    def __init__(self, frames: list[dict[str, np.ndarray]]) -> None:
        self.frames = iter(frames)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.frames, None)

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


class _Quiet(logging.Filter):
    """Drops onnxruntime.quantization's 'consider pre-processing' advice (not actionable here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def prepare(model: Path, out: str) -> Path:
    """onnxruntime's pre-quantization pass (BatchNormalization folded into Conv, shapes
    inferred): without it every BN stays a float op between quantize/dequantize pairs and the
    int8 model runs no faster than fp32. The model itself when the pass fails (logged)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(model), out, skip_symbolic_shape=True)
    except Exception as exc:  # a model the optimizer cannot take still quantizes
        log.info("precision: pre-quantization pass skipped for %s (%s: %s)", model.name,
                 type(exc).__name__, exc)
        return model
    return Path(out)


def quantize(model: Path, out: Path, frames: list[dict[str, np.ndarray]], *,
             exclude: Sequence[str] = (), prepared: bool = False) -> None:
    """Static QDQ quantization, written atomically to ``out``: per-channel int8 weights and
    uint8 activations (the U8S8 form onnxruntime's x86 and Arm integer kernels run fastest;
    signed activations measured at a third of the speed on ResNet-50 here). The nodes named in
    ``exclude`` (as :func:`prepare` names them) stay fp32; ``prepared``: ``model`` has been
    through :func:`prepare` already."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    reader = type("Frames", (_Reader, CalibrationDataReader), {})(frames)
    out.parent.mkdir(parents=True, exist_ok=True)
    quiet = _Quiet()
    root = logging.getLogger()
    root.addFilter(quiet)  # onnxruntime's advice to pre-process, logged on the root logger
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        try:
            source = model if prepared else prepare(model, os.path.join(tmp, "pre.onnx"))
            quantize_static(str(source), os.path.join(tmp, "int8.onnx"), reader,
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=list(exclude))
        except Exception as exc:  # onnxruntime's own errors, whatever their class
            raise ModelError(f"onnxruntime.quantization could not quantize {model.name}: "
                             f"{type(exc).__name__}: {exc}",
                             "plan the model as given (model.precision: fp32)") from None
        finally:
            root.removeFilter(quiet)
        os.replace(os.path.join(tmp, "int8.onnx"), out)


__all__ = ["prepare", "quantize"]
