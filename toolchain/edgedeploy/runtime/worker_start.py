"""How replica processes start: a preloaded ``forkserver`` where it is safe, else ``spawn``.

A spawned replica imports numpy and the runtime again before it builds its stage, paid for
every contender measure-to-decide times and every runner start. A forkserver that imported them
once (:mod:`.forkserver_preload`) forks replicas that already hold them: two MobileNetV2
replicas were ready in 0.16 s against 0.31 s on a 2-core EPYC (``make bench``).

The preloaded BLAS pool has one thread, and each replica widens it to its own cores through
threadpoolctl after pinning (``affinity.limit_blas_threads``), so its threads are born on the
stage's cores as they are under ``spawn``. Without threadpoolctl a preloaded pool could not be
widened, so ``spawn`` stays the default there. A replica takes the parent's environment of the
moment it starts (``stage_worker.stage_main``), except what OpenBLAS read as numpy loaded in
the server (``OPENBLAS_THREAD_TIMEOUT``): the parent's when its first pipeline started.

Never ``fork`` the parent: it may hold onnxruntime or BLAS threads, and forking a
multi-threaded process copies locks that no thread of the child can release.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import sys
from multiprocessing.context import BaseContext

SPAWN = "spawn"
FORKSERVER = "forkserver"
START_METHODS = (SPAWN, FORKSERVER)
PRELOAD_MODULE = "edgedeploy.runtime.forkserver_preload"


def default_start_method() -> str:
    """``forkserver`` on Linux with threadpoolctl, ``spawn`` elsewhere."""
    if sys.platform.startswith("linux") and importlib.util.find_spec("threadpoolctl"):
        return FORKSERVER
    return SPAWN


def start_context(method: str) -> BaseContext:
    """The multiprocessing context replicas start from by ``method``; a forkserver one
    preloads :data:`PRELOAD_MODULE` (set before its server first starts)."""
    ctx = mp.get_context(method)
    if method == FORKSERVER:
        ctx.set_forkserver_preload([PRELOAD_MODULE])
    return ctx
