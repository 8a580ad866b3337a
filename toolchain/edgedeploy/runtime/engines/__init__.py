"""Execution engines: onnxruntime (a graph segment or a whole model as one session) and LiteRT
(a whole .tflite model); the native engine registers itself beside them.

Importing this package imports neither onnxruntime nor LiteRT: each engine loads its back-end
when an instance is created, so a device without one of them can still run the others.
"""

from __future__ import annotations

from edgedeploy.runtime.engines.base import (
    AFFINITY,
    ENGINES,
    SEGMENT,
    THREADS,
    WHOLE_MODEL,
    Engine,
    EngineSpec,
    available_engines,
    engine_class,
    register_engine,
    require,
)


def _ort() -> type:
    from edgedeploy.runtime.engines.onnxruntime import OrtSegment

    return OrtSegment


def _litert() -> type:
    from edgedeploy.runtime.engines.litert import LiteRTModel

    return LiteRTModel


register_engine(EngineSpec("onnxruntime", frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY}),
                           _ort, ("onnxruntime",)))
register_engine(EngineSpec("litert", frozenset({WHOLE_MODEL, THREADS, AFFINITY}), _litert,
                           ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")))

__all__ = [
    "AFFINITY",
    "ENGINES",
    "SEGMENT",
    "THREADS",
    "WHOLE_MODEL",
    "Engine",
    "EngineSpec",
    "available_engines",
    "engine_class",
    "register_engine",
    "require",
]
