"""The LiteRT engine: a .tflite model (whole, or a segment cut from one) with ``num_threads``.

:class:`LiteRTModel` speaks the model's own layout (NHWC) and is the reference for TFLite inputs;
:class:`LiteRTSegment` is the pipeline's engine: IR-layout tensors in and out, converted at its
edges (rank-4 tensors only; see ``runtime.layouts``), so a LiteRT stage sits beside native and
onnxruntime stages like any other. XNNPACK threads follow the stage's cores.

``ai_edge_litert`` is the maintained interpreter; ``tflite_runtime`` is used only where LiteRT is
absent (tflite-runtime 2.14 fails to load under numpy 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
)
from edgedeploy.runtime.errors import ExecutionError, ModelError
from edgedeploy.runtime.layouts import ir_to_tflite, tflite_to_ir
from edgedeploy.runtime.vocab import LITERT, NHWC, TFLITE


def interpreter_class() -> Any:
    """LiteRT's Interpreter, else tflite_runtime's; ExecutionError with an install hint."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise ExecutionError(
                "the LiteRT engine needs the Python package 'ai-edge-litert', which is not "
                "installed here",
                hint="install it on this machine: python -m pip install ai-edge-litert") from exc
    return Interpreter


class LiteRTModel:
    """One interpreter over a .tflite model; tensors allocated once at construction."""

    name = LITERT
    capabilities = frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY})

    def __init__(self, path: str | Path | bytes, *, num_threads: int | None = None,
                 cpus: Sequence[int] | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        self.cpus = list(cpus) if cpus is not None else None
        if self.cpus:
            affinity.pin_process(self.cpus)
            num_threads = num_threads or len(self.cpus)
        self.num_threads = num_threads
        Interpreter = interpreter_class()
        kwargs: dict[str, Any] = {"num_threads": num_threads} if num_threads else {}
        try:
            if isinstance(path, bytes):
                self.interpreter = Interpreter(model_content=path, **kwargs)
            else:
                self.interpreter = Interpreter(model_path=str(path), **kwargs)
        except (ValueError, RuntimeError) as exc:
            what = "the model bytes" if isinstance(path, bytes) else str(path)
            raise ModelError(f"LiteRT cannot load {what}: {exc}") from exc
        self._inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        for name, shape in (input_shapes or {}).items():
            self._resize(name, shape)
        self.interpreter.allocate_tensors()
        self._refresh()

    def _refresh(self) -> None:
        self._inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self._outputs = {d["name"]: d for d in self.interpreter.get_output_details()}

    def _resize(self, name: str, shape: Sequence[int]) -> None:
        if name not in self._inputs:
            raise ExecutionError(f"the .tflite model has no input {name!r}",
                                 hint=f"inputs: {sorted(self._inputs)}")
        self.interpreter.resize_tensor_input(self._inputs[name]["index"],
                                             [int(s) for s in shape])

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def input_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self._inputs[name]["shape"])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise ExecutionError(f"LiteRT model is missing input(s) {missing}",
                                 hint=f"it expects {self.input_names}, got {sorted(inputs)}")
        changed = [n for n in self._inputs if tuple(inputs[n].shape) != self.input_shape(n)]
        if changed:  # a new input shape: resize and reallocate (rare; normally allocated once)
            for n in changed:
                self._resize(n, inputs[n].shape)
            self.interpreter.allocate_tensors()
            self._refresh()
        for name, detail in self._inputs.items():
            value = np.ascontiguousarray(inputs[name], dtype=detail["dtype"])
            self.interpreter.set_tensor(detail["index"], value)
        try:
            self.interpreter.invoke()
        except RuntimeError as exc:
            raise ExecutionError(f"LiteRT failed: {exc}") from exc
        return {name: self.interpreter.get_tensor(d["index"]).copy()
                for name, d in self._outputs.items()}

    def close(self) -> None:
        self.interpreter = None

    def __enter__(self) -> LiteRTModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiteRTSegment:
    """A cut .tflite segment as a pipeline engine: IR-layout (NCHW) tensors in and out."""

    name = LITERT
    capabilities = frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY})

    def __init__(self, model: bytes | str | Path, *, cpus: Sequence[int] | None = None,
                 num_threads: int | None = None) -> None:
        self.model = LiteRTModel(model, cpus=cpus, num_threads=num_threads)
        self.input_names = self.model.input_names
        self.output_names = self.model.output_names

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {n: ir_to_tflite(inputs[n]) for n in self.input_names if n in inputs}
        return {n: tflite_to_ir(y) for n, y in self.model.run(feeds).items()}

    def close(self) -> None:
        self.model.close()


def _open(model: bytes | str, options: EngineOptions) -> LiteRTSegment:
    return LiteRTSegment(model, cpus=list(options.cpus) if options.cpus else None,
                         num_threads=options.threads)


SPEC = register_engine(EngineSpec(
    LITERT, frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY}), lambda: LiteRTSegment,
    backends=("ai_edge_litert.interpreter", "tflite_runtime.interpreter"), formats=(TFLITE,),
    segment_format=TFLITE, precisions=("fp32", "fp16", "int8"), runs_opaque=True, layout=NHWC,
    requires=("ai-edge-litert",), open=_open))
