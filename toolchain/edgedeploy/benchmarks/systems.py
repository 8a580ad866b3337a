"""The systems a benchmark compares: the planned deployment and what a user would otherwise run.

Each system is opened once (processes started, sessions created) and then asked for rounds of
frames, so the benchmark can alternate systems within one run on a noisy shared machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgedeploy import execute
from edgedeploy.runtime import ir
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.runner_config import StageConfig
from edgedeploy.runtime.vocab import LITERT, ONNXRUNTIME

Frame = Callable[[int], list[np.ndarray]]


@dataclass
class Round:
    frames: int
    wall_s: float
    latencies_s: np.ndarray


@dataclass
class System:
    """A named way of running the model; ``run(n, frame)`` measures one round."""

    name: str
    description: str
    run: Callable[[int, Frame], Round]
    close: Callable[[], None] = lambda: None
    rounds: list[Round] = field(default_factory=list)

    def summary(self) -> dict[str, float | str]:
        frames = sum(r.frames for r in self.rounds)
        wall = sum(r.wall_s for r in self.rounds)
        lat = np.concatenate([r.latencies_s for r in self.rounds]) if self.rounds else np.zeros(1)
        return {"system": self.name, "description": self.description,
                "throughput_fps": frames / wall if wall > 0 else 0.0,
                "latency_ms_p50": float(np.percentile(lat, 50) * 1e3),
                "latency_ms_p99": float(np.percentile(lat, 99) * 1e3),
                "frames": frames}


def in_process(name: str, description: str, fn: Callable[[list[np.ndarray]], object]) -> System:
    """A system that runs frames one after another in this process (latency = service time)."""

    def run(n: int, frame: Frame) -> Round:
        lat = np.empty(n)
        t0 = time.perf_counter()
        for k in range(n):
            t = time.perf_counter()
            fn(frame(k))
            lat[k] = time.perf_counter() - t
        return Round(n, time.perf_counter() - t0, lat)

    return System(name, description, run)


def pipelined(name: str, description: str, graph: ir.Graph, plans: Sequence[StageConfig],
              choices: dict[str, str], model_path: Path | None, warmup: int = 2) -> System:
    """A system run by the pinned multi-process pipeline (stays started between rounds)."""
    from edgedeploy.runtime.pipeline import Pipeline

    segments = execute.segments_for(graph, [p.io for p in plans], choices, model_path)
    pipe = Pipeline(execute.stage_specs(graph, plans, choices, segments))
    pipe.start()

    seq = iter(range(1 << 62))

    def run(n: int, frame: Frame) -> Round:
        # Throughput with the rings kept full; latency with one frame in flight, because a
        # flood-fed pipeline's latency is mostly time spent queued behind earlier frames.
        result = pipe.run(frame, n, warmup=warmup, keep_outputs="none")
        lat = np.empty(max(1, min(n, 16)))
        for k in range(lat.size):
            t = time.perf_counter()
            pipe.submit(next(seq), frame(k))
            pipe.get(copy=False)
            lat[k] = time.perf_counter() - t
        wall = n / result.throughput_fps if result.throughput_fps else 0.0
        return Round(n, wall, lat)

    return System(name, description, run, close=pipe.close)


def ort_default(model_path: Path) -> System:
    """onnxruntime with every setting at its default (all cores, one session)."""
    from edgedeploy.runtime.engines.onnxruntime import ort_default_session

    session = ort_default_session(model_path)
    names = session.input_names
    return in_process("ort_default", "onnxruntime default session (all cores)",
                      lambda xs: session.run(dict(zip(names, xs, strict=True))))


def replicas(name: str, engine: str, graph: ir.Graph, model_path: Path,
             cpus: Sequence[int] | None = None) -> System:
    """One single-threaded session of ``engine`` per core over the whole model, frames
    round-robin (the hand trick a user finds: replicas beat one threaded session)."""
    from edgedeploy.runtime.stages import plan_stage_io

    cpus = tuple(cpus or available_cpus())
    io = plan_stage_io(graph, [])[0]
    plans = [execute.stage_from_io(io=io, cpus=cpus, replicas=len(cpus), name=engine)]
    return pipelined(name, f"{engine}, {len(cpus)} one-thread replicas", graph,
                     plans, {layer.name: engine for layer in graph.layers}, model_path)


def ort_replicas(graph: ir.Graph, model_path: Path, cpus: Sequence[int] | None = None) -> System:
    """One single-threaded onnxruntime session per core (ONNX input)."""
    return replicas("ort_replicas", ONNXRUNTIME, graph, model_path, cpus)


def litert_replicas(graph: ir.Graph, model_path: Path,
                    cpus: Sequence[int] | None = None) -> System:
    """One single-threaded LiteRT interpreter per core (TFLite input)."""
    return replicas("litert_replicas", LITERT, graph, model_path, cpus)


def litert_all_cores(graph: ir.Graph, model_path: Path, threads: int | None = None) -> System:
    """LiteRT with num_threads = all cores (the TFLite user's default)."""
    from edgedeploy.runtime.engines.litert import LiteRTModel

    threads = threads or len(available_cpus())
    model = LiteRTModel(model_path, num_threads=threads)
    names = [t.name for t in graph.inputs]

    def fn(xs: list[np.ndarray]) -> object:
        return model.run(execute.litert_feeds(graph, dict(zip(names, xs, strict=True))))

    return in_process("litert", f"LiteRT, {threads} threads", fn)
