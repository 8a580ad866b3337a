"""Running a model on this host: stage specs for the pipeline executor, and verification.

Host side of ``edgedeploy run``: it imports the model, decides how layers run (per-layer choices),
cuts onnxruntime segments from the source model, builds :class:`StageSpec` objects whose factory
rebuilds the stage inside its pinned process, runs frames and checks outputs against the reference
runtime of the input format (onnxruntime for ONNX, LiteRT for TFLite).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.errors import InputError
from edgedeploy.runtime import ir
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.executor import default_choice, max_rel_error
from edgedeploy.runtime.layouts import carried_shape, to_ir, to_model
from edgedeploy.runtime.runner_config import StageConfig
from edgedeploy.runtime.stage_weights import StageWeights
from edgedeploy.runtime.stages import (
    GraphStage,
    SegmentKey,
    StageIO,
    ring_dtype,
    segment_key,
    segments_needed,
)
from edgedeploy.runtime.vocab import ONNX

SegmentMap = dict[SegmentKey, bytes]
#: (engine, input names, output names) -> the segment model's bytes
SegmentProvider = Callable[[str, list[str], list[str]], bytes]


def stage_from_io(io: StageIO, cpus: Sequence[int], replicas: int = 1, name: str = "",
                  **engine: Any) -> StageConfig:
    """A stage of ``edgedeploy run``'s simple splits, in the runner's own config type."""
    return StageConfig(name=name, start=io.start, stop=io.stop, inputs=tuple(io.inputs),
                       outputs=tuple(io.outputs), cpus=tuple(cpus), replicas=replicas, **engine)


@dataclass
class RunRequest:
    frames: int = 100
    warmup: int = 5
    verify: bool = False
    seed: int = 0
    pool: int = 4  # distinct random inputs cycled through (generating per frame would dominate)
    sequential: bool = False  # one process, no pipeline


@dataclass
class RunReport:
    model: str
    result: dict[str, Any]
    stages: list[dict[str, Any]]
    choices: dict[str, str]
    max_rel_error: float | None = None
    reference: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "model": self.model,
            "throughput_fps": self.result["throughput_fps"],
            "latency_ms_p50": self.result["latency_ms_p50"],
            "latency_ms_p99": self.result["latency_ms_p99"],
            "frames": self.result.get("frames"),
            "stages": self.stages,
            "primitive_mix": primitive_mix(self.choices.values()),
        }
        if self.max_rel_error is not None:
            out["max_rel_error"] = self.max_rel_error
            out["reference"] = self.reference
        out.update(self.extra)
        return out


def primitive_mix(choices: Iterable[str]) -> dict[str, int]:
    """How many layers run with each choice, sorted by choice (plans, reports, lockfiles)."""
    mix: dict[str, int] = {}
    for choice in choices:
        mix[choice] = mix.get(choice, 0) + 1
    return dict(sorted(mix.items()))


# --- choices and splits -----------------------------------------------------------------------
def resolve_choices(graph: ir.Graph, primitive: str = "auto") -> dict[str, str]:
    """``auto``: the runtime default per layer; a segment engine (``onnxruntime``, ``litert``):
    every layer through it; a primitive name (``winograd_f4x3`` or ``winograd_f4x3/nchw``):
    that primitive wherever it applies."""
    from edgedeploy.runtime import primitives
    from edgedeploy.runtime.engines import ENGINES, is_segment_choice

    fmt = str(graph.source.get("format") or ONNX)
    if primitive == "auto":
        return {layer.name: default_choice(layer, fmt) for layer in graph.layers}
    if is_segment_choice(primitive):
        if fmt not in ENGINES[primitive].formats:
            raise InputError(f"--primitive {primitive} cannot run a {fmt} model",
                             hint="engines for it: " + ", ".join(
                                 n for n, s in sorted(ENGINES.items()) if fmt in s.formats))
        return {layer.name: primitive for layer in graph.layers}
    names = primitives.names()
    full = primitive if "/" in primitive else f"{primitive}/nchw"
    if full not in names:
        from edgedeploy.errors import did_you_mean

        raise InputError(f"unknown primitive {primitive!r}{did_you_mean(full, names)}",
            hint="one of: auto, onnxruntime, litert, "
            + ", ".join(n for n in names if not n.startswith("layout")))
    prim = primitives.get(full)
    choices = {}
    for layer in graph.layers:
        use = layer.op == ir.CONV2D and prim.applies(layer.descriptor)
        choices[layer.name] = full if use else default_choice(layer, fmt)
    return choices


def balanced_cuts(graph: ir.Graph, stages: int) -> list[int]:
    """Cut points that split the graph's FLOPs as evenly as possible into ``stages`` parts."""
    n = len(graph.layers)
    if stages < 1 or stages > n:
        raise InputError(f"--stages must be between 1 and the number of layers ({n})")
    flops = np.array([max(layer.descriptor.flops, 1) for layer in graph.layers], dtype=np.float64)
    prefix = np.cumsum(flops)
    cuts: list[int] = []
    for k in range(1, stages):
        target = prefix[-1] * k / stages
        cut = int(np.searchsorted(prefix, target)) + 1
        lo = (cuts[-1] + 1) if cuts else 1
        hi = n - (stages - k)
        cuts.append(min(max(cut, lo), hi))
    return cuts


