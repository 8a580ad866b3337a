"""The LiteRT engine: a .tflite model (whole, or a segment cut from one) with ``num_threads``.

:class:`LiteRTModel` speaks the model's own layout (NHWC) and is the reference for TFLite inputs;
:class:`LiteRTSegment` is the pipeline's engine, in the same layout (the spec's ``layout``): the
executor converts a rank-4 tensor at the segment's edge only where a neighbour wants the IR's
(``runtime.layouts``), so a whole-model LiteRT stage fed the model's own frames transposes
nothing. XNNPACK threads follow the stage's cores.

``ai_edge_litert`` is the maintained interpreter; ``tflite_runtime`` is used only where LiteRT is
absent (tflite-runtime 2.14 fails to load under numpy 2).

A stage allowed fp16 (``EngineOptions.fp16``: the plan's precision is fp16 and its cluster computes
fp16) runs :class:`LiteRTHalfModel` instead: LiteRT's CompiledModel API, whose XNNPACK delegate
takes flags the Interpreter's Python API does not, here FORCE_FP16 (float operators computed in
fp16 where XNNPACK has fp16 kernels; tensors at the model's edges stay float32).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
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


def _pinned(cpus: Sequence[int] | None, num_threads: int | None
            ) -> tuple[list[int] | None, int | None]:
    """This process pinned to ``cpus`` (where given), and the thread count: one a core unless
    ``num_threads`` says otherwise."""
    cpus = list(cpus) if cpus is not None else None
    if cpus:
        affinity.pin_process(cpus)
        num_threads = num_threads or len(cpus)
    return cpus, num_threads


class _LiteRTRun:
    """What both LiteRT engines share: named tensors in the model's own layout, inputs resized
    on a new shape; a subclass says how it resizes, reallocates and invokes."""

    name = LITERT
    capabilities = frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY})
    _inputs: dict[str, dict[str, Any]]
    _outputs: dict[str, dict[str, Any]]
    #: Each input's (name, shape, dtype) as allocated (:meth:`_allocated`, after every
    #: ``_reallocate``).
    _specs: list[tuple[str, tuple[int, ...], np.dtype]]

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def input_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self._inputs[name]["shape"])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # The hot path of a model of 10-20 us a call: each input looked at once, against
        # shapes and types read when the tensors were allocated (:meth:`_allocated`).
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise ExecutionError(f"LiteRT model is missing input(s) {missing}",
                                 hint=f"it expects {self.input_names}, got {sorted(inputs)}")
        changed = [n for n, shape, _ in self._specs if inputs[n].shape != shape]
        if changed:  # a new input shape: resize and reallocate (rare; normally allocated once)
            for n in changed:
                self._resize(n, inputs[n].shape)
            self._reallocate()
        feeds = {}
        for name, _, dtype in self._specs:
            x = inputs[name]
            feeds[name] = (x if x.dtype == dtype and x.flags.c_contiguous
                           else np.ascontiguousarray(x, dtype=dtype))
        try:
            return self._invoke(feeds)
        except RuntimeError as exc:
            raise ExecutionError(f"LiteRT failed: {exc}") from exc

    def _allocated(self) -> None:
        """Each input's (name, shape, dtype) as allocated, for :meth:`run`."""
        self._specs = [(name, self.input_shape(name), np.dtype(d["dtype"]))
                       for name, d in self._inputs.items()]

    def run_ordered(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`run` for inputs in :attr:`input_names`' order, outputs in
        :attr:`output_names`' (a stage's hot path where the model is the whole stage)."""
        out = self.run(dict(zip(self._inputs, xs, strict=True)))
        return [out[n] for n in self._outputs]

    def _resize(self, name: str, shape: Sequence[int]) -> None:
        raise NotImplementedError

    def _reallocate(self) -> None:
        raise NotImplementedError

    def _invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiteRTModel(_LiteRTRun):
    """One interpreter over a .tflite model; tensors allocated once at construction."""

    def __init__(self, path: str | Path | bytes, *, num_threads: int | None = None,
                 cpus: Sequence[int] | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        self.cpus, self.num_threads = _pinned(cpus, num_threads)
        num_threads = self.num_threads
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
        self._reallocate()

    def _refresh(self) -> None:
        self._inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self._outputs = {d["name"]: d for d in self.interpreter.get_output_details()}

    def _resize(self, name: str, shape: Sequence[int]) -> None:
        if name not in self._inputs:
            raise ExecutionError(f"the .tflite model has no input {name!r}",
                                 hint=f"inputs: {sorted(self._inputs)}")
        self.interpreter.resize_tensor_input(self._inputs[name]["index"],
                                             [int(s) for s in shape])

    def _reallocate(self) -> None:
        self.interpreter.allocate_tensors()
        self._refresh()
        self._allocated()

    def _invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, detail in self._inputs.items():
            self.interpreter.set_tensor(detail["index"], feeds[name])
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(d["index"])  # a copy already
                for name, d in self._outputs.items()}

    def run_ordered(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`run` for inputs in :attr:`input_names`' order, outputs in
        :attr:`output_names`': the interpreter's own calls and nothing else, as a user's loop
        makes them. Anything the interpreter refuses (a new shape, another element type) goes
        the checked way."""
        it = self.interpreter
        try:
            for d, x in zip(self._inputs.values(), xs, strict=True):
                it.set_tensor(d["index"], x)
            it.invoke()
        except (ValueError, RuntimeError):
            out = self.run(dict(zip(self._inputs, xs, strict=True)))
            return [out[n] for n in self._outputs]
        return [it.get_tensor(d["index"]) for d in self._outputs.values()]

    def close(self) -> None:
        self.interpreter = None


