"""Pinning a process to its cores and bounding library threads to them, so stages never fight.

Linux only for pinning (``os.sched_setaffinity``); elsewhere these are no-ops that report so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence


def available_cpus() -> list[int]:
    """CPUs this process may run on (respects cgroups/taskset, unlike os.cpu_count())."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin_process(cpus: Sequence[int]) -> bool:
    """Pin the calling thread, and the threads it starts from now on, to ``cpus`` (Linux pins
    threads: in a single-threaded process that is the whole process; an inline replica's
    thread pins itself alone); False if unsupported."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return False
    os.sched_setaffinity(0, set(cpus))
    return True


def ort_thread_affinities(cpus: Sequence[int]) -> str:
    """Value for onnxruntime's ``session.intra_op_thread_affinities`` for ``len(cpus)`` threads.

    onnxruntime takes 1-based logical CPU ids, one group per *extra* thread (the calling thread is
    thread 0 and is not pinned by ONNXRUNTIME: pin it with :func:`pin_process`), separated by ``;``.
    """
    return ";".join(str(c + 1) for c in list(cpus)[1:])


@contextlib.contextmanager
def limit_blas_threads(n: int) -> Iterator[None]:
    """Bound BLAS/OpenMP pools to ``n`` threads inside the block (threadpoolctl when present)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # device without threadpoolctl: env vars only affect future pools
        yield
        return
    with threadpool_limits(limits=max(1, int(n))):
        yield


#: How long OpenBLAS's idle threads spin before they sleep, as log2 of CPU cycles (its own
#: default, 28, is about 0.1 s). A stage that runs native layers beside an engine segment
#: hands the cores to the engine right after numpy's last call: ZFNet-512 on 2 cores, its
#: dense layers native after an onnxruntime segment, took 60 ms a frame with OpenBLAS's
#: default and 48-50 ms with 4-22; ResNet-18's native convolutions, back-to-back BLAS calls,
#: kept their time at 22 (about a millisecond), and lost 5 % at 4.
BLAS_SPIN_LOG2_CYCLES = 22


def set_thread_env(n: int) -> None:
    """Set thread-count env vars before numpy/BLAS is imported in a fresh process, and bound
    how long idle BLAS threads spin (a value the user set is kept)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(max(1, int(n)))
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(BLAS_SPIN_LOG2_CYCLES))