def parse_cores(text: str | None, stages: int) -> list[tuple[int, ...]]:
    """``"0:1"`` -> stage 0 on core 0, stage 1 on core 1; ``"0,1"`` -> one stage on cores 0,1.

    Without ``text`` the available cores are split evenly (shared when fewer than stages).
    """
    cpus = available_cpus()
    if not text:
        if stages <= len(cpus):
            parts = np.array_split(np.array(cpus), stages)
            return [tuple(int(c) for c in p) for p in parts]
        return [tuple(cpus)] * stages
    groups = []
    for part in text.split(":"):
        try:
            ids = tuple(int(c) for c in part.split(",") if c.strip() != "")
        except ValueError:
            raise InputError(f"--cores {text!r}: expected core ids like 0,1:2,3") from None
        if not ids:
            raise InputError(f"--cores {text!r}: empty core group")
        unknown = sorted(set(ids) - set(cpus))
        if unknown:
            raise InputError(f"--cores {text!r}: cores {unknown} are not available here",
                             hint=f"available cores: {cpus}")
        groups.append(ids)
    if len(groups) == 1 and stages > 1:
        return groups * stages
    if len(groups) != stages:
        raise InputError(f"--cores gives {len(groups)} core groups for {stages} stages",
                         hint="separate the stages' core groups with ':' (e.g. 0:1)")
    return groups


# --- ONNX segments and references ------------------------------------------------------------
def segments_for(graph: ir.Graph, ios: Sequence[StageIO], choices: Mapping[str, str],
                 model_path: str | Path | None, *, dynamic_batch: bool = False,
                 provide: SegmentProvider | None = None) -> SegmentMap:
    """Every engine segment the stages need, cut from the source model (with a free leading
    batch axis when a stage micro-batches: ``dynamic_batch``) by ``provide`` (a
    ``segment_provider`` for these two, shared by callers that start several systems)."""
    wanted = [seg for io in ios for seg in segments_needed(graph, io, choices)]
    if not wanted:
        return {}
    if provide is None:
        from edgedeploy.importers.segments import segment_provider

        provide = segment_provider(graph, model_path, dynamic_batch=dynamic_batch)
    return {segment_key(e, i, o): provide(e, list(i), list(o)) for e, i, o in wanted}


def litert_input_shapes(graph: ir.Graph) -> dict[str, list[int]]:
    """The .tflite model's input shapes (its own layout) as the IR has them: what LiteRT must
    allocate before a first run where the file holds placeholders for dynamic sizes (a mel
    front end's 1x1, which its convolutions cannot even prepare)."""
    return {m["name"]: list(m["shape"]) for m in graph.source.get("inputs", [])}


def reference_outputs(graph: ir.Graph, feeds: Mapping[str, np.ndarray], *,
                      fp16: bool = False) -> tuple[str, dict]:
    """Outputs of the format's own runtime for IR-layout feeds, returned in IR layout
    (``fp16``: LiteRT computing fp16, as an fp16 plan's stages do)."""
    fmt = graph.source.get("format")
    path = graph.source.get("path")
    if fmt == "onnx":
        from edgedeploy.runtime.engines.onnxruntime import OrtSegment

        session = OrtSegment(path)
        return "onnxruntime", session.run(dict(feeds))
    if fmt == "tflite":
        from edgedeploy.runtime.engines.litert import LiteRTHalfModel, LiteRTModel

        with (LiteRTHalfModel if fp16 else LiteRTModel)(
                path, input_shapes=litert_input_shapes(graph)) as model:
            out = model.run(to_model(graph, feeds))
        names = [meta["name"] for meta in graph.source.get("outputs", [])]
        return "litert-fp16" if fp16 else "litert", to_ir(graph, {n: out[n] for n in names})
    raise InputError(f"no reference runtime for format {fmt!r}")


