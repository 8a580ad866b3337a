"""The serving loop of the bundle runner: frames through the active plan, a live status file, and
the plan-switch seam the runtime manager builds on.

Frames run in *chunks* of about a second each (``Pipeline.run``): after every chunk the pipeline
is empty, the per-stage metrics are fresh, and the status file is rewritten. The chunk boundary is
also the only place a plan changes: the new plan's pipeline is started while the old one is idle
and empty, then the old one is closed, and frame indices continue, so a switch drops, duplicates
and reorders nothing (Dynamic-OFA-style switching; the policy deciding *when* is
pluggable: :data:`SwitchPolicy`, plus a request file ``runner.control.json`` in the state dir
holding ``{"active": "PLAN"}`` that an operator or ``edgedeploy`` can write).

Board power (runtime/power.py) goes beside the figures of every chunk: ``power_w``, ``energy_mj``
per frame (power x the chunk's 1000 / throughput_fps ms), ``power_source`` and ``power_note``
(why ``power_w`` is null). The log is named by ``$EDGEDEPLOY_POWER_LOG``, else by the bundle's
``edgedeploy.env`` (Jetson bundles; relative paths are under the state dir), else there is none.

Where frames come from is config ``io`` (runner_io.py). With the client source (the default of a
bundle built from a manifest) the runner serves applications: the service (service.py) takes
their frames, a feeder (service_feed.py) keeps the pipeline full, each result goes back to its
client as soon as it is out, and the figures of every period of about a second go to the status
file. A fresh pipeline first runs a few seeded frames (a warm-up that also measures the plan's
capacity, shown until clients' frames replace it). A plan switch waits for an empty pipeline
there too. The runtime manager is consulted only after periods in which frames were waiting all
along: when clients set the pace, the throughput says nothing about the plan.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.runtime.errors import EdgeDeployError
from edgedeploy.runtime.layouts import carried_shape
from edgedeploy.runtime.power import PowerMeter
from edgedeploy.runtime.runner_config import (
    CONTROL_FILE,
    BundleConfigError,
    RunnerConfig,
    load_graph,
    stage_specs,
)

#: ``index -> tensors`` for the first stage, in graph-input order.
FrameSource = Callable[[int], list[np.ndarray]]
#: ``(status snapshot, config) -> plan name to switch to, or None to stay``; it may instead
#: return a mapping with ``to`` plus what the status timeline should record (reason, measured
#: figures: see manager.py), and may have a ``report()`` whose result goes to status ``manager``.
SwitchPolicy = Callable[[Mapping[str, Any], RunnerConfig], "str | Mapping[str, Any] | None"]
#: ``(frame index, outputs)`` for every frame served, in index order (only when given).
FrameSink = Callable[[int, list[np.ndarray]], None]

CHUNK_S = 1.0
#: Names the tegrastats log (run.sh exports it; ``measure`` over SSH finds it in the env file).
POWER_LOG_ENV = "EDGEDEPLOY_POWER_LOG"
ENV_FILE = "edgedeploy.env"


def power_log_path(cfg: RunnerConfig, state_dir: Path) -> Path | None:
    """The tegrastats log this bundle's board writes, or None where the bundle names none.

    ``$EDGEDEPLOY_POWER_LOG`` wins (empty: no sensor); otherwise the bundle's ``edgedeploy.env``,
    which run.sh sources but a runner started directly (``main.py measure`` over SSH) does not.
    """
    raw = os.environ.get(POWER_LOG_ENV)
    if raw is None:
        raw = _env_file(cfg.root / ENV_FILE).get(POWER_LOG_ENV)
    return state_dir / raw if raw else None


def _env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a systemd-style environment file (empty when it is unreadable)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    pairs = (ln.strip().partition("=") for ln in lines if not ln.lstrip().startswith("#"))
    return {k.strip(): v.strip().strip('"') for k, eq, v in pairs if eq and k.strip()}


def power_meter(cfg: RunnerConfig, state_dir: Path) -> PowerMeter:
    """The board's power meter; a null one (saying so) where the bundle names no log."""
    return PowerMeter(power_log_path(cfg, state_dir))


