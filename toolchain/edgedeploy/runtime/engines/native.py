"""The native engine: edgedeploy's own conv primitives and IR ops, run by the graph executor.

It is not a segment engine (it runs layer by layer, each with its chosen primitive), but it is
registered like the others so the planner, ``doctor`` and the bundle see one list of engines.
It runs every model format the importers read, and nothing the IR keeps opaque.
"""

from __future__ import annotations

from edgedeploy.runtime.engines.base import AFFINITY, THREADS, EngineSpec, register_engine
from edgedeploy.runtime.vocab import NATIVE, ONNX, TFLITE


def _executor() -> type:
    from edgedeploy.runtime.executor import GraphExecutor

    return GraphExecutor


SPEC = register_engine(EngineSpec(
    NATIVE, frozenset({THREADS, AFFINITY}), _executor, backends=(), formats=(ONNX, TFLITE),
    precisions=("fp32",), runs_opaque=False))
