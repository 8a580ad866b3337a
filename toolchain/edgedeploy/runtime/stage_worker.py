"""The body of one pipeline stage replica: runs in its own process (see pipeline.py).

This module imports nothing heavy at import time on purpose: a spawned child unpickles its target
(``stage_main``) before it runs, and numpy/BLAS must only load *after* the thread-count variables
are set and the process is pinned, so that BLAS pools are sized and placed on the stage's cores.
The stage spec therefore arrives as pickled bytes and is unpickled after pinning. A child forked
by the preloaded forkserver (worker_start.py) holds numpy already, with a one-thread BLAS pool
that ``limit_blas_threads`` widens after pinning, so the new threads start on the stage's cores.

Routing (why the order is trivial): frame ``k`` goes to replica ``k % R`` of every stage with
``R`` replicas. Between a stage with ``P`` replicas and one with ``C`` replicas there is one SPSC
ring per (producer i, consumer j) pair, carrying exactly the frames with ``k % P == i`` and
``k % C == j`` in increasing order. Consumer ``j`` reads its frames ``j, j + C, ...`` in order,
frame ``k`` from ring ``k % P``, so every ring is read in FIFO order and nothing needs reordering.
Control records (end of stream, statistics mark) are broadcast to all rings of a boundary.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import time
import traceback
from typing import Any

from .affinity import limit_blas_threads, set_thread_env

POLL_S = 0.1


class _ParentGone(Exception):
    """The parent closed its end of the control pipe (it exited or was killed)."""


def pin_all_threads(cpus: tuple[int, ...]) -> None:
    """Pin every existing thread of this process (sched_setaffinity(0) only pins the caller)."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that just exited
            os.sched_setaffinity(tid, set(cpus))


def _check_parent(conn: Any) -> None:
    """Raise _ParentGone when the parent's end of the pipe is closed or asks us to stop."""
    try:
        if conn.poll(0):
            msg = conn.recv()
            if msg == "stop":
                raise _ParentGone
    except (EOFError, OSError) as exc:
        raise _ParentGone from exc


def _take(ring: Any, conn: Any) -> int:
    while True:
        slot = ring.take(POLL_S)
        if slot is not None:
            return slot
        _check_parent(conn)


def _reserve(ring: Any, conn: Any) -> int:
    while True:
        slot = ring.reserve(POLL_S)
        if slot is not None:
            return slot
        _check_parent(conn)


def _load_spec(source: bytes | str) -> Any:
    """The stage's spec; a large one comes as a file (pipeline_spec.write_spec_file), whose
    bytes are let go once unpickled (a VGG-16 stage's are 1.1 GB)."""
    if isinstance(source, bytes):
        return pickle.loads(source)
    with open(source, "rb") as fh:
        return pickle.loads(fh.read())


