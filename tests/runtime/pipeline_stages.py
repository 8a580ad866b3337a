"""Stage factories for the pipeline tests: module-level so spawned processes can import them.

Frames are small float32 vectors whose element 0 carries the frame number, so a stage can vary
its behaviour per frame (service-time jitter, a failure at frame N) deterministically.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def affine(scale: float, shift: float):
    """y = x * scale + shift (exactly representable, so sequential and pipelined outputs match)."""
    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        return [xs[0] * np.float32(scale) + np.float32(shift)]
    return run


def jittered_affine(scale: float, shift: float, max_sleep_ms: float):
    """affine, but the service time depends on the frame, so replicas finish out of order."""
    inner = affine(scale, shift)

    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        frame = round(float(xs[0].flat[0]))
        time.sleep(((frame * 7919) % 5) / 4 * max_sleep_ms / 1e3)
        return inner(xs)
    return run


def slow_identity(sleep_ms: float):
    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        time.sleep(sleep_ms / 1e3)
        return [xs[0]]
    return run


def identity():
    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        return [xs[0]]
    return run


def report_affinity(width: int):
    """Outputs the cpus this process runs on (padded with -1), its pid, OMP_NUM_THREADS and
    OPENBLAS_THREAD_TIMEOUT."""
    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        cpus = sorted(os.sched_getaffinity(0))[:width]
        out = np.full(width, -1, dtype=np.int64)
        out[: len(cpus)] = cpus
        info = [os.getpid(), int(os.environ.get("OMP_NUM_THREADS", "-1")),
                int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "-1"))]
        return [out, np.array(info, dtype=np.int64)]
    return run


def raise_at(frame: int):
    """Raises ValueError on frame ``frame``; identity otherwise."""
    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        if round(float(xs[0].flat[0])) == frame:
            raise ValueError(f"boom at frame {frame}")
        return [xs[0]]
    return run


def broken_factory(message: str):
    raise RuntimeError(message)


def wrong_shape():
    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        return [np.zeros(3, dtype=np.float32)]
    return run


def matmul_chain(n: int, size: int, seed: int = 0):
    """``n`` rounds of x <- tanh(x @ W): a compute-heavy load that splits into halves."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)

    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        x = xs[0]
        for _ in range(n):
            x = np.tanh(x @ weight)
        return [x]
    return run


# -- checks shared by the pipeline tests ------------------------------------------------------

def shm_entries() -> set[str]:
    """Names in /dev/shm (shared-memory segments and POSIX semaphores)."""
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def parent_pid(pid: int) -> int:
    """``pid``'s parent, from /proc (a replica's: the pipeline's process, or its forkserver)."""
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); it has exited, so count it as gone
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "zombie" not in fh.read().lower()
    except OSError:
        return False


def wait_until(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def slow_pipeline_for_orphan_test() -> None:
    """Run forever in a subprocess, after printing the children's pids and /dev/shm entries."""
    import sys

    from edgedeploy.runtime.affinity import available_cpus
    from edgedeploy.runtime.pipeline import Pipeline, StageSpec, TensorSpec

    vec = (TensorSpec((4,)),)
    cpus = tuple(available_cpus())
    stages = [StageSpec(name=n, cpus=cpus, factory=slow_identity, factory_args=(2.0,),
                        inputs=vec, outputs=vec) for n in ("a", "b")]
    with Pipeline(stages) as pipe:
        print(" ".join(str(r["pid"]) for r in pipe.replica_info))
        print(" ".join(pipe.resource_names()))
        sys.stdout.flush()
        pipe.run(lambda k: [np.full(4, k, dtype=np.float32)], 10**9)


def batch_affine(scale: float, shift: float, sleep_ms: float = 0.0):
    """affine on (n, 4) frames that also writes, in column 3, how many frames the call held:
    a micro-batching stage (sleeps per call, so a flood-fed queue fills while it runs)."""
    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        time.sleep(sleep_ms / 1e3)
        y = xs[0] * np.float32(scale) + np.float32(shift)
        y[:, 3] = xs[0].shape[0]
        return [y]
    return run


def affine_with_weights(scale: float, shift: float, weights: bytes):
    """affine, carrying ``weights`` as a real stage carries its model (a large spec)."""
    assert len(weights) > 0
    return affine(scale, shift)


def report_start(env_var: str):
    """Outputs what the replica was born with: the BLAS pool's threads after one product, how
    many distinct core sets its threads hold (1: all on the same cores), the number of those
    cores, whether the runtime's stages were loaded before this factory ran, and whether
    ``env_var`` is set (1) and to "after" (2)."""
    from threadpoolctl import threadpool_info

    preloaded = "edgedeploy.runtime.stages" in sys.modules
    mark = os.environ.get(env_var)
    a = np.ones((256, 256))

    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        a @ a  # wakes the BLAS pool to its bound
        blas = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        sets = {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
        return [np.array([blas, len(sets), len(next(iter(sets))), preloaded,
                          0 if mark is None else 1 + (mark == "after")], dtype=np.int64)]
    return run
