"""Measurement back-ends behind one interface (as west's runners hide flash back-ends).

* :class:`LocalBackend`: this host, for real, through ``execute.run_stages`` (pinned pipeline
  processes, warm-up, medians), then each stage alone in-process for per-layer times.

Every back-end may answer ``layer_ms`` beside the pipeline figures: per stage, ``[start, stop,
ms]`` for each executor step (one layer, or an onnxruntime segment of several), measured with the
stage alone on one replica's cores. The guide uses them to correct single layers' primitives.
* :class:`RunnerBackend`: a deployed bundle's ``main.py measure --config-json ... --json``,
  through any ``run(argv) -> stdout`` callable -- the deployer's transport (SSH), or a board twin
  (:meth:`edgedeploy.twins.TwinDevice.run`), so refinement runs unchanged on a simulated board.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgedeploy.errors import ExecutionError
from edgedeploy.refine.candidate import Candidate, Space

Command = Callable[[list[str]], str]


@dataclass
class Measurement:
    """One configuration's measured figures (medians over frames; merged over re-runs)."""

    throughput_fps: float
    latency_ms: float
    stage_ms: list[float]
    seconds: float = 0.0
    power_w: float | None = None
    energy_mj: float | None = None
    simulated: bool = False
    runs: list[float] = field(default_factory=list)  # throughput of each run
    #: per stage, ``(start, stop, ms)`` per executor step, measured in-process one stage at a
    #: time (no contention); None where the device does not report them
    layer_ms: list[list[tuple[int, int, float]]] | None = None
    #: How the stages ran: ``pipeline`` (worker processes) or ``inline`` (in the measuring
    #: process; the executor's own word, as its result reports it).
    mode: str = "pipeline"

    def merged(self, other: Measurement) -> Measurement:
        """Two runs of the same configuration: the median of the runs' throughputs."""
        import statistics

        runs = self.runs + other.runs
        fps = statistics.median(runs)
        k = fps / self.throughput_fps if self.throughput_fps else 1.0
        return Measurement(fps, self.latency_ms / k, [t / k for t in self.stage_ms],
                           self.seconds + other.seconds, self.power_w,
                           None if self.energy_mj is None else self.energy_mj / k,
                           self.simulated, runs, self.layer_ms or other.layer_ms, self.mode)

    def to_dict(self) -> dict[str, Any]:
        return {"throughput_fps": self.throughput_fps, "latency_ms": self.latency_ms,
                "stage_ms": list(self.stage_ms), "power_w": self.power_w,
                "energy_mj": self.energy_mj, "runs": len(self.runs) or 1,
                "simulated": self.simulated, "mode": self.mode,
                "layer_ms": None if self.layer_ms is None else
                [[list(e) for e in st] for st in self.layer_ms]}


class Backend(Protocol):
    label: str
    simulated: bool

    def measure(self, cand: Candidate, frames: int, warmup: int) -> Measurement: ...


def from_runner_json(data: dict[str, Any], wall_s: float) -> Measurement:
    fps = float(data["throughput_fps"])
    lat = float(data.get("latency_ms_p50", data.get("latency_ms", 0.0)))
    stage = [float(x) for x in data.get("stage_ms") or
             [s.get("service_ms_mean", 0.0) for s in data.get("stages", [])]]
    return Measurement(fps, lat, stage, float(data.get("seconds", wall_s)),
                       _opt_float(data.get("power_w")), _opt_float(data.get("energy_mj")),
                       bool(data.get("simulated", False)), [fps],
                       parse_layer_ms(data.get("layer_ms")), str(data.get("mode", "pipeline")))


