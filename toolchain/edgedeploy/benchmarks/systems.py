"""The systems a benchmark compares: the planned deployment and what a user would otherwise run.

Each system is opened once (processes started, sessions created) and then asked for rounds of
frames, so the benchmark can alternate systems within one run on a noisy shared machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgedeploy import execute
from edgedeploy.benchmarks.estimator import (
    Frame,
    Process,
    Window,
    one_in_flight_latency,
    probe_rate,
    summarise,
    timed_round,
)
from edgedeploy.runtime import ir
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.runner_config import StageConfig
from edgedeploy.runtime.vocab import LITERT, ONNXRUNTIME

LATENCY_SAMPLES = 16


@dataclass
class System:
    """A named way of running the model: ``process(n, frame)`` completes n frames (the
    estimator times it from outside), ``run_one`` one frame with nothing else in flight."""

    name: str
    description: str
    process: Process
    run_one: Callable[[list[np.ndarray]], object]
    close: Callable[[], None] = lambda: None
    #: Frames the system holds in flight: fed behind every timed window (estimator.timed_round).
    tail: int = 0
    #: Frames after which its completions repeat their pattern (replicas x micro-batch): each
    #: timed window holds whole periods (estimator.timed_round).
    period: int = 1
    #: What runs, canonically (stages and per-layer choices; names aside): two systems with the
    #: same configuration are one way of running the model, measured twice. None: not comparable.
    configuration: str | None = None
    windows: list[Window] = field(default_factory=list)
    latencies_s: list[np.ndarray] = field(default_factory=list)

    def measure_round(self, frames: int, warmup: int, frame: Frame,
                      latency_samples: int = LATENCY_SAMPLES) -> Window:
        """One round under the shared rules: warm-up, timed window, then latency samples."""
        window = timed_round(self.process, frame, frames, warmup, self.tail, self.period)
        self.windows.append(window)
        self.latencies_s.append(one_in_flight_latency(self.run_one, frame,
                                                      min(frames, latency_samples)))
        return window

    def probe(self, frames: int, frame: Frame) -> float:
        """A rough rate, not recorded as a round (it sizes the windows and warms up)."""
        return probe_rate(lambda n: timed_round(self.process, frame, n, 2, self.tail,
                                                 self.period), frames)

    def summary(self) -> dict[str, float | str]:
        s = summarise(self.windows)
        lat = np.concatenate(self.latencies_s) if self.latencies_s else np.zeros(1)
        return {"system": self.name, "description": self.description,
                "throughput_fps": s.median_fps, "throughput_fps_min": s.min_fps,
                "throughput_fps_max": s.max_fps, "spread": s.spread,
                "rounds_fps": [w.throughput_fps for w in self.windows],
                "latency_ms_p50": float(np.percentile(lat, 50) * 1e3),
                "latency_ms_p99": float(np.percentile(lat, 99) * 1e3),
                "frames": s.frames}


def in_process(name: str, description: str, fn: Callable[[list[np.ndarray]], object]) -> System:
    """A system that runs frames one after another in this process."""

    def process(n: int, frame: Frame) -> np.ndarray:
        done = np.empty(n)
        for k in range(n):
            fn(frame(k))
            done[k] = time.perf_counter()
        return done

    return System(name, description, process, fn)


def pipelined(name: str, description: str, graph: ir.Graph, plans: Sequence[StageConfig],
              choices: dict[str, str], model_path: Path | None,
              provide: Callable[[bool], execute.SegmentProvider] | None = None) -> System:
    """A system run by the pinned multi-process pipeline (stays started between rounds), kept
    full while timed, as a streaming application feeds it. ``provide(dynamic_batch)``: a shared
    segment provider, where several systems are cut from one model."""
    from edgedeploy.runtime.inline_pipeline import open_pipeline

    dynamic = any(p.batch > 1 for p in plans)
    segments = execute.segments_for(graph, [p.io for p in plans], choices, model_path,
                                    dynamic_batch=dynamic,
                                    provide=provide(dynamic) if provide else None)
    pipe = open_pipeline(execute.stage_specs(graph, plans, choices, segments))
    pipe.start()
    seq = iter(range(1 << 62))
    # A frame holds every graph input (onnxruntime wants even one no node reads); the first
    # stage takes the inputs the model reads, in its own order.
    names = [t.name for t in graph.inputs]
    pick = [names.index(t) for t in plans[0].io.inputs]

    def run_one(xs: list[np.ndarray]) -> object:
        pipe.submit(next(seq), [xs[i] for i in pick])
        return pipe.get(copy=False)

    def process(n: int, frame: Frame) -> np.ndarray:  # fed as lean as a user's own loop
        if pick == list(range(len(names))):
            return pipe.stream(frame, n)
        return pipe.stream(lambda k: [frame(k)[i] for i in pick], n)

    return System(name, description, process, run_one,
                  close=pipe.close, tail=pipe.tail,
                  period=pipe.period,
                  configuration=configuration(graph, plans, choices))


def configuration(graph: ir.Graph, plans: Sequence[StageConfig], choices: dict[str, str]) -> str:
    """A pipelined system's configuration as canonical text: each stage as config.json holds it
    (its name left out) and every layer's choice."""
    stages = [{k: v for k, v in p.to_dict().items() if k != "name"} for p in plans]
    return json.dumps({"stages": stages,
                       "choices": [choices.get(layer.name) for layer in graph.layers]},
                      sort_keys=True)