def frame_ms(throughput_fps: float) -> float | None:
    """Milliseconds of board time per frame at ``throughput_fps`` (None before any frame)."""
    return 1000.0 / throughput_fps if throughput_fps > 0 else None


def make_source(cfg: RunnerConfig, graph_inputs: list[tuple[str, tuple[int, ...]]]) -> FrameSource:
    """The frame source named by config ``source`` (default: seeded random inputs).

    * ``{"kind": "random", "seed": 0, "pool": 4}``: a pool of seeded inputs, cycled;
    * ``{"kind": "npz", "file": "app/frames.npz"}``: arrays named like the graph inputs, with a
      leading frame axis, cycled;
    * ``{"kind": "python", "callable": "camera:frames"}``: a real application's feed. The module
      is imported from ``app/``; ``frames(config_dict)`` returns a callable ``index -> list of
      NCHW float32 arrays`` (one per graph input). Blocking in it is fine: the pipeline waits.
    """
    spec = dict(cfg.raw.get("source") or {"kind": "random"})
    kind = spec.get("kind", "random")
    if kind == "random":
        rng = np.random.default_rng(int(spec.get("seed", 0)))
        pool = [[rng.standard_normal(shape).astype(np.float32) for _, shape in graph_inputs]
                for _ in range(max(1, int(spec.get("pool", 4))))]
        return lambda k: pool[k % len(pool)]
    if kind == "npz":
        with np.load(cfg.root / spec["file"]) as npz:
            arrays = [np.asarray(npz[name], dtype=np.float32) for name, _ in graph_inputs]
        count = min(a.shape[0] for a in arrays)
        return lambda k: [a[k % count] for a in arrays]
    if kind == "python":
        module, _, attr = str(spec["callable"]).partition(":")
        sys.path.insert(0, str(cfg.root / "app"))
        return getattr(importlib.import_module(module), attr)(dict(cfg.raw))
    raise BundleConfigError(f"unknown frame source kind {kind!r}",
                            hint="use random, npz or python")


class StatusWriter:
    """Keeps the latest status snapshot and rewrites the status file atomically every second."""

    def __init__(self, path: Path, base: Mapping[str, Any]) -> None:
        self.path = path
        self._data: dict[str, Any] = dict(base)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgedeploy-status", daemon=True)
        path.parent.mkdir(parents=True, exist_ok=True)

    def update(self, **fields: Any) -> None:
        with self._lock:
            self._data.update(fields)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._data))

    def write(self) -> None:
        data = self.snapshot()
        data["updated"] = time.time()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(OSError):
                self.write()

    def __enter__(self) -> StatusWriter:
        self.write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            self.write()