class LiteRTSegment:
    """A cut .tflite segment as a pipeline engine: tensors in the file's own layout (NHWC)."""

    name = LITERT
    capabilities = frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY})

    def __init__(self, model: bytes | str | Path, *, cpus: Sequence[int] | None = None,
                 num_threads: int | None = None, fp16: bool = False) -> None:
        self.model: LiteRTModel | LiteRTHalfModel = (LiteRTHalfModel if fp16 else LiteRTModel)(
            model, cpus=cpus, num_threads=num_threads)
        self.input_names = self.model.input_names
        self.output_names = self.model.output_names
        #: Inputs in :attr:`input_names`' order, outputs in :attr:`output_names`': the
        #: model's own, bound here (one call fewer on a stage's hot path).
        self.run_ordered = self.model.run_ordered

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.model.run({n: inputs[n] for n in self.input_names if n in inputs})

    def close(self) -> None:
        self.model.close()


#: XNNPACK delegate flags (``xnnpack_delegate.h``): its signed and unsigned int8 kernels (the
#: delegate's defaults), and FORCE_FP16.
XNNPACK_QS8, XNNPACK_QU8, XNNPACK_FORCE_FP16 = 1, 2, 4
HALF_FLAGS = XNNPACK_QS8 | XNNPACK_QU8 | XNNPACK_FORCE_FP16


