"""The project's words for engines, layouts, clusters and formats, defined once.

Host and device code both import these names (this module is plain data, safe on a board), so an
engine is never ``"ort"`` in one file and ``"onnxruntime"`` in another.

A per-layer *choice* is either a conv primitive name (``"winograd_f4x3/nchw"``, always with a
layout suffix) run by the native engine, ``NATIVE`` for a non-conv op run by the native engine, or
the name of a *segment engine* (``ONNXRUNTIME``, ``LITERT``, the GPU engines): consecutive layers
with the same segment-engine choice run as one segment of that engine.
"""

from __future__ import annotations

#: Engines (see ``runtime.engines``): edgedeploy's own primitives and ops.
NATIVE = "native"
#: onnxruntime on CPU cores, a cut ONNX segment or the whole model as one session.
ONNXRUNTIME = "onnxruntime"
#: onnxruntime with the CUDA execution provider (a GPU stage).
ONNXRUNTIME_CUDA = "onnxruntime-cuda"
#: onnxruntime with the TensorRT execution provider (a GPU stage; fp16 only where allowed).
ONNXRUNTIME_TENSORRT = "onnxruntime-tensorrt"
#: LiteRT (XNNPACK) on a cut .tflite segment or the whole model.
LITERT = "litert"
ENGINE_NAMES = (NATIVE, ONNXRUNTIME, ONNXRUNTIME_CUDA, ONNXRUNTIME_TENSORRT, LITERT)

#: Tensor layouts of rank-4 activations.
NCHW = "nchw"
NHWC = "nhwc"

#: The name of a board's GPU in cluster and core-configuration names.
GPU_CLUSTER = "gpu"
#: The board name (and default target alias) of the machine edgedeploy runs on.
LOCAL = "local"

#: onnxruntime's log severity that keeps errors only (0 verbose ... 3 error, 4 fatal):
#: what the sessions the toolchain opens for itself log. Their warnings are about a model file or
#: the host (an unused initializer, a graph fitted to this CPU), not the user's deployment; the
#: session a user would open themselves (the ``ort_default`` baseline) logs errors only too, its
#: other settings onnxruntime's own.
ORT_ERRORS_ONLY = 3
#: ... and what a probe logs whose failure is an answer, not an error (a batch the model cannot
#: take): onnxruntime's fatal messages only.
ORT_FATAL_ONLY = 4

#: Model formats, and the file suffix of each.
ONNX = "onnx"
TFLITE = "tflite"
MODEL_SUFFIXES = {".onnx": ONNX, ".tflite": TFLITE}

#: The 8-bit precision: a model's quantized variant, and its whole-model runs in calibration.
INT8 = "int8"
#: Half precision: float operators computed in float16 (LiteRT's XNNPACK on cores with fp16
#: arithmetic), the model's file unchanged.
FP16 = "fp16"

#: Device kinds an engine runs on.
CPU = "cpu"
GPU = "gpu"

#: Lockfiles and profiles written before the vocabulary was fixed used this name for onnxruntime.
LEGACY_NAMES = {"ort": ONNXRUNTIME}


def canonical_choice(choice: str) -> str:
    """A choice with legacy engine names replaced (``"ort"`` -> ``"onnxruntime"``)."""
    return LEGACY_NAMES.get(choice, choice)