class Server:
    """Runs the active plan until told to stop; one pipeline at a time, switched between chunks."""

    def __init__(self, cfg: RunnerConfig, status: StatusWriter, *,
                 policy: SwitchPolicy | None = None, stop: threading.Event | None = None,
                 sink: FrameSink | None = None, chunk_s: float = CHUNK_S,
                 meter: PowerMeter | None = None, source: str | None = None) -> None:
        from edgedeploy.runtime.runner_io import frame_sink, frame_source, io_settings

        self.cfg = cfg
        self.status = status
        self.policy = policy
        self.chunk_s = chunk_s
        self._why: dict[str, Any] = {}
        self.stop = stop or threading.Event()
        self.graph = load_graph(cfg, 0, 0)  # structure only: stages load their own weights
        self.io = io_settings(cfg, source)
        state_dir = status.path.parent
        self.available: int | None = None  # frames a finite source holds
        if self.io.kind == "client":
            self.source: FrameSource | None = None
        elif "io" not in cfg.raw and source is None:  # a bundle without io: as it always was
            self.source = make_source(cfg, [(t.name, carried_shape(self.graph, t.name))
                                           for t in self.graph.inputs])
        else:
            self.source, self.available = frame_source(self.io, cfg, state_dir)
        self.sink = sink or frame_sink(self.io, cfg, state_dir)
        self.frames = 0
        self.warm_frames = 0  # the client source's start-up frames (see _warm_up)
        self.switches: list[dict[str, Any]] = []
        self.meter = meter or power_meter(cfg, status.path.parent)
        self.status.update(**self.meter.sample().fields(None))

    def serve(self, max_frames: int | None, duration_s: float | None) -> None:
        if self.io.kind == "client":
            self._serve_clients(max_frames, duration_s)
            return
        if self.available is not None:
            max_frames = min(max_frames or self.available, self.available)
        self.status.update(io={"source": self.io.kind, "sink": self._sink_status()})
        t_end = None if duration_s is None else time.monotonic() + duration_s
        self._each_plan(max_frames, t_end,
                        lambda pipe, name: self._run_plan(pipe, name, max_frames, t_end))

    def _each_plan(self, max_frames: int | None, t_end: float | None,
                   run: Callable[[Any, str], Any]) -> None:
        """Run the active plan's pipeline with ``run(pipe, plan name)`` until it ends (None) or
        names another plan, which then replaces it (the switch recorded): the one plan loop of
        the internal feed and of the clients' service."""
        from edgedeploy.runtime.inline_pipeline import open_pipeline

        plan = self.cfg.plan()
        while not self._done(max_frames, t_end):
            pipe = open_pipeline(stage_specs(self.cfg, self.graph, plan))
            with pipe:
                self.status.update(active=plan.name, state="running",
                                   shm=sorted(pipe.resource_names()),
                                   replicas=pipe.replica_info)
                nxt = run(pipe, plan.name)
            if nxt is None:
                break
            self._record_switch(plan.name, nxt.name, nxt.predicted, self._why)
            plan = nxt

    def _run_plan(self, pipe: Any, name: str, max_frames: int | None,
                  t_end: float | None) -> Any:
        chunk, warmup = 8, 2
        while not self._done(max_frames, t_end):
            n = chunk if max_frames is None else min(chunk, max_frames - self.frames)
            base = self.frames
            result = pipe.run(lambda k, b=base, w=warmup: self.source(b + max(0, k - w)), n,
                              warmup=warmup, keep_outputs="all" if self.sink else "none")
            warmup = 0
            for k, outs in enumerate(result.outputs or ()):
                self.sink(base + k, outs)  # type: ignore[misc]
            self.frames += result.frames
            chunk = max(4, min(100_000, round(result.throughput_fps * self.chunk_s) or 4))
            self.status.update(frames=self.frames, **_figures(result),
                               **self.meter.sample().fields(frame_ms(result.throughput_fps)))
            if self.sink is not None:
                self.status.update(io={"source": self.io.kind, "sink": self._sink_status()})
            target = self._requested(name)
            if target is not None:
                return target
        return None

    def _done(self, max_frames: int | None, t_end: float | None) -> bool:
        return (self.stop.is_set() or (max_frames is not None and self.frames >= max_frames)
                or (t_end is not None and time.monotonic() >= t_end))

    def _requested(self, current: str, consult_policy: bool = True) -> Any:
        """The plan to switch to: the request file first, then the policy; None to stay."""
        wanted = None
        control = self.status.path.with_name(CONTROL_FILE)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            wanted = json.loads(control.read_text()).get("active")
        self._why = {"trigger": "control", "reason": f"requested in {CONTROL_FILE}"}
        if wanted is None and self.policy is not None and consult_policy:
            wanted = self.policy(self.status.snapshot(), self.cfg)
            report = getattr(self.policy, "report", None)
            if callable(report):
                self.status.update(manager=report())
            self._why = {"trigger": "policy"}
            if isinstance(wanted, Mapping):
                self._why = {k: v for k, v in wanted.items() if k != "to"}
                wanted = wanted.get("to")
        if wanted is None or wanted == current or wanted not in self.cfg.plans:
            return None
        return self.cfg.plan(wanted)

    def _sink_status(self) -> Any:
        report = getattr(self.sink, "status", None)
        return report() if callable(report) else str(self.io.sink.get("kind"))

    # -- serving clients ----------------------------------------------------------------------
    def _serve_clients(self, max_frames: int | None, duration_s: float | None) -> None:
        """Frames from the service's clients through the active plan (see the module doc)."""
        from edgedeploy.runtime.runner_io import open_service

        service = open_service(self.io, self.cfg, self.status.path.parent)
        self.status.update(io={"source": "client", **service.stats()})
        t_end = None if duration_s is None else time.monotonic() + duration_s

        def run(pipe: Any, name: str) -> Any:
            self._warm_up(pipe)
            return self._feed_plan(service, pipe, name, max_frames, t_end)

        try:
            self._each_plan(max_frames, t_end, run)
        except EdgeDeployError as exc:
            service.close("failed", f"the runner failed: {exc.message}")
            raise
        finally:
            service.close("stopped", "the runner stopped")
            self.status.update(io={"source": "client", **service.stats()})

    def _warm_up(self, pipe: Any, frames: int = 8, warmup: int = 2) -> None:
        """A few seeded frames through a fresh pipeline before clients' frames: they prime every
        stage (first-use allocations, lazy engine start-up), so the first client does not wait
        for them, and they measure the plan's capacity for the status (and the runtime manager)
        until clients' frames replace the figures. Counted in status ``frames``, not in
        ``io.served`` nor ``--frames``."""
        inputs = [(t.name, carried_shape(self.graph, t.name)) for t in self.graph.inputs]
        result = pipe.run(make_source(self.cfg, inputs), frames, warmup=warmup,
                          keep_outputs="none")
        self.warm_frames += result.frames
        self.status.update(frames=self.frames + self.warm_frames, **_figures(result),
                           **self.meter.sample().fields(frame_ms(result.throughput_fps)))

    def _feed_plan(self, service: Any, pipe: Any, name: str, max_frames: int | None,
                   t_end: float | None) -> Any:
        from edgedeploy.runtime.service_feed import PipelineFeed, Window

        switch: list[Any] = []

        def on_window(w: Window) -> bool:
            self.frames += w.frames
            fields: dict[str, Any] = {"frames": self.frames + self.warm_frames,
                                      "io": {"source": "client", **service.stats()}}
            if w.frames:
                fields.update(w.figures())
            fps = fields.get("throughput_fps") or 0.0
            self.status.update(**fields, **self.meter.sample().fields(frame_ms(fps)))
            if self._done(max_frames, t_end):
                return True
            target = self._requested(name, consult_policy=w.frames > 0 and not w.starved)
            if target is not None:
                switch.append(target)
            return target is not None

        start = self.frames
        left = None if max_frames is None else max_frames - start
        served = PipelineFeed(service, pipe, first_seq=start).run(
            stop=self.stop, max_frames=left, period_s=self.chunk_s, on_window=on_window)
        self.frames = start + served
        self.status.update(frames=self.frames + self.warm_frames,
                           io={"source": "client", **service.stats()})
        return switch[0] if switch else None

    def _record_switch(self, old: str, new: str, predicted: Mapping[str, float],
                       why: Mapping[str, Any]) -> None:
        self.switches.append({**why, "t": time.time(), "from": old, "to": new,
                              "at_frame": self.frames, "predicted": dict(predicted)})
        self.status.update(switches=list(self.switches))


def _figures(result: Any) -> dict[str, Any]:
    return {"throughput_fps": round(result.throughput_fps, 3),
            "latency_ms_p50": round(result.latency_ms_p50, 3),
            "latency_ms_p99": round(result.latency_ms_p99, 3),
            "stages": [s.to_dict() for s in result.stages]}
