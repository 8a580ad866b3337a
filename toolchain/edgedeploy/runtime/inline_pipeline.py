"""A one-stage, one-replica plan run in the process that feeds it: no worker process, no ring.

A plan that is the whole model in one threaded engine session gains nothing from a worker
process and pays for it: every frame crosses shared memory twice and wakes two processes, and
the feeding process competes with the engine's threads for the cores. For a model of tens of
microseconds a frame the hop costs more than the model (a streaming wake-word model ran at half
the rate of LiteRT in the caller's process). An *inline* stage runs where the stock runtime
runs: in the caller's process, in the thread that submits the frame. It keeps the
:class:`~edgedeploy.runtime.pipeline.Pipeline` interface the runner, the service feed and the
benchmarks use (``submit``/``get``, ``run``, ``stream``, the statistics), so nothing above it
changes. The caller's process must already run on the stage's cores: the stage is inline only
when they are every core it may use, so nothing is pinned here.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .affinity import limit_blas_threads
from .errors import ExecutionError, InputError, StageError
from .metrics import (
    DEFAULT_CAPACITY,
    PipelineResult,
    RunRecord,
    SampleBuffer,
    stage_metrics,
)
from .pipeline_spec import KEEP, Frames, StageSpec, check_inputs, frame_reader


class InlinePipeline:
    """One stage run in the calling thread; the :class:`Pipeline` interface (a context manager).

    ``submit`` runs the frame at once and keeps its outputs (copied: an engine may reuse its
    buffers) until ``get`` hands them out, in order. ``run`` and ``stream`` run frames one after
    another in the calling thread, as a user's own loop over the stock runtime does.
    """

    def __init__(self, stages: Sequence[StageSpec], *,
                 stats_capacity: int = DEFAULT_CAPACITY) -> None:
        if len(stages) != 1 or stages[0].replicas != 1 or stages[0].batch != 1:
            raise InputError("an inline stage run in the calling thread is the plan's only "
                             "stage, with one replica and one frame per call (open_pipeline "
                             "runs replicas and micro-batches inline in threads)")
        self.stages = list(stages)
        self.spec = stages[0]
        self._capacity = stats_capacity
        self._fn: Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]] | None = None
        self._done: deque[tuple[int, list[np.ndarray], float, bool]] = deque()
        self._cond = threading.Condition()
        self._lock = threading.Lock()  # one frame in the engine at a time
        self._started = self._closed = False
        self._submitted = self._collected = self.peak_in_flight = 0
        self._info: dict[str, Any] = {}
        self._reset_run()

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> InlinePipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Build the stage here (its factory warms it up, as a worker's does)."""
        if self._started:
            return
        self._started = True
        threads = len(self.spec.cpus) or 1
        try:
            with limit_blas_threads(threads):
                self._fn = self.spec.factory(*self.spec.factory_args)
        except Exception as exc:
            raise StageError(self.spec.name, f"factory failed at start-up: "
                             f"{type(exc).__name__}: {exc}") from exc
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self._info = {"pid": os.getpid(), "replica": 0, "spin_us": 0.0, "cpus": cpus,
                      "inline": True}

    def close(self) -> None:
        self._closed = True
        fn, self._fn = self._fn, None
        close = getattr(fn, "close", None)
        if callable(close):
            close()
        with self._cond:
            self._cond.notify_all()

    @property
    def max_in_flight(self) -> int:
        return 1

    @property
    def workers(self) -> int:
        return 1

    @property
    def period(self) -> int:
        return 1  # one frame at a time, in the caller's thread

    @property
    def tail(self) -> int:
        return 0  # nothing is in flight behind a frame: nothing can drain

    @property
    def replica_info(self) -> list[dict]:
        return [{"stage": self.spec.name, **self._info}]

    @property
    def in_flight(self) -> int:
        return self._submitted - self._collected

    def resource_names(self) -> list[str]:
        return []  # no shared memory: nothing to leak

    # -- frames -------------------------------------------------------------------------------
    def _stage(self) -> Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]:
        if self._fn is None or self._closed:
            raise ExecutionError("the inline stage is not started or is closed")
        return self._fn

    def _call(self, tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
        fn = self._stage()
        t0 = time.perf_counter()
        try:
            outs = [np.array(o) for o in fn(tensors)]
        except Exception as exc:
            raise StageError(self.spec.name, f"{type(exc).__name__}: {exc}") from exc
        t1 = time.perf_counter()
        self._service.add(t1 - t0)
        if self._t_idle:
            self._wait.add(t0 - self._t_idle)
        self._t_idle = t1
        self._busy_s += t1 - t0
        self._stage_frames += 1
        return outs

    def submit(self, seq: int, tensors: Sequence[np.ndarray], *, warmup: bool = False,
               _check: bool = True) -> None:
        """Run one frame now; its outputs wait for :meth:`get`."""
        check_inputs(self.spec, tensors)
        t_sub = time.perf_counter()
        with self._lock:
            outs = self._call(tensors)
        with self._cond:
            self._done.append((int(seq), outs, t_sub, warmup))
            self._submitted += 1
            self.peak_in_flight = max(self.peak_in_flight, self._submitted - self._collected)
            self._cond.notify_all()

    def get(self, timeout: float | None = None, copy: bool = True,
            sink: Callable[[list[np.ndarray]], object] | None = None
            ) -> tuple[int, list[np.ndarray] | None]:
        """The next result in submission order: ``(seq, outputs)`` (see ``Pipeline.get``)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._done:
                if self._closed:
                    raise ExecutionError("the inline stage is closed")
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise ExecutionError(f"no result for frame index {self._collected} "
                                         f"within {timeout} s")
                self._cond.wait(0.05 if left is None else min(left, 0.05))
            seq, outs, t_sub, warm = self._done.popleft()
        now = time.perf_counter()
        self._collected += 1
        if not warm:
            self._run.add(t_sub, now)
        if sink is not None:
            sink(outs)
            return seq, None
        return seq, outs if copy else None

    def _reset_run(self) -> None:
        self._run = RunRecord(self._capacity)
        self._service = SampleBuffer(self._capacity)
        self._wait = SampleBuffer(self._capacity)
        self._busy_s = 0.0
        self._stage_frames = 0
        self._t_idle = 0.0

    def run(self, frames: Frames, n_frames: int, warmup: int = 0,
            keep_outputs: str = "last", tail: int = 0) -> PipelineResult:
        """Run ``warmup + n_frames`` frames one after another and summarise them (``tail``, as
        ``Pipeline.run`` takes it, is not run: one frame at a time, nothing can drain)."""
        if keep_outputs not in KEEP:
            raise InputError(f"keep_outputs must be one of {KEEP}, got {keep_outputs!r}")
        if self.in_flight:
            raise ExecutionError("run() needs an empty pipeline: collect submitted frames first")
        outputs: list[list[np.ndarray]] = []
        total = warmup + n_frames
        read = frame_reader(frames, total)
        for k in range(total):
            if k == warmup:
                self._reset_run()  # warm-up frames count in no statistic
            self.submit(k, read(k), warmup=k < warmup)
            _, outs = self.get()
            keep = keep_outputs == "all" or (keep_outputs == "last" and k == total - 1)
            if keep and k >= warmup and outs is not None:
                outputs.append(outs)
        return self._result(outputs if keep_outputs != "none" else None)

    def stream(self, frames: Frames, n_frames: int) -> np.ndarray:
        """Run ``n_frames`` frames one after another, recording nothing but each one's
        completion time (as ``Pipeline.stream``: no statistics, no copies, in the timed window;
        for a model of 15 us a frame they cost 7 %)."""
        fn = self._stage()
        done = np.empty(n_frames)
        read = frame_reader(frames, n_frames)
        clock = time.perf_counter
        with self._lock:
            for k in range(n_frames):
                tensors = read(k)  # frames that run out are the caller's error, not the stage's
                try:
                    fn(tensors)
                except Exception as exc:
                    raise StageError(self.spec.name, f"{type(exc).__name__}: {exc}") from exc
                done[k] = clock()
        return done

    def _result(self, outputs: list | None) -> PipelineResult:
        stage = stage_metrics(self.spec.name, self.spec.cpus, [self.spec.cpus],
                              self._service.values(), self._wait.values(), self._stage_frames,
                              self._busy_s, max(self._run.wall_s, 1e-9))
        return self._run.result([stage], outputs, mode="inline")


def open_pipeline(stages: Sequence[StageSpec], **options: Any) -> Any:
    """The executor for ``stages``: inline when the plan's only stage says so (its replicas, or
    its micro-batches, in threads: :class:`~edgedeploy.runtime.inline_replicas.InlineReplicas`),
    else the multi-process :class:`~edgedeploy.runtime.pipeline.Pipeline` (``options`` go to
    it)."""
    if len(stages) == 1 and stages[0].inline and stages[0].replicas * stages[0].batch > 1:
        from .inline_replicas import InlineReplicas

        return InlineReplicas(stages)
    if len(stages) == 1 and stages[0].inline:
        return InlinePipeline(stages)
    from .pipeline import Pipeline

    return Pipeline(stages, **options)


__all__ = ["InlinePipeline", "open_pipeline"]
