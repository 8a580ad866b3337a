"""A pinned multi-process pipeline executor: stages as processes, tensors through shared memory.

Pipe-it (Wang et al., 2019) splits a CNN into contiguous stages, each on its own core cluster; this
module executes such a split. Each stage replica is a process pinned to its cores with BLAS/OpenMP
threads bounded to them (stage_worker.py); tensors cross stages through bounded shared-memory rings
(shm.py), so a slow stage blocks its producers (backpressure) and nothing is pickled per frame.
Replicas take frames round-robin by sequence index and the ring grid keeps outputs in input order
(see stage_worker.py for why no reorder buffer is needed).

Processes start from a forkserver that preloaded numpy and the runtime, or by ``spawn`` where that
is not safe (worker_start.py), never by ``fork`` of the parent.

Robustness: every blocking wait polls with a short timeout and checks the children (their pipes for
error records, their exit codes for crashes and signals), so a stage that raises or is killed
becomes a :class:`StageError` naming it within a poll period, and :meth:`Pipeline.close` (run on
every exit path by ``with``) terminates and joins every child and unlinks every segment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection
from typing import Any

import numpy as np

from . import shm
from .affinity import available_cpus
from .errors import ExecutionError, InputError, StageError
from .metrics import (
    DEFAULT_CAPACITY,
    PipelineResult,
    RunRecord,
    stage_metrics,
)
from .pipeline_spec import (
    KEEP,
    SPEC_PIPE_BYTES,
    Frames,
    StageSpec,
    TensorSpec,
    check_inputs,
    frame_reader,
    period_of,
    pickle_spec,
    spin_budgets,
    split_cpus,
    tail_of,
    validate_stages,
    write_spec_file,
)
from .sequential import run_sequential
from .stage_worker import stage_main
from .worker_start import default_start_method, start_context

__all__ = ["Pipeline", "PipelineResult", "StageSpec", "TensorSpec", "run_sequential",
           "spin_budgets", "split_cpus"]



@dataclass
class _Replica:
    stage: int
    name: str
    replica: int
    cpus: tuple[int, ...]
    process: Any
    conn: Any
    info: dict | None = None
    stats: deque = field(default_factory=deque)


class Pipeline:
    """Run frames through stages in parallel processes; use as a context manager.

    ``submit``/``get`` (one producer thread, one consumer thread) or ``run`` (feeds from a thread,
    collects in the calling one). At most :attr:`max_in_flight` frames are inside at once.
    ``spin_us`` bounds how long a replica spins on its rings before it sleeps (None: automatic,
    see :func:`spin_budgets`; 0: never), trading an idle core's power for the wake-up latency.
    """

    def __init__(self, stages: Sequence[StageSpec], queue_depth: int = 4,
                 start_method: str | None = None, *, poll_s: float = 0.05,
                 startup_timeout_s: float = 300.0,
                 stats_capacity: int = DEFAULT_CAPACITY,
                 spin_us: float | None = None) -> None:
        self.stages = list(stages)
        start_method = start_method or default_start_method()
        validate_stages(self.stages, queue_depth, start_method)
        self.queue_depth = int(queue_depth)
        self._ctx = start_context(start_method)
        self._poll_s = poll_s
        self._startup_timeout_s = startup_timeout_s
        self._stats_capacity = stats_capacity
        self._spins = spin_budgets(self.stages, spin_us)
        self._grid: list[list[list[shm.Ring]]] = []
        self._replicas: list[_Replica] = []
        self._spec_files: list[str] = []
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._started = self._closed = False
        self._submitted = self._collected = self.peak_in_flight = 0
        self._feeding = False
        self._t_submit: dict[int, float] = {}
        #: When the last stage published the frame :meth:`get` returned last (``time.monotonic``)
        self.done_s = 0.0
        self._reset_run()

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Create the rings, start every replica in parallel, wait until all are built."""
        if self._started:
            return
        self._started = True
        # what dead processes of this owner left (a host measurement killed for memory leaves
        # its rings and spec files under the "anon" tag, which no runner start reclaims)
        shm.reclaim_stale()
        try:
            self._build_rings()
            self._spawn()
            self._await_ready()
        except BaseException:
            self.close()
            raise
        self._drop_spec_files()  # every replica has read its spec

    @property
    def max_in_flight(self) -> int:
        """Upper bound on frames inside the pipeline (every frame holds at least one slot)."""
        return sum(len(row) * len(row[0]) * row[0][0].capacity for row in self._grid)

    @property
    def workers(self) -> int:
        """Replica processes over all stages: frames that keep every one of them busy."""
        return sum(s.replicas for s in self.stages)

    @property
    def period(self) -> int:
        """Frames after which the completions repeat their pattern (:func:`period_of`)."""
        return period_of(self.stages)

    @property
    def tail(self) -> int:
        """Frames to feed behind a timed run (:func:`tail_of`)."""
        return tail_of(self.stages)

    @property
    def replica_info(self) -> list[dict]:
        """What each replica reported at start-up: stage, pid and the cpus it actually got."""
        return [{"stage": r.name, **(r.info or {})} for r in self._replicas]

    @property
    def in_flight(self) -> int:
        """Frames submitted and not yet collected."""
        return self._submitted - self._collected

    def resource_names(self) -> list[str]:
        """The /dev/shm entries the pipeline holds (for leak checks and operators)."""
        return [n for grid in self._grid for row in grid for ring in row
                for n in ring.resource_names()] + [os.path.basename(p) for p in self._spec_files]

    def _build_rings(self) -> None:
        counts = [s.replicas for s in self.stages]
        for b in range(len(self.stages) + 1):
            producers = 1 if b == 0 else counts[b - 1]
            consumers = 1 if b == len(self.stages) else counts[b]
            specs = self.stages[b].inputs if b < len(self.stages) else self.stages[-1].outputs
            # a batching consumer finds a whole batch waiting in each of its rings
            depth = max(self.queue_depth, self.stages[b].batch if b < len(self.stages) else 1)
            self._grid.append([[shm.Ring.create(self._ctx, depth, specs)
                                for _ in range(consumers)] for _ in range(producers)])

    def _spawn(self) -> None:
        spins = iter(self._spins)
        for s, spec in enumerate(self.stages):
            blob: bytes | str = pickle_spec(spec)
            if len(blob) > SPEC_PIPE_BYTES:
                blob = write_spec_file(blob)
                self._spec_files.append(blob)
            for j, cpus in enumerate(split_cpus(spec.cpus, spec.replicas)):
                ins = [row[j].handle() for row in self._grid[s]]
                outs = [ring.handle() for ring in self._grid[s + 1][j]]
                # an unpinned replica gets this process's cores and environment, as a spawned
                # one inherits them: a forked one would get the forkserver's, set when it started
                cpus = cpus or tuple(available_cpus())
                mine, theirs = self._ctx.Pipe(duplex=True)
                proc = self._ctx.Process(
                    target=stage_main, name=f"edgedeploy-{spec.name}-{j}", daemon=True,
                    args=(blob, j, spec.replicas, cpus, len(cpus), ins, outs, theirs,
                          self._stats_capacity, next(spins), dict(os.environ)))
                try:
                    proc.start()
                except BaseException:
                    mine.close()
                    raise
                finally:
                    theirs.close()
                self._replicas.append(_Replica(s, spec.name, j, cpus, proc, mine))

    def _await_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while any(r.info is None for r in self._replicas):
            if time.monotonic() > deadline:
                late = next(r for r in self._replicas if r.info is None)
                self._fail(StageError(late.name, f"not ready after {self._startup_timeout_s} s"))
            conns = [r.conn for r in self._replicas] + [r.process.sentinel for r in self._replicas]
            connection.wait(conns, self._poll_s)
            self._check_health()

    def close(self) -> None:
        """Stop every child (gracefully when healthy), join them, unlink every segment."""
        if self._closed:
            return
        self._closed = True
        # EOS can only pass an empty pipeline: with frames left uncollected, stop at once
        graceful = (self._started and self._failure is None and not self._stop.is_set()
                    and self._submitted == self._collected)
        self._stop.set()
        try:
            if graceful and self._replicas:
                self._shutdown_gracefully(deadline=time.monotonic() + 2.0)
        finally:
            self._terminate_all()
            self._drop_spec_files()
            for row in (r for grid in self._grid for r in grid):
                for ring in row:
                    ring.close()
            self._grid = []

    def _shutdown_gracefully(self, deadline: float) -> None:
        with contextlib.suppress(ExecutionError):
            self._send_control(shm.EOS, deadline=deadline)
        while time.monotonic() < deadline:
            for ring in self._grid[-1]:
                slot = ring[0].take(0)
                if slot is not None:
                    ring[0].release(slot)
            if all(r.process.exitcode is not None for r in self._replicas):
                return
            time.sleep(0.005)

    def _drop_spec_files(self) -> None:
        for path in self._spec_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._spec_files = []

    def _terminate_all(self) -> None:
        for r in self._replicas:
            with contextlib.suppress(OSError):
                r.conn.close()  # children see EOF on their next poll and leave
        for r in self._replicas:
            if r.process.is_alive():
                r.process.terminate()
        for r in self._replicas:
            r.process.join(1.0)
            if r.process.is_alive():
                r.process.kill()
                r.process.join()

    # -- health -------------------------------------------------------------------------------
    def _fail(self, err: BaseException) -> None:
        self._failure = err
        self._stop.set()
        raise err

    def _check_health(self) -> None:
        """Raise a StageError if any replica reported an error, crashed or was killed."""
        if self._failure is not None:
            raise self._failure
        for r in self._replicas:
            code = r.process.exitcode  # read before draining: a dying child's last words come first
            self._drain(r)
            if code is not None:
                self._fail(StageError(r.name, _describe_exit(r, code),
                                      hint="a stage process must not exit before end of stream"))

    def _drain(self, r: _Replica) -> None:
        while True:
            try:
                if not r.conn.poll(0):
                    return
                kind, payload = r.conn.recv()
            except (EOFError, OSError):
                return
            if kind == "ready":
                r.info = payload
            elif kind == "stats":
                r.stats.append(payload)
            elif kind == "error":
                err = StageError(r.name, f"{payload['type']}: {payload['message']} "
                                         f"({payload['context']}, replica {r.replica})",
                                 hint="the stage's traceback is in StageError.child_traceback")
                err.child_traceback = payload["traceback"]  # type: ignore[attr-defined]
                err.exc_type = payload["type"]  # type: ignore[attr-defined]
                self._fail(err)

    def _alive_or_raise(self, check: bool) -> None:
        if self._stop.is_set():
            raise self._failure or ExecutionError("the pipeline is closed or stopping")
        if check:
            self._check_health()

    # -- frames in ----------------------------------------------------------------------------
    def submit(self, seq: int, tensors: Sequence[np.ndarray], *, warmup: bool = False,
               _check: bool = True) -> None:
        """Put one frame in (blocks while the pipeline is full); ``seq`` comes back with it."""
        if not self._started or self._closed:
            raise ExecutionError("submit() needs a started pipeline (use `with Pipeline(...)`)")
        check_inputs(self.stages[0], tensors)
        index = self._submitted
        ring = self._grid[0][0][index % len(self._grid[0][0])]
        while (slot := ring.reserve(self._poll_s)) is None:
            self._alive_or_raise(_check)
        ring.write(slot, tensors)
        self._t_submit[index] = time.perf_counter()
        ring.publish(slot, index, int(seq), shm.DATA | (shm.WARMUP if warmup else 0))
        self._submitted += 1
        self.peak_in_flight = max(self.peak_in_flight, self._submitted - self._collected)

    def _send_control(self, flag: int, deadline: float | None = None, check: bool = False) -> None:
        for ring in self._grid[0][0]:
            while (slot := ring.reserve(self._poll_s)) is None:
                if deadline is not None and time.monotonic() > deadline:
                    raise ExecutionError("could not send a control record in time")
                if deadline is None:
                    self._alive_or_raise(check)
            ring.publish(slot, self._submitted, -1, flag)

    # -- frames out ---------------------------------------------------------------------------
    def get(self, timeout: float | None = None, copy: bool = True,
            sink: Callable[[list[np.ndarray]], object] | None = None
            ) -> tuple[int, list[np.ndarray] | None]:
        """The next result in submission order: ``(seq, outputs)``; raises StageError on failure.
        ``sink`` gets views of the outputs while they are still in the ring (it copies what it
        keeps: one copy fewer for a caller that writes them somewhere anyway); outputs are then
        None, as with ``copy=False``."""
        index = self._collected
        if index >= self._submitted and not self._feeding:
            raise ExecutionError("get() with no frame in flight: submit() one first")
        rings = self._grid[-1]
        ring = rings[index % len(rings)][0]
        end = None if timeout is None else time.monotonic() + timeout
        while (slot := ring.take(self._poll_s)) is None:
            self._check_health()
            if self._feed_error is not None:
                self._fail(self._feed_error)
            if end is not None and time.monotonic() > end:
                raise ExecutionError(f"no result for frame index {index} within {timeout} s")
        got, seq, flags = ring.header(slot)
        self.done_s = ring.published_s(slot)
        if not flags & shm.DATA or got != index:
            self._fail(ExecutionError(f"ring order broken: expected frame {index}, got {got} "
                                      f"(flags {flags})"))
        outs = None
        try:  # a failing sink still frees the slot: the frame counts as collected
            if sink is not None:
                sink(ring.tensors(slot))
            elif copy:
                outs = [np.array(v) for v in ring.tensors(slot)]
        finally:
            now = time.perf_counter()
            self._collected += 1
            ring.release(slot)
            t_sub = self._t_submit.pop(index, now)
            if not flags & shm.WARMUP:
                self._run.add(t_sub, now)
        return seq, outs

    def results(self, n: int | None = None) -> Iterator[tuple[int, list[np.ndarray] | None]]:
        """Yield ``n`` results (default: every frame submitted so far) in submission order."""
        count = self._submitted - self._collected if n is None else n
        for _ in range(count):
            yield self.get()

    def _reset_run(self) -> None:
        self._run = RunRecord(self._stats_capacity, period=self.period)
        self._feed_error: BaseException | None = None

    # -- whole runs ---------------------------------------------------------------------------
    def run(self, frames: Frames, n_frames: int, warmup: int = 0,
            keep_outputs: str = "last", tail: int = 0) -> PipelineResult:
        """Feed ``warmup + n_frames + tail`` frames from a thread, collect here, and summarise
        the ``n_frames``.

        ``frames`` is an iterable of tensor lists or a callable ``index -> tensors``; warm-up
        and tail frames run through every stage but count in no statistic. A tail (see
        :attr:`tail`) keeps the pipeline fed while the counted frames finish: without one the
        last batches complete with nothing queued behind them, and two VGG-16 replicas batching
        four frames read 16 fps for a 10 fps system (seen on a board while developing).
        """
        if keep_outputs not in KEEP:
            raise InputError(f"keep_outputs must be one of {KEEP}, got {keep_outputs!r}")
        if self._submitted != self._collected:
            raise ExecutionError("run() needs an empty pipeline: collect submitted frames first")
        self._reset_run()
        counted = warmup + n_frames
        total = counted + max(0, tail)
        outputs: list[list[np.ndarray]] = []
        with self._feeding_thread(frames, total, warmup, mark=True, counted=counted):
            for k in range(total):
                keep = keep_outputs == "all" or (keep_outputs == "last" and k == counted - 1)
                _, outs = self.get(copy=keep and warmup <= k < counted)
                if outs is not None:
                    outputs.append(outs)
            self._collect_control(shm.MARK)
            stages = self._stage_metrics()
        return self._result(stages, outputs if keep_outputs != "none" else None)

    def stream(self, frames: Frames, n_frames: int) -> np.ndarray:
        """Feed ``n_frames`` frames from a thread and collect them here, recording nothing but
        each frame's completion time (``time.monotonic``), which it returns.

        What a benchmark times from outside: the pipeline kept full, as a streaming application
        feeds it, with no statistics or control records inside the timed window.

        A frame is complete when the last stage publishes it (the ring's stamp), in order: no
        earlier than the frame before it. The time this thread reads it would be its reader's:
        on a busy host a reader held off the cores takes the frames finished meanwhile at once,
        and a window that ends in such a burst reads a rate the stages never ran at.
        """
        if self._submitted != self._collected:
            raise ExecutionError("stream() needs an empty pipeline: collect submitted frames first")
        self._feed_error = None
        # every frame flagged warm-up (kept out of the statistics), no control record after
        done = np.empty(n_frames)
        with self._feeding_thread(frames, n_frames, n_frames, mark=False):
            last = -np.inf
            for k in range(n_frames):
                self.get(copy=False)
                last = done[k] = max(last, self.done_s)
        return done

    @contextlib.contextmanager
    def _feeding_thread(self, frames: Frames, total: int, warmup: int,
                        mark: bool, counted: int | None = None) -> Iterator[None]:
        """A feeder thread submitting ``total`` frames while the body collects them here; those
        before ``warmup`` and from ``counted`` on are flagged warm-up (in no statistic)."""
        feeder = threading.Thread(target=self._feed,
                                  args=(frames, total, warmup, mark,
                                        total if counted is None else counted),
                                  name="edgedeploy-feeder", daemon=True)
        self._feeding = True
        feeder.start()
        try:
            yield
        except BaseException:
            self._stop.set()
            raise
        finally:
            feeder.join()
            self._feeding = False

    def _feed(self, frames: Frames, total: int, warmup: int, mark: bool = True,
              counted: int | None = None) -> None:
        stop = total if counted is None else counted
        try:
            read = frame_reader(frames, total)
            base = self._submitted
            for k in range(total):
                self.submit(base + k, read(k), warmup=not warmup <= k < stop, _check=False)
            if mark:
                self._send_control(shm.MARK)
        except BaseException as exc:  # reported by the collecting thread
            self._feed_error = exc

    def _collect_control(self, flag: int) -> None:
        for row in self._grid[-1]:
            ring = row[0]
            while (slot := ring.take(self._poll_s)) is None:
                self._check_health()
            flags = ring.header(slot)[2]
            ring.release(slot)
            if not flags & flag:
                self._fail(ExecutionError(f"expected control record {flag}, got flags {flags}"))

    def _stage_metrics(self) -> list:
        wall = max(self._run.wall_s, 1e-9)
        snaps: dict[int, list[dict]] = {}
        deadline = time.monotonic() + 10.0
        for r in self._replicas:
            while not r.stats:
                self._check_health()
                if time.monotonic() > deadline:
                    self._fail(StageError(r.name, "sent no statistics"))
                time.sleep(0.001)
            snaps.setdefault(r.stage, []).append(r.stats.popleft())
        out = []
        for s, spec in enumerate(self.stages):
            group = snaps[s]
            def cat(key: str, g: list[dict] = group) -> np.ndarray:
                return np.concatenate([x[key] for x in g])
            out.append(stage_metrics(
                spec.name, spec.cpus, split_cpus(spec.cpus, spec.replicas), cat("service"),
                cat("wait"), sum(x["frames"] for x in group), sum(x["busy_s"] for x in group),
                wall))
        return out

    def _result(self, stages: list, outputs: list | None) -> PipelineResult:
        return self._run.result(stages, outputs)


def _describe_exit(r: _Replica, code: int) -> str:
    who = f"replica {r.replica} (pid {r.process.pid})"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"{who} was killed by signal {signal.Signals(-code).name}"
        return f"{who} was killed by signal {-code}"
    return f"{who} exited unexpectedly with code {code}"


