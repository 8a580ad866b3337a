"""Replicas of a plan's only stage run as threads of the process that feeds it (and a stage
that micro-batches, one replica or several).

One-core replicas in worker processes pay the worker hop on every frame: the frame crosses
shared memory twice and wakes two processes. The engines (onnxruntime, LiteRT) release Python's
lock while they compute, so threads of the feeding process run their sessions as much in
parallel as processes do, with no worker process to start, watch or stop: on the 2-core host
eight small models ran 0.95-1.02x as fast as threads as in processes under the bench's
estimator (8 alternated rounds each), the same within the noise. And it is how a user
replicates a session by hand, a thread per core and a session each, which is what the bench
compares a plan with: a plan that is those replicas runs the baseline's own configuration.

Each replica is a thread pinned to its share of the stage's cores (``sched_setaffinity`` of the
calling thread), where its own engine session is built, so the session sizes its pool by them.
Frames go to the replicas in turn and come back in submission order; a stage of ``batch`` > 1
runs up to that many of its frames already waiting as one call, as a worker process does
(micro-batching: a lone frame runs alone). It keeps the
:class:`~edgedeploy.runtime.pipeline.Pipeline` interface (``submit``/``get``, ``run``,
``stream``, the statistics) that the runner, the service feed and the benchmarks use.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .affinity import limit_blas_threads
from .errors import ExecutionError, InputError, StageError
from .metrics import DEFAULT_CAPACITY, PipelineResult, RunRecord, SampleBuffer, stage_metrics
from .pipeline_spec import (
    KEEP,
    Frames,
    StageSpec,
    check_inputs,
    frame_reader,
    period_of,
    split_cpus,
    tail_of,
)

#: Seconds a replica may take to build its session before start-up fails.
STARTUP_TIMEOUT_S = 300.0

#: What a replica hands back for one frame: index, seq, outputs, time submitted, warm-up flag,
#: time completed, and the error the frame raised (outputs are then None).
_Done = tuple[int, int, "list[np.ndarray] | None", float, bool, float, "BaseException | None"]


@dataclass
class _Replica:
    cpus: tuple[int, ...]
    inbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    done: deque = field(default_factory=deque)
    service: SampleBuffer = field(default_factory=SampleBuffer)
    wait: SampleBuffer = field(default_factory=SampleBuffer)
    busy_s: float = 0.0
    frames: int = 0
    t_idle: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    fn: Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]] | None = None
    thread: threading.Thread | None = None


class InlineReplicas:
    """A one-stage plan's replicas as pinned threads of this process (a context manager)."""

    def __init__(self, stages: Sequence[StageSpec], *,
                 stats_capacity: int = DEFAULT_CAPACITY) -> None:
        if len(stages) != 1 or stages[0].replicas * stages[0].batch < 2:
            raise InputError("inline replicas are the plan's only stage, with two replicas or "
                             "more, or frames micro-batched")
        self.stages = list(stages)
        self.spec = stages[0]
        self._capacity = stats_capacity
        self._replicas = [_Replica(cpus) for cpus in split_cpus(self.spec.cpus,
                                                                 self.spec.replicas)]
        self._cond = threading.Condition()
        self._started = self._closed = False
        self._failure: BaseException | None = None
        self._submitted = self._collected = self.peak_in_flight = 0
        self._reset_run()

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> InlineReplicas:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start every replica's thread and wait until each has built its session."""
        if self._started:
            return
        self._started = True
        threads = max(len(r.cpus) for r in self._replicas)
        ready = threading.Barrier(len(self._replicas) + 1)
        try:
            with limit_blas_threads(threads):
                for k, r in enumerate(self._replicas):
                    r.thread = threading.Thread(target=self._serve, args=(k, r, ready),
                                                name=f"edgedeploy-replica{k}", daemon=True)
                    r.thread.start()
                ready.wait(STARTUP_TIMEOUT_S)
        except threading.BrokenBarrierError:
            self.close()
            raise StageError(self.spec.name, "a replica did not start within "
                             f"{STARTUP_TIMEOUT_S:.0f} s") from None
        if self._failure is not None:
            self.close()
            raise self._failure

    def _serve(self, k: int, r: _Replica, ready: threading.Barrier) -> None:
        """A replica's thread: pin, build the session, then run frames until told to stop."""
        if r.cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, r.cpus)  # the calling thread only
        try:
            r.fn = self.spec.factory(*self.spec.factory_args)
        except Exception as exc:
            self._failure = StageError(self.spec.name, f"replica {k}: factory failed at "
                                       f"start-up: {type(exc).__name__}: {exc}")
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        r.info = {"pid": os.getpid(), "replica": k, "thread": threading.get_native_id(),
                  "spin_us": 0.0, "cpus": cpus, "inline": True}
        try:
            ready.wait()
        except threading.BrokenBarrierError:  # start-up gave up on a slower replica
            return
        if r.fn is None:
            return
        stop = False
        while not stop:
            items = [r.inbox.get()]
            while items[-1] is not None and len(items) < self.spec.batch:
                try:  # only frames already waiting: a lone frame runs alone
                    items.append(r.inbox.get_nowait())
                except queue.Empty:
                    break
            if items[-1] is None:
                stop = True
                items.pop()
            if items:
                self._run_frames(r, r.fn, items)

    def _run_frames(self, r: _Replica, fn: Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]],
                    items: list[tuple]) -> None:
        """One engine call over ``items`` (several: along the leading axis, micro-batching)."""
        t0 = time.perf_counter()
        results: list[list[np.ndarray] | None] = [None] * len(items)
        error: BaseException | None = None
        try:
            if len(items) == 1:
                ys = fn(items[0][2])
            else:
                ys = fn([np.concatenate(parts, axis=0)
                           for parts in zip(*(it[2] for it in items), strict=True)])
            ys = [np.array(y) for y in ys]  # an engine may reuse its buffers
            if len(items) > 1 and any(y.shape[:1] != (len(items),) for y in ys):
                raise ValueError(f"a batch of {len(items)} frames gave outputs of shapes "
                                 f"{[y.shape for y in ys]}: the batch must lead")
            results = [ys] if len(items) == 1 else [[y[j:j + 1] for y in ys]
                                                    for j in range(len(items))]
        except Exception as exc:
            error = StageError(self.spec.name, f"{type(exc).__name__}: {exc}")
        t1 = time.perf_counter()
        with self._cond:
            for (index, seq, _, t_sub, warm), outs in zip(items, results, strict=True):
                if not warm:
                    r.service.add((t1 - t0) / len(items))
                    if r.t_idle:
                        r.wait.add(t0 - r.t_idle)
                    r.frames += 1
                    r.busy_s += (t1 - t0) / len(items)
                r.done.append((index, seq, outs, t_sub, warm, t1, error))
            r.t_idle = t1
            self._cond.notify_all()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for r in self._replicas:
            r.inbox.put(None)
        for r in self._replicas:
            if r.thread is not None and r.thread is not threading.current_thread():
                r.thread.join(timeout=10.0)
            fn, r.fn = r.fn, None
            close = getattr(fn, "close", None)
            if callable(close):
                close()
        with self._cond:
            self._cond.notify_all()

    @property
    def max_in_flight(self) -> int:
        """Two whole batches a replica (one it runs, one waiting), as a worker's rings hold
        behind it: :func:`tail_of`."""
        return tail_of(self.stages)

    @property
    def workers(self) -> int:
        return len(self._replicas)

    @property
    def period(self) -> int:
        return period_of(self.stages)  # frames go to the replicas in turn

    @property
    def tail(self) -> int:
        return tail_of(self.stages)  # every replica kept busy behind a timed window

    @property
    def replica_info(self) -> list[dict]:
        return [{"stage": self.spec.name, **r.info} for r in self._replicas]

    @property
    def in_flight(self) -> int:
        return self._submitted - self._collected

    def resource_names(self) -> list[str]:
        return []  # no shared memory: nothing to leak

    # -- frames -------------------------------------------------------------------------------
    def _usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if not self._started or self._closed:
            raise ExecutionError("the inline replicas are not started or are closed")

    def submit(self, seq: int, tensors: Sequence[np.ndarray], *, warmup: bool = False,
               _check: bool = True) -> None:
        """Hand one frame to the next replica (blocks while :attr:`max_in_flight` frames are
        inside). The frame is copied: the caller may reuse its buffers at once."""
        self._usable()
        check_inputs(self.spec, tensors)
        with self._cond:
            while self._submitted - self._collected >= self.max_in_flight:
                self._cond.wait(0.05)
                self._usable()
            index = self._submitted
            self._submitted += 1
            self.peak_in_flight = max(self.peak_in_flight, self._submitted - self._collected)
        frame = [np.array(t) for t in tensors]
        self._replicas[index % len(self._replicas)].inbox.put(
            (index, int(seq), frame, time.perf_counter(), warmup))

    def _take(self, timeout: float | None) -> _Done:
        """The next frame in submission order, once its replica has run it (one collecting
        thread: the frame it waits for is the next one submitted)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            index = self._collected
            r = self._replicas[index % len(self._replicas)]
            while not r.done:  # a collecting thread may ask before the feeding one submits
                self._usable()
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise ExecutionError(f"no result for frame index {index} within {timeout} s")
                self._cond.wait(0.05 if left is None else min(left, 0.05))
            done = r.done.popleft()
            self._collected += 1
            self._cond.notify_all()
        if done[-1] is not None:
            self._failure = done[-1]
            raise done[-1]
        return done

    def get(self, timeout: float | None = None, copy: bool = True,
            sink: Callable[[list[np.ndarray]], object] | None = None
            ) -> tuple[int, list[np.ndarray] | None]:
        """The next result in submission order: ``(seq, outputs)`` (see ``Pipeline.get``)."""
        _, seq, outs, t_sub, warm, _, _ = self._take(timeout)
        if not warm:
            self._run.add(t_sub, time.perf_counter())
        if sink is not None:
            sink(outs or [])
            return seq, None
        return seq, outs if copy else None

    def _reset_run(self) -> None:
        self._run = RunRecord(self._capacity, period=self.period)
        with self._cond:
            for r in self._replicas:
                r.service, r.wait = SampleBuffer(self._capacity), SampleBuffer(self._capacity)
                r.busy_s, r.frames, r.t_idle = 0.0, 0, 0.0

    def _feed_ahead(self, read: Callable[[int], Any], sent: int, taken: int, total: int,
                    warm: Callable[[int], bool]) -> int:
        """Submit frames up to :attr:`max_in_flight` ahead of the ``taken`` ones collected."""
        while sent < total and sent - taken < self.max_in_flight:
            self.submit(sent, read(sent), warmup=warm(sent))
            sent += 1
        return sent

    def run(self, frames: Frames, n_frames: int, warmup: int = 0,
            keep_outputs: str = "last", tail: int = 0) -> PipelineResult:
        """Run ``warmup + n_frames + tail`` frames, the replicas kept busy, and summarise the
        ``n_frames`` (warm-up and tail frames count in no statistic)."""
        if keep_outputs not in KEEP:
            raise InputError(f"keep_outputs must be one of {KEEP}, got {keep_outputs!r}")
        if self.in_flight:
            raise ExecutionError("run() needs an empty pipeline: collect submitted frames first")
        self._reset_run()
        counted = warmup + n_frames
        total = counted + max(0, tail)
        read = frame_reader(frames, total)
        outputs: list[list[np.ndarray]] = []
        sent = 0
        for k in range(total):
            sent = self._feed_ahead(read, sent, k, total, lambda i: not warmup <= i < counted)
            keep = keep_outputs == "all" or (keep_outputs == "last" and k == counted - 1)
            _, outs = self.get(copy=keep and warmup <= k < counted)
            if outs is not None:
                outputs.append(outs)
        return self._result(outputs if keep_outputs != "none" else None)

    def stream(self, frames: Frames, n_frames: int) -> np.ndarray:
        """Run ``n_frames`` frames, the replicas kept busy, recording nothing but each one's
        completion time (when its replica finished it, no earlier than the frame before)."""
        if self.in_flight:
            raise ExecutionError("stream() needs an empty pipeline: collect submitted frames first")
        done = np.empty(n_frames)
        read = frame_reader(frames, n_frames)
        last = -np.inf
        sent = 0
        for k in range(n_frames):
            sent = self._feed_ahead(read, sent, k, n_frames, lambda i: True)
            last = done[k] = max(last, self._take(None)[5])
        return done

    def _result(self, outputs: list | None) -> PipelineResult:
        rs = self._replicas
        stage = stage_metrics(self.spec.name, self.spec.cpus, [r.cpus for r in rs],
                              np.concatenate([r.service.values() for r in rs]),
                              np.concatenate([r.wait.values() for r in rs]),
                              sum(r.frames for r in rs), sum(r.busy_s for r in rs),
                              max(self._run.wall_s, 1e-9))
        return self._run.result([stage], outputs, mode="inline")


__all__ = ["InlineReplicas"]
