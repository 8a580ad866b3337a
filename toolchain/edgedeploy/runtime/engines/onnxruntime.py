"""The onnxruntime engine: a graph segment (or a whole model) as one pinned onnxruntime session.

Threading follows the runtime issue: with ``cpus`` the session gets ``len(cpus)`` intra-op threads
(or ``threads``), one inter-op thread and sequential execution; the calling thread is pinned with
the process affinity (onnxruntime never pins thread 0) and the other threads through
``session.intra_op_thread_affinities`` (1-based CPU ids, one group per extra thread). Setting a
thread count drops onnxruntime's own default pinning, so both must be set together. When ``threads``
differs from ``len(cpus)`` the threads are not pinned one by one but float within the process's
CPU set. Such runner sessions also go without onnxruntime's CPU memory arena (see ``_options``).
``allow_spinning=False`` stops idle intra-op threads from spinning, for a stage that
shares its cores with another stage. With neither ``cpus`` nor ``threads`` every default is
left untouched: that is the "onnxruntime default session" baseline the planner compares against.
The default provider is ``CPUExecutionProvider``; pass ``providers`` for CUDA/TensorRT stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.runtime import affinity
from edgedeploy.runtime.engines.base import (
    AFFINITY,
    SEGMENT,
    THREADS,
    WHOLE_MODEL,
    EngineOptions,
    EngineSpec,
    register_engine,
    require,
)
from edgedeploy.runtime.errors import ExecutionError, ModelError
from edgedeploy.runtime.vocab import ONNX, ONNXRUNTIME

AFFINITY_KEY = "session.intra_op_thread_affinities"
SPINNING_KEY = "session.intra_op.allow_spinning"


def _ort() -> Any:
    return require("onnxruntime", "onnxruntime", "the onnxruntime engine")


class OrtSegment:
    """One onnxruntime session over an ONNX model (bytes or a path), pinned to ``cpus``."""

    name = ONNXRUNTIME
    capabilities = frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY})

    def __init__(self, model: bytes | str | Path, *, cpus: Sequence[int] | None = None,
                 threads: int | None = None, providers: Sequence[Any] | None = None,
                 allow_spinning: bool = True) -> None:
        ort = _ort()
        self.cpus = list(cpus) if cpus is not None else None
        self.threads = threads
        self.options = self._options(ort, allow_spinning)
        if self.cpus:
            affinity.pin_process(self.cpus)
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(
                source, self.options, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            what = "the model bytes" if isinstance(model, bytes) else str(model)
            raise ModelError(f"onnxruntime cannot load {what}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._input_types = {i.name: i.type for i in self.session.get_inputs()}

    def _options(self, ort: Any, allow_spinning: bool) -> Any:
        opts = ort.SessionOptions()
        if self.cpus is None and self.threads is None:
            return opts  # onnxruntime's defaults, untouched: the baseline session
        n = int(self.threads or len(self.cpus or [])) or 1
        opts.intra_op_num_threads = n
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No CPU arena: it grows in power-of-two chunks and never shrinks, which measured +13 MB
        # (MobileNetV2) to +28 MB (ResNet-50) of resident memory per stage for no time measurable
        # on this host (the segments' tensors are large; malloc serves them as well).
        opts.enable_cpu_mem_arena = False
        # One CPU per thread when the counts agree; otherwise the threads float within the
        # process affinity (threads inherit it from the pinned calling thread).
        if self.cpus and n > 1 and n == len(self.cpus):
            opts.add_session_config_entry(AFFINITY_KEY, affinity.ort_thread_affinities(self.cpus))
        if not allow_spinning:
            opts.add_session_config_entry(SPINNING_KEY, "0")
        return opts

    @property
    def intra_op_threads(self) -> int:
        """The intra-op thread count the session was given (0 means onnxruntime chooses)."""
        return int(self.session.get_session_options().intra_op_num_threads)

    def config_entry(self, key: str) -> str | None:
        """A session config entry as the live session reports it (None when unset)."""
        try:
            return self.session.get_session_options().get_session_config_entry(key)
        except Exception:  # onnxruntime raises when the key was never set
            return None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ExecutionError(
                f"onnxruntime segment is missing input(s) {missing}",
                hint=f"it expects {self.input_names}, got {sorted(inputs)}")
        feeds = {n: self._as_input(n, inputs[n]) for n in self.input_names}
        try:
            outs = self.session.run(self.output_names, feeds)
        except Exception as exc:
            shapes = {n: tuple(v.shape) for n, v in feeds.items()}
            raise ExecutionError(f"onnxruntime failed on inputs {shapes}: {exc}") from exc
        return dict(zip(self.output_names, outs, strict=True))

    def _as_input(self, name: str, value: np.ndarray) -> np.ndarray:
        # A float64 array (numpy's default) fed to a float input is a common slip; cast it.
        if self._input_types.get(name) == "tensor(float)" and value.dtype != np.float32:
            value = value.astype(np.float32)
        return np.ascontiguousarray(value)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def __enter__(self) -> OrtSegment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ort_default_session(path: bytes | str | Path) -> OrtSegment:
    """onnxruntime with every default (all cores, its own pinning): the baseline a user runs."""
    return OrtSegment(path)


def _open(model: bytes | str, options: EngineOptions) -> OrtSegment:
    return OrtSegment(model, cpus=list(options.cpus) if options.cpus else None,
                      threads=options.threads, allow_spinning=options.allow_spinning)


SPEC = register_engine(EngineSpec(
    ONNXRUNTIME, frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY}), lambda: OrtSegment,
    backends=("onnxruntime",), formats=(ONNX,), segment_format=ONNX,
    precisions=("fp32", "int8"), runs_opaque=True, requires=("onnxruntime",), open=_open))