def _opt_float(value: Any) -> float | None:
    """A reported figure, or None where the runner reports null (a board without a power
    sensor says why in ``power_note``) or something that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_layer_ms(raw: Any) -> list[list[tuple[int, int, float]]] | None:
    """The answer's ``layer_ms`` (per stage, ``[start, stop, ms]`` entries); None if absent or
    malformed -- an old runner simply gives no per-layer evidence."""
    if not isinstance(raw, list):
        return None
    try:
        return [[(int(a), int(b), float(ms)) for a, b, ms in stage] for stage in raw]
    except (TypeError, ValueError):
        return None


class RunnerBackend:
    """``main.py measure --config-json`` through a command callable (SSH transport or twin)."""

    def __init__(self, space: Space, run: Command, *, python: str = "python3",
                 entry: Sequence[str] = ("main.py",), label: str = "runner",
                 simulated: bool = False) -> None:
        self.space, self.run, self.python, self.entry = space, run, python, list(entry)
        self.label, self.simulated = label, simulated
        #: The segment models the device's bundle carries (None: any can be cut).
        self.shipped: set[tuple[str, tuple[str, ...], tuple[str, ...]]] | None = None
        #: The shipped ONNX segments are free in the batch (a throughput bundle for refinement).
        self.free_batch = False

    def argv(self, cand: Candidate, frames: int, warmup: int) -> list[str]:
        cfg = json.dumps(self.space.variant(cand), sort_keys=True, separators=(",", ":"))
        return [self.python, *self.entry, "measure", "--config-json", cfg, "--frames",
                str(frames), "--warmup", str(warmup), "--json"]

    def measure(self, cand: Candidate, frames: int, warmup: int) -> Measurement:
        t0 = time.perf_counter()
        out = self.run(self.argv(cand, frames, warmup))
        try:
            line = [ln for ln in out.strip().splitlines() if ln.startswith("{")][-1]
            data = json.loads(line)
        except (IndexError, ValueError) as exc:
            raise ExecutionError(f"{self.label}: `main.py measure` answered no JSON ({exc})",
                                 hint=f"output tail: {out[-300:]!r}") from None
        m = from_runner_json(data, time.perf_counter() - t0)
        m.simulated = m.simulated or self.simulated
        return m


class LocalBackend:
    """Real measurement on this host: the candidate's stages run pinned through run_stages."""

    label = "local"
    simulated = False
    #: It cuts its own segments, free in the batch where a candidate batches.
    free_batch = True

    def __init__(self, space: Space, graph, model_path, layer_frames: int = 3) -> None:
        self.space, self.graph, self.model_path = space, graph, model_path
        self.layer_frames = layer_frames

    def measure(self, cand: Candidate, frames: int, warmup: int) -> Measurement:
        from edgedeploy.execute import RunRequest, run_stages, stage_from_io
        from edgedeploy.runtime.stages import plan_stage_io

        ios = plan_stage_io(self.graph, [s.start for s in cand.stages[1:]])
        plans = [stage_from_io(io=io, cpus=tuple(ids), replicas=s.replicas, name=f"stage{k}",
                               batch=s.batch, inline=s.inline, fp16=self.space.fp16(cand, s))
                 for k, (io, s, ids) in enumerate(zip(ios, cand.stages, self.space.cpus(cand),
                                                      strict=True))]
        choices = dict(zip(self.space.layer_names, cand.choices, strict=True))
        t0 = time.perf_counter()
        report = run_stages(self.graph, plans, choices,
                            RunRequest(frames=frames, warmup=warmup), self.model_path)
        r = report.result
        stage_ms = [float(s.get("service_ms_mean", 0.0)) for s in report.stages]
        fps = float(r["throughput_fps"])
        layers = self.layer_ms(cand, plans, choices) if self.layer_frames > 0 else None
        return Measurement(fps, float(r["latency_ms_p50"]), stage_ms,
                           time.perf_counter() - t0, runs=[fps], layer_ms=layers,
                           mode=str(r.get("mode", "pipeline")))

    def layer_ms(self, cand: Candidate, plans, choices) -> list[list[tuple[int, int, float]]]:
        """Per-step times of each stage in-process on one replica's cores (the runner's
        ``chain_layer_ms``, so a bundle and this host report the same figure)."""
        from edgedeploy.execute import segments_for
        from edgedeploy.runtime.executor import random_inputs
        from edgedeploy.runtime.layouts import to_model
        from edgedeploy.runtime.runner import chain_layer_ms
        from edgedeploy.runtime.stages import GraphStage

        segs = segments_for(self.graph, [p.io for p in plans], choices, self.model_path)
        makers = [lambda io=p.io: GraphStage(self.graph, io, choices, segs,
                                             cpus=_allowed()).executor for p in plans]
        cpus = [list(p.cpus)[:max(1, len(p.cpus) // p.replicas)] for p in plans]
        feeds = to_model(self.graph, random_inputs(self.graph, 0))  # as the runner is fed
        raw = chain_layer_ms(makers, cpus, feeds, self.layer_frames)
        return [[(int(a), int(b), float(ms)) for a, b, ms in st] for st in raw]


def _allowed() -> list[int]:
    from edgedeploy.runtime.affinity import available_cpus

    return available_cpus()
