"""Execution engines, one module each, registered in :data:`ENGINES` when this package is imported:
``native`` (edgedeploy's primitives), ``onnxruntime`` (CPU), ``onnxruntime-cuda`` and
``onnxruntime-tensorrt`` (GPU stages), ``litert`` (XNNPACK).

Importing this package imports neither onnxruntime nor LiteRT: each engine loads its back-end
when an instance is created, so a device without one of them can still run the others.
"""

from __future__ import annotations

from edgedeploy.runtime.engines import litert, native, onnxruntime, onnxruntime_gpu  # noqa: F401
from edgedeploy.runtime.engines.base import (
    AFFINITY,
    CPU_FP16,
    ENGINES,
    SEGMENT,
    THREADS,
    WHOLE_MODEL,
    Engine,
    EngineOptions,
    EngineSpec,
    available_engines,
    board_requirements,
    engine_class,
    engine_of,
    engine_spec,
    is_segment_choice,
    open_segment,
    register_engine,
    require,
    segment_engines,
    unregister_engine,
)

__all__ = [
    "AFFINITY",
    "CPU_FP16",
    "ENGINES",
    "SEGMENT",
    "THREADS",
    "WHOLE_MODEL",
    "Engine",
    "EngineOptions",
    "EngineSpec",
    "available_engines",
    "board_requirements",
    "engine_class",
    "engine_of",
    "engine_spec",
    "is_segment_choice",
    "open_segment",
    "register_engine",
    "require",
    "segment_engines",
    "unregister_engine",
]
