"""Feeding a pipeline from the inference service: clients' frames in, results back to them.

Each client's reader thread submits its frames through :meth:`PipelineFeed.submit` (one at a
time, under a lock: the pipeline takes one producer); ``Pipeline.submit`` blocks while the
pipeline is full, which stops that reader, which stops reading its socket: one chain of
backpressure from the slowest stage to every client. The calling thread of :meth:`run` collects
results in submission order (``Pipeline.get``) and answers each frame's client as soon as its
result is out. Every ``period_s`` the caller gets the period's figures and may end the feed (a
plan switch, a stop): the feed takes no more frames (they wait in their readers for the next
feed), the pipeline empties, and ``run`` returns with nothing in flight, so a switch drops,
duplicates and reorders nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgedeploy.runtime.service import Request, Service


@dataclass
class Window:
    """What one reporting period served."""

    frames: int = 0
    wall_s: float = 0.0
    latency_s: list[float] = field(default_factory=list)
    #: At some point nothing was in flight: the clients, not the pipeline, set the pace, so
    #: the throughput says nothing about the plan (the runtime manager skips such periods).
    starved: bool = False

    def figures(self) -> dict[str, Any]:
        lat = np.array(self.latency_s) * 1e3
        return {"throughput_fps": round(self.frames / self.wall_s, 3) if self.wall_s else 0.0,
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 3) if lat.size else 0.0,
                "latency_ms_p99": round(float(np.percentile(lat, 99)), 3) if lat.size else 0.0}


class PipelineFeed:
    """Runs the service's frames through one started :class:`~edgedeploy.runtime.pipeline.
    Pipeline` (or anything with its ``submit``/``get``)."""

    def __init__(self, service: Service, pipe: Any, *, first_seq: int = 0,
                 poll_s: float = 0.05) -> None:
        self.service = service
        self.pipe = pipe
        self.seq = first_seq
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._open = False
        self._left: int | None = None
        self._inflight: queue.Queue[Request] = queue.Queue()
        self._error: BaseException | None = None

    def submit(self, req: Request) -> bool:
        """A client's frame into the pipeline (blocks while it is full); False when this feed
        takes no more frames."""
        with self._lock:
            if not self._open:
                return False
            try:  # the collecting thread alone watches the stages (_check=False, as run's feeder)
                self.pipe.submit(self.seq, req.tensors, _check=False)
            except BaseException as exc:  # raised by the collecting thread
                self._error, self._open = exc, False
                return False
            self.seq += 1
            self._inflight.put(req)
            if self._left is not None:
                self._left -= 1
                self._open = self._left > 0
            return True

    def _collect_one(self, window: Window) -> bool:
        """Answer the next frame in flight; False when none came within a poll."""
        try:
            req = self._inflight.get(timeout=self.poll_s)
        except queue.Empty:
            return False
        # the result goes straight from the pipeline's ring to its client
        self.pipe.get(copy=False, sink=req.complete if req.alive else None)
        window.frames += 1
        window.latency_s.append(time.perf_counter() - req.t_in)
        return True

    def _drained(self) -> bool:
        """No frame is being submitted and none is in flight (after the feed closed)."""
        if not self._lock.acquire(blocking=False):
            return False
        self._lock.release()
        return self._inflight.empty()

    def run(self, *, stop: threading.Event | None = None, max_frames: int | None = None,
            period_s: float = 1.0, on_window: Callable[[Window], bool] | None = None) -> int:
        """Serve until ``stop`` is set, ``max_frames`` are served, or ``on_window`` (called
        every ``period_s`` with the period's figures) returns True; returns frames served."""
        served = 0
        window, t0 = Window(), time.perf_counter()
        self._left = max_frames
        self._open = max_frames is None or max_frames > 0
        self.service.attach(self.submit)
        try:
            while self._error is None:
                if self._collect_one(window):
                    served += 1
                    if not self._open and self._drained():
                        break
                else:
                    window.starved = True
                    if not self._open and self._drained():
                        break
                if stop is not None and stop.is_set():
                    self._open = False
                now = time.perf_counter()
                if now - t0 >= period_s and self._open:
                    window.wall_s = now - t0
                    if on_window is not None and on_window(window):
                        self._open = False
                    window, t0 = Window(), now
        finally:
            self._open = False
            self.service.attach(None)
        if self._error is not None:
            raise self._error
        return served