class LiteRTHalfModel(_LiteRTRun):
    """A .tflite model under LiteRT's CompiledModel with XNNPACK computing in fp16; the same
    interface as :class:`LiteRTModel` (its own layout, float32 at the edges).

    XNNPACK has fp16 kernels only for CPUs that compute fp16 (not seen failing here: this host's
    cores do), so the planner allows fp16 only on clusters that do (``Cluster.fp16_arithmetic``)."""

    def __init__(self, path: str | Path | bytes, *, num_threads: int | None = None,
                 cpus: Sequence[int] | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        self.cpus, self.num_threads = _pinned(cpus, num_threads)
        num_threads = self.num_threads
        what = "the model bytes" if isinstance(path, bytes) else str(path)
        with _native_log() as said:  # its imports and compilation log a dozen INFO lines
            try:
                from ai_edge_litert.compiled_model import CompiledModel
                from ai_edge_litert.cpu_options import CpuOptions
                from ai_edge_litert.options import Options
            except ImportError as exc:
                raise ExecutionError(
                    "fp16 stages need LiteRT's CompiledModel API (the Python package "
                    "'ai-edge-litert' 2.x), which is not installed here",
                    hint="install it on this machine: python -m pip install ai-edge-litert"
                ) from exc
            options = Options(cpu_options=CpuOptions(num_threads=num_threads or 0,
                                                     xnnpack_flags=HALF_FLAGS))
            try:
                self.model = (CompiledModel.from_buffer(path, options=options)
                              if isinstance(path, bytes)
                              else CompiledModel.from_file(str(path), options=options))
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"LiteRT cannot compile {what} for fp16: {exc}"
                                 f"{_last_error(said())}") from exc
        self._signature = next(iter(self.model.get_signature_list()))
        self._input_index = {n: i for i, n in enumerate(self._details(inputs=True))}
        for name, shape in (input_shapes or {}).items():
            self._resize(name, shape)
        self._reallocate()

    def _details(self, *, inputs: bool) -> dict[str, dict[str, Any]]:
        """The signature's inputs (or outputs) in its order, by tensor name: a signature names
        them apart ('input_1' for the tensor 'serving_default_input_1:0'), and the Interpreter,
        the importer and the stages go by tensor names."""
        get = (self.model.get_input_tensor_details if inputs
               else self.model.get_output_tensor_details)
        return {d["name"]: d for d in get(self._signature).values()}

    def _reallocate(self) -> None:
        self._ins = self.model.create_input_buffers(0)
        self._outs = self.model.create_output_buffers(0)
        self._inputs = {n: b.get_tensor_details() for n, b in
                        zip(self._details(inputs=True), self._ins, strict=True)}
        self._outputs = {n: b.get_tensor_details() for n, b in
                         zip(self._details(inputs=False), self._outs, strict=True)}
        self._allocated()

    def _resize(self, name: str, shape: Sequence[int]) -> None:
        if name not in self._input_index:
            raise ExecutionError(f"the .tflite model has no input {name!r}",
                                 hint=f"inputs: {sorted(self._input_index)}")
        try:
            self.model.resize_input_tensor(self._input_index[name], [int(s) for s in shape],
                                           strict=False)
        except RuntimeError as exc:
            raise ExecutionError(f"LiteRT cannot resize input {name!r} to {list(shape)}: "
                                 f"{exc}") from exc

    def _invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for buffer, name in zip(self._ins, self._inputs, strict=True):
            buffer.write(feeds[name])
        self.model.run_by_index(0, self._ins, self._outs)
        return {name: buffer.read(int(np.prod(d["shape"])), np.dtype(d["dtype"]))
                .reshape(d["shape"])
                for buffer, (name, d) in zip(self._outs, self._outputs.items(), strict=True)}

    def close(self) -> None:
        """Release the model and its environment, whose teardown logs as much again."""
        with _native_log():
            self._ins = self._outs = []
            self.model = None
            gc.collect()


_NATIVE_LOG_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_log() -> Iterator[Any]:
    """Native stderr (LiteRT's C++ log: a dozen INFO lines a model) into a file while the
    block runs, so a plan's terminal shows none of it; yields a reader of what was said.
    Python's own stderr is flushed first, so nothing it buffered is lost; one block at a time
    (two threads' redirects interleaved would leave stderr on a closed file)."""
    with _NATIVE_LOG_LOCK, tempfile.TemporaryFile(mode="w+b") as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            yield lambda: (log.seek(0), log.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _last_error(text: str) -> str:
    """LiteRT's last ERROR line, as a sentence to append (empty when it said none)."""
    errors = [line.strip() for line in text.splitlines() if "ERROR" in line]
    return f" ({errors[-1]})" if errors else ""


def _open(model: bytes | str, options: EngineOptions) -> LiteRTSegment:
    return LiteRTSegment(model, cpus=list(options.cpus) if options.cpus else None,
                         num_threads=options.threads, fp16=options.fp16)


SPEC = register_engine(EngineSpec(
    LITERT, frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY}), lambda: LiteRTSegment,
    backends=("ai_edge_litert.interpreter", "tflite_runtime.interpreter"), formats=(TFLITE,),
    segment_format=TFLITE, precisions=("fp32", "fp16", "int8"), runs_opaque=True, layout=NHWC,
    requires=("ai-edge-litert",), open=_open))