def stateful_reference(graph: ir.Graph, frames: Sequence[Mapping[str, np.ndarray]]
                       ) -> tuple[str, dict]:
    """LiteRT's outputs for the last of ``frames`` fed in order to one fresh interpreter: a
    streaming model's answer depends on every frame before it."""
    from edgedeploy.runtime.engines.litert import LiteRTModel

    model = LiteRTModel(graph.source["path"], input_shapes=litert_input_shapes(graph))
    out: dict[str, np.ndarray] = {}
    for feeds in frames:
        out = model.run(to_model(graph, feeds))
    return "litert", to_ir(graph, out)


# --- stages ------------------------------------------------------------------------------------
def build_graph_stage(graph: ir.Graph, stage: StageConfig, choices: Mapping[str, str],
                      segments: SegmentMap) -> GraphStage:
    """Pipeline factory (module-level so spawn can pickle it): the stage's callable, built in the
    replica's process on the cores that replica was pinned to (its share of the stage's)."""
    return GraphStage(graph, stage.io, choices, segments, cpus=available_cpus(),
                      options=stage.engine_options())


def _stage_graph(graph: ir.Graph, stage: StageConfig, choices: Mapping[str, str]) -> ir.Graph:
    """``graph`` as a stage's process gets it: with the weights of its own layers only, and of
    those in engine segments only their sizes (see runtime.stage_weights)."""
    weights = StageWeights.of(graph, stage.io.start, stage.io.stop, choices)
    return replace(graph, weights=weights)  # type: ignore[arg-type]


def stage_specs(graph: ir.Graph, plans: Sequence[StageConfig], choices: Mapping[str, str],
                segments: SegmentMap) -> list:
    from edgedeploy.runtime.pipeline import StageSpec, TensorSpec

    def specs(names: Sequence[str]) -> tuple:
        return tuple(TensorSpec(carried_shape(graph, t), ring_dtype(graph, t)) for t in names)

    out = []
    for k, sp in enumerate(plans):
        out.append(StageSpec(
            name=sp.name or f"stage{k}", cpus=tuple(sp.cpus), replicas=sp.replicas,
            factory=build_graph_stage, batch=sp.batch, inline=sp.inline,
            factory_args=(_stage_graph(graph, sp, choices), sp, dict(choices), segments),
            inputs=specs(sp.io.inputs), outputs=specs(sp.io.outputs)))
    return out


def run_stages(graph: ir.Graph, plans: Sequence[StageConfig], choices: Mapping[str, str],
               request: RunRequest, model_path: str | Path | None = None) -> RunReport:
    """Run frames through the stages (pipeline processes, or in-process when sequential)."""
    from edgedeploy.runtime.executor import random_inputs
    from edgedeploy.runtime.inline_pipeline import open_pipeline
    from edgedeploy.runtime.pipeline import run_sequential

    segments = segments_for(graph, [p.io for p in plans], choices, model_path,
                            dynamic_batch=any(p.batch > 1 for p in plans))
    pool = [random_inputs(graph, request.seed + k) for k in range(max(1, request.pool))]
    input_names = list(plans[0].io.inputs)
    frames = [[feeds[n] for n in input_names] for feeds in map(partial(to_model, graph), pool)]

    def frame(k: int) -> list[np.ndarray]:
        return frames[k % len(frames)]

    if request.sequential:
        fns = [(p.name or f"stage{k}", GraphStage(graph, p.io, choices, segments,
                                                   options=p.engine_options()))
               for k, p in enumerate(plans)]
        result = run_sequential(fns, frame, request.frames, warmup=request.warmup)
    else:
        with open_pipeline(stage_specs(graph, plans, choices, segments)) as pipe:
            result = pipe.run(frame, request.frames, warmup=request.warmup)
    report = RunReport(model=str(model_path or graph.name), result=result.to_dict(),
                       stages=result.to_dict()["stages"], choices=dict(choices))
    if request.verify and result.outputs:
        total = request.warmup + request.frames
        if graph.source.get("stateful"):  # its state is the frames its replica saw, replayed
            replicas = 1 if request.sequential else plans[0].replicas
            seen = [pool[k % len(pool)] for k in range(total)
                    if k % replicas == (total - 1) % replicas]
            ref_name, ref = stateful_reference(graph, seen)
        else:
            ref_name, ref = reference_outputs(graph, pool[(total - 1) % len(pool)])
        got = to_ir(graph, dict(zip(plans[-1].io.outputs, result.outputs[-1], strict=True)))
        report.max_rel_error = max_rel_error({k: got[k] for k in ref}, ref)
        report.reference = ref_name
    return report