def ort_default(model_path: Path) -> System:
    """onnxruntime with every setting at its default (all cores, one session)."""
    from edgedeploy.runtime.engines.onnxruntime import ort_default_session

    session = ort_default_session(model_path)  # frames come in the file's input order
    return in_process("ort_default", "onnxruntime default session (all cores)",
                      session.run_ordered)  # the session's own call, as a user's loop makes it


def replicas(name: str, engine: str, graph: ir.Graph, model_path: Path,
             cpus: Sequence[int] | None = None, *, fp16: bool = False) -> System:
    """One single-threaded session of ``engine`` per core over the whole model, frames
    round-robin (the hand trick a user finds: replicas beat one threaded session), each in a
    thread of this process, as a user writes it by hand (``runtime.inline_replicas``; pinned
    to its core, which a user may not do: unpinned threads measured the same, within the
    noise, on the 2-core host, seen while developing), not in worker processes, which a user
    does not start."""
    from edgedeploy.runtime.stages import plan_stage_io

    cpus = tuple(cpus or available_cpus())
    io = plan_stage_io(graph, [])[0]
    plans = [execute.stage_from_io(io=io, cpus=cpus, replicas=len(cpus), name=engine,
                                   fp16=fp16, inline=True)]
    half = " computing fp16" if fp16 else ""
    return pipelined(name, f"{engine}, {len(cpus)} one-thread replicas{half}", graph,
                     plans, {layer.name: engine for layer in graph.layers}, model_path)


def ort_replicas(graph: ir.Graph, model_path: Path, cpus: Sequence[int] | None = None) -> System:
    """One single-threaded onnxruntime session per core (ONNX input)."""
    return replicas("ort_replicas", ONNXRUNTIME, graph, model_path, cpus)


def litert_replicas(graph: ir.Graph, model_path: Path,
                    cpus: Sequence[int] | None = None, *, fp16: bool = False) -> System:
    """One single-threaded LiteRT interpreter per core (TFLite input); ``fp16``: computing
    in fp16."""
    return replicas("litert_replicas", LITERT, graph, model_path, cpus, fp16=fp16)


def litert_all_cores(graph: ir.Graph, model_path: Path, threads: int | None = None, *,
                     fp16: bool = False) -> System:
    """LiteRT with num_threads = all cores (the TFLite user's default); ``fp16``: its
    CompiledModel computing in fp16."""
    from edgedeploy.runtime.engines.litert import LiteRTHalfModel, LiteRTModel

    threads = threads or len(available_cpus())
    model = (LiteRTHalfModel if fp16 else LiteRTModel)(
        model_path, num_threads=threads, input_shapes=execute.litert_input_shapes(graph))
    names = [t.name for t in graph.inputs]
    if isinstance(model, LiteRTModel):  # the interpreter's own calls, as a user's loop makes
        order = [names.index(n) for n in model.input_names]  # them: set, invoke, get

        def fn(xs: list[np.ndarray]) -> object:
            return model.run_ordered([xs[i] for i in order])  # the model's own layout
    else:
        def fn(xs: list[np.ndarray]) -> object:
            return model.run(dict(zip(names, xs, strict=True)))

    return in_process("litert", f"LiteRT, {threads} threads" + (" computing fp16" if fp16
                                                                  else ""), fn)
