"""Imported once inside the forkserver (worker_start.py), never elsewhere: bounds BLAS to one
thread before numpy loads, then imports what every replica needs, keeping the server a single
thread, as a process must be to fork safely. Not the engines: importing onnxruntime starts a
thread of its own (parked on a timed wait), and costs a replica only 0.03-0.04 s itself."""

from __future__ import annotations

from .affinity import set_thread_env

set_thread_env(1)

import numpy  # noqa: E402,F401  (after the thread variables, on purpose)

from . import shm, stage_worker, stages  # noqa: E402,F401