def stage_main(spec_blob: bytes | str, replica: int, replicas: int, cpus: tuple[int, ...],
               threads: int, in_handles: list, out_handles: list, conn: Any,
               stats_capacity: int, spin_s: float = 0.0,
               environ: dict[str, str] | None = None) -> None:
    """Entry point of a replica process: pin, build the stage, then serve frames until EOS.

    ``spin_s`` > 0 makes this replica's ring waits spin that long before blocking (shm.Spin):
    the parent grants it only to replicas with cores of their own (see pipeline.spin_budgets).
    ``environ``: the parent's environment, which a replica forked by a forkserver does not
    inherit (the server's is the parent's when the server started).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    if environ is not None and environ != os.environ:
        os.environ.clear()
        os.environ.update(environ)
    set_thread_env(threads)
    pin_all_threads(cpus)
    from . import shm  # a spawned replica's numpy loads here, after pinning and the variables

    spec = _load_spec(spec_blob)
    ins = [shm.Ring.attach(h) for h in in_handles]
    outs = [shm.Ring.attach(h) for h in out_handles]
    for ring in ins + outs:
        ring.set_spin(spin_s)
    try:
        with limit_blas_threads(threads):
            try:
                fn = spec.factory(*spec.factory_args)
            except Exception as exc:
                _send_error(conn, exc, "factory failed at start-up")
                return
            conn.send(("ready", {"pid": os.getpid(), "replica": replica, "spin_us": spin_s * 1e6,
                                 "cpus": sorted(os.sched_getaffinity(0))
                                 if hasattr(os, "sched_getaffinity") else []}))
            _serve(fn, replica, replicas, ins, outs, conn, stats_capacity, spec.batch)
    except _ParentGone:
        pass
    finally:
        for ring in ins + outs:
            ring.close()


def _send_error(conn: Any, exc: BaseException, context: str) -> None:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    with contextlib.suppress(OSError):
        conn.send(("error", {"type": type(exc).__name__, "message": str(exc),
                             "context": context, "traceback": tb[-4000:]}))
    sys.stderr.flush()


class _Stats:
    """Per-replica timings, reset at every statistics mark."""

    def __init__(self, capacity: int) -> None:
        from .metrics import SampleBuffer

        self.service = SampleBuffer(capacity)
        self.wait = SampleBuffer(capacity)

    def snapshot(self) -> dict[str, Any]:
        snap = {"frames": self.service.count, "busy_s": self.service.total,
                "service": self.service.values(), "wait": self.wait.values()}
        self.service.reset()
        self.wait.reset()
        return snap


def _serve(fn: Any, replica: int, replicas: int, ins: list, outs: list, conn: Any,
           stats_capacity: int, batch: int = 1) -> None:
    """Frame loop: take frame k from ring k % P, run, write to ring k % C, release the input.

    With ``batch`` > 1 the replica also takes its next frames that are already waiting (never
    waits for them: a lone frame runs alone), up to ``batch``, and runs them as one call along
    the leading axis -- micro-batching, which amortises weight traffic over frames. The inputs
    are copied into the batch and their slots released before the call, so producers refill
    the rings while it runs.
    """
    from . import shm

    stats = _Stats(stats_capacity)
    k = replica  # next frame index this replica owns
    while True:
        t0 = time.perf_counter()
        src = ins[k % len(ins)]
        slot = _take(src, conn)
        index, seq, flags = src.header(slot)
        if not flags & shm.DATA:
            _control(ins, src, slot, outs, conn, index, flags, stats)
            if flags & shm.EOS:
                return
            continue
        frames = [(src, slot, index, seq, flags)]
        control = None
        while len(frames) < batch:  # only what is already waiting
            nxt = ins[(k + len(frames) * replicas) % len(ins)]
            got = nxt.take_ready()
            if got is None:
                break
            head = nxt.header(got)
            if not head[2] & shm.DATA:
                control = (nxt, got, head)
                break
            frames.append((nxt, got, *head))
        t1 = time.perf_counter()
        try:
            results = [fn(src.tensors(slot))] if len(frames) == 1 else _run_batch(fn, frames)
            t2 = time.perf_counter()
            for (f_src, f_slot, f_index, f_seq, f_flags), result in zip(frames, results,
                                                                        strict=True):
                dst = outs[f_index % len(outs)]
                out_slot = _reserve(dst, conn)
                dst.write(out_slot, result)
                dst.publish(out_slot, f_index, f_seq, f_flags)
                if len(frames) == 1:
                    f_src.release(f_slot)
        except _ParentGone:
            raise
        except Exception as exc:
            _send_error(conn, exc, f"while processing frame {seq} (index {index})")
            return
        for f in frames:
            if not f[4] & shm.WARMUP:
                stats.service.add((t2 - t1) / len(frames))
                stats.wait.add(t1 - t0)
        k += replicas * len(frames)
        if control is not None:
            c_src, c_slot, (c_index, _c_seq, c_flags) = control
            _control(ins, c_src, c_slot, outs, conn, c_index, c_flags, stats)
            if c_flags & shm.EOS:
                return


def _run_batch(fn: Any, frames: list) -> list[list[Any]]:
    """Run several frames as one call: inputs concatenated along the leading (batch) axis,
    their slots released once copied, the outputs split back into one list per frame."""
    import numpy as np

    per_frame = [src.tensors(slot) for src, slot, *_ in frames]
    xs = [np.concatenate(parts, axis=0) for parts in zip(*per_frame, strict=True)]
    for src, slot, *_ in frames:
        src.release(slot)
    ys = fn(xs)
    n = len(frames)
    for y in ys:
        if y.shape[:1] != (n,):
            raise ValueError(f"a batch of {n} frames gave an output of shape {y.shape}: the "
                             "stage's outputs must carry the batch on their leading axis")
    return [[y[j:j + 1] for y in ys] for j in range(n)]


def _control(ins: list, src: Any, slot: int, outs: list, conn: Any, index: int, flags: int,
             stats: _Stats) -> None:
    """A control record (statistics mark, end of stream): take its copy from every input
    ring, report statistics on a mark, and pass it on to every output ring."""
    from . import shm

    src.release(slot)
    _drain_control(ins, src, conn)
    if flags & shm.MARK:
        conn.send(("stats", stats.snapshot()))
    _broadcast(outs, conn, index, flags)


def _drain_control(ins: list, first: Any, conn: Any) -> None:
    """A control record is broadcast: take its copy from every other input ring too."""
    for ring in ins:
        if ring is first:
            continue
        slot = _take(ring, conn)
        ring.release(slot)


def _broadcast(outs: list, conn: Any, index: int, flags: int) -> None:
    for ring in outs:
        slot = _reserve(ring, conn)
        ring.publish(slot, index, -1, flags)
