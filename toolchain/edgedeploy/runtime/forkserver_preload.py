"""Imported once inside the forkserver (worker_start.py), never elsewhere: bounds BLAS to one
thread before numpy loads, so the server stays single-threaded and safe to fork, then imports
what every replica needs. An engine that is not installed is skipped."""

from __future__ import annotations

import contextlib

from .affinity import set_thread_env

set_thread_env(1)

import numpy  # noqa: E402,F401  (after the thread variables, on purpose)

from . import shm, stage_worker, stages  # noqa: E402,F401

for _engine in ("onnxruntime", "ai_edge_litert.interpreter"):
    with contextlib.suppress(ImportError):
        __import__(_engine)
