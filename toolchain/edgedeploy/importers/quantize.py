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
from typing import TYPE_CHECKING

import numpy as np

from edgedeploy.errors import ModelError

if TYPE_CHECKING:
    import onnx

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


#: The first opset whose DequantizeLinear takes a per-channel ``axis``: the quantizer writes one
#: for per-channel weights whatever the model's opset, so an older model is converted first.
PER_CHANNEL_OPSET = 13


def prepare(model: Path, out: str) -> Path:
    """The model as the quantizer needs it: at opset 13 at least (:data:`PER_CHANNEL_OPSET`),
    every node named, through onnxruntime's pre-quantization pass (BatchNormalization folded
    into Conv, shapes inferred): without that pass every BN stays a float op between
    quantize/dequantize pairs and the int8 model runs no faster than fp32. The pass is
    skipped (logged) where it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = _at_per_channel_opset(model, f"{out}.opset{PER_CHANNEL_OPSET}.onnx")
    try:
        quant_pre_process(str(source), out, skip_symbolic_shape=True)
    except Exception as exc:  # a model the optimizer cannot take still quantizes
        log.info("precision: pre-quantization pass skipped for %s (%s: %s)", model.name,
                 type(exc).__name__, exc)
        return _named(source, f"{out}.named.onnx")
    return _named(Path(out), out)


def _named(model: Path, out: str) -> Path:
    """``model`` with every node named (saved to ``out`` where one was not): the quantizer
    excludes nodes by name, and exporters may leave names empty. ``<op>_<index>``, made unique."""
    import onnx

    proto = onnx.load(str(model))
    taken = {n.name for n in proto.graph.node if n.name}
    if len(taken) == len(proto.graph.node):
        return model
    for k, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{k}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    onnx.save(proto, out)
    return Path(out)


def _quantized(graph: onnx.GraphProto) -> bool:
    """Whether a QuantizeLinear runs anywhere in ``graph`` or the bodies of its nodes."""
    import onnx

    return any(node.op_type == "QuantizeLinear"
               or any(a.type == onnx.AttributeProto.GRAPH and _quantized(a.g)
                      for a in node.attribute)
               for node in graph.node)


def _at_per_channel_opset(model: Path, out: str) -> Path:
    """``model`` converted to :data:`PER_CHANNEL_OPSET` by onnx's version converter and saved to
    ``out`` when its opset is older; the model itself otherwise."""
    import onnx
    from onnx import version_converter

    proto = onnx.load(str(model))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= PER_CHANNEL_OPSET:
        return model
    try:
        upgraded = version_converter.convert_version(proto, PER_CHANNEL_OPSET)
    except Exception as exc:  # the converter's own errors, whatever their class
        raise ModelError(f"{model.name} is at opset {opset}; per-channel int8 needs opset "
                         f"{PER_CHANNEL_OPSET} and onnx could not convert it "
                         f"({type(exc).__name__}: {exc})",
                         f"export the model at opset {PER_CHANNEL_OPSET} or later, or plan it "
                         "as given (model.precision: fp32)") from None
    log.info("precision: %s converted from opset %d to %d for per-channel int8", model.name,
             opset, PER_CHANNEL_OPSET)
    onnx.save(upgraded, out)
    return Path(out)


def quantize(model: Path, out: Path, frames: list[dict[str, np.ndarray]], *,
             exclude: Sequence[str] = (), prepared: bool = False,
             reduce_range: bool | None = None) -> None:
    """Static QDQ quantization, written atomically to ``out``: per-channel int8 weights and
    uint8 activations (the U8S8 form onnxruntime's x86 and Arm integer kernels run fastest;
    signed activations measured at a third of the speed on ResNet-50 here). The nodes named in
    ``exclude`` (as :func:`prepare` names them) stay fp32; ``prepared``: ``model`` has been
    through :func:`prepare` already. ``reduce_range``: weights in 7 bits, which no x86 kernel
    saturates (default: where this host's would, ``boards.detect.saturates_u8s8``)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if reduce_range is None:
        from edgedeploy.boards.detect import saturates_u8s8

        reduce_range = saturates_u8s8()
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
                            nodes_to_exclude=list(exclude), reduce_range=reduce_range)
            written = onnx.load(os.path.join(tmp, "int8.onnx"))
            onnx.checker.check_model(written)  # what it wrote is valid
            if not _quantized(written.graph):
                raise ModelError(
                    f"onnxruntime.quantization quantized no node of {model.name}: none of its "
                    "operators has an int8 form there (those inside If/Loop bodies are not "
                    "quantized)", "plan the model as given (model.precision: fp32)")
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime's and onnx's own errors, whatever their class
            raise ModelError(f"onnxruntime.quantization could not quantize {model.name}: "
                             f"{type(exc).__name__}: {exc}",
                             "plan the model as given (model.precision: fp32)") from None
        finally:
            root.removeFilter(quiet)
        os.replace(os.path.join(tmp, "int8.onnx"), out)



#: Where each integer operator takes its weight: QLinear* (x, x_scale, x_zp, w, ...), *Integer
#: (x, w, ...); a QDQ model's weights are int8 initializers into DequantizeLinear.
_WEIGHT_INPUT = {"QLinearConv": 3, "QLinearMatMul": 3, "ConvInteger": 1, "MatMulInteger": 1,
                 "DequantizeLinear": 0}
#: The largest int8 weight magnitude no x86 kernel saturates: a pair of uint8 products then
#: sums to at most 2 x 255 x 64 = 32,640 in 16 bits (``reduce_range`` quantizes to +-64).
UNSATURATED = 64


def full_range_weights(model: Path) -> list[str]:
    """Names of the nodes of an int8 ONNX model whose int8 weights go past
    :data:`UNSATURATED`: what onnxruntime's x86 kernels without VNNI can saturate
    (:func:`quantize`'s ``reduce_range`` keeps within it)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model)).graph
    weights = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    out = []
    for node in graph.node:
        k = _WEIGHT_INPUT.get(node.op_type)
        name = node.input[k] if k is not None and len(node.input) > k else None
        if name in weights:
            w = numpy_helper.to_array(weights[name])
            if w.size and int(np.abs(w.astype(np.int16)).max()) > UNSATURATED:
                out.append(node.name or name)
    return out


__all__ = ["PER_CHANNEL_OPSET", "UNSATURATED", "full_range_weights", "prepare", "quantize"]
