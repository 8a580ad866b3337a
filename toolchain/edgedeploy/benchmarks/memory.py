"""What a runner stage's memory should be, to compare with what it is (peak RSS <= 1.5 x
(weights + largest live activations + workspaces)).

The budget, precisely (:func:`memory_budget`, for one stage's executor ``ex``; the planner's
``planner.memory.MemoryModel`` computes the same figure from the plan, :func:`planner_estimate`):

* ``weights``: the bytes the stage must hold: packed weights of every primitive layer (after
  its offline transform: a Winograd layer counts its transformed kernels, not the raw OIHW
  ones), the raw weights of native ops, and the IR weights of the layers a segment engine
  (onnxruntime) runs (the session's own copy).
* ``activations_and_workspace``: walking the stage's layers in order (a segment's layers one by
  one, since the session frees its intermediates too), with every tensor live from its producer
  (or the stage's start, for inputs) to its last reader (or the stage's end, for outputs), the
  maximum over layers of (float32 bytes of the live tensors while the layer runs, its inputs and
  outputs included, + that layer's primitive ``workspace_bytes``; 0 for native ops and segment
  layers).
* ``budget = weights + activations_and_workspace``.

The measurement (:func:`measure_stage_memory`) is what a device runner's stage process does: in a
fresh process with the interpreter, numpy, onnxruntime and ``edgedeploy.runtime`` imported,
``runner_config.build_stage`` loads one stage from a bundle directory (graph, lazily read weights,
segment files, pre-optimised where shipped) and runs a few frames. The stage's input frames are
made before the baseline (a runner's frames arrive in shared memory), and so is onnxruntime's
per-process start-up (opened with a weightless session: ``engine_runtime``, whatever the model;
measured 9 MB, 8 MB of it onnxruntime's library code paged in, shared between processes, like
the import). ``peak_growth`` is the VmHWM
reached from there minus that baseline and ``ratio = peak_growth / budget``;
``ratio_with_engine_runtime`` counts onnxruntime's start-up too. No host-side object (the ONNX
model, the segment cutter, the planner) is in that process: :func:`write_bundle` prepares the
directory beforehand, in another process. As on a board, a deployed release's first start
has a child process write its fully optimised segments into the release's ``engine-cache/``
(``runtime.engines.ort_compile``) and opens those, as later starts do (``runtime.engines.
ort_files``; put the bundle under ``releases/``): measure twice for both. The child's peak is
reported beside the stage's (``optimizer_child_peak_rss``), not in it: it ends with the child.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import GraphExecutor, SegmentProvider
from edgedeploy.runtime.layouts import carried_shape
from edgedeploy.runtime.process_memory import rss_bytes

#: A weightless one-node model: opening it starts onnxruntime in a process (see the module doc).
PROBE_MODEL = "memory-probe.onnx"


def held_weight_bytes(ex: GraphExecutor) -> int:
    """Weights ``ex`` holds: packed for primitives, raw for native ops, and the IR weights of
    the layers its segment engines run (their sessions keep their own copy)."""
    total = 0
    for step in ex.steps:
        if step.kind == "primitive":
            total += sum(a.nbytes for a in step.packed.values())
        elif step.session is not None:
            total += step.weight_nbytes
        else:
            total += sum(a.nbytes for a in step.weights.values())
    return total


def memory_budget(ex: GraphExecutor) -> dict[str, int]:
    """Bytes of weights, the largest live activation set + workspace, and their sum."""
    graph = ex.graph
    sizes = {name: int(np.prod(t.shape)) * 4 for name, t in graph.tensors.items()}
    sizes.update({t.name: int(np.prod(t.shape)) * 4 for t in graph.inputs})
    layers = [(layer, step) for step in ex.steps for layer in step.layers]
    last: dict[str, int] = {}
    for k, (layer, _) in enumerate(layers):
        for t in layer.inputs:
            last[t] = k
    live = {t: sizes.get(t, 0) for t in ex.inputs}
    peak = 0
    for k, (layer, step) in enumerate(layers):
        work = (step.primitive.workspace_bytes(layer.descriptor)
                if step.primitive is not None else 0)
        produced = {t: sizes.get(t, 0) for t in layer.outputs}
        peak = max(peak, sum(live.values()) + sum(produced.values()) + work)
        live.update(produced)
        for t in layer.inputs:
            if last.get(t, -1) <= k and t not in ex.outputs:
                live.pop(t, None)
    weights = held_weight_bytes(ex)
    return {"weights": weights, "activations_and_workspace": peak, "budget": weights + peak}


def planner_estimate(graph: ir.Graph, stages: Sequence[Mapping[str, Any]],
                     choices: Mapping[str, str]) -> list[dict[str, int]]:
    """The planner's memory figure of every stage (``planner.memory``), for this host."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import CostModel
    from edgedeploy.planner.adapter import build_problem
    from edgedeploy.planner.memory import MemoryModel
    from edgedeploy.runtime.executor import default_choice

    target = load_target("local")
    problem = build_problem(graph, target, CostModel.for_target(target))
    model = MemoryModel(problem, graph)
    fmt = str(graph.source.get("format") or "onnx")
    names = [choices.get(layer.name) or default_choice(layer, fmt) for layer in graph.layers]
    out = []
    for st in stages:
        mem = model.stage(int(st["start"]), int(st["stop"]), names)
        out.append({"weights": mem.weights,
                    "activations_and_workspace": mem.activations_and_workspace,
                    "budget": mem.total})
    return out


def reset_peak_rss() -> bool:
    """Restart VmHWM from the current RSS (Linux's clear_refs 5), so a peak is measured from
    here and not from an import's transient; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def write_bundle(graph: ir.Graph, stages: Sequence[Mapping[str, Any]],
                 choices: Mapping[str, str], segment_provider: SegmentProvider | None,
                 out_dir: str | Path, *, optimize: bool = True) -> Path:
    """A minimal runner bundle of one plan with ``stages`` ({name, start, stop}), in the layout
    ``build_stage`` reads: ``app/config.json``, ``app/graph.json``, ``app/weights.npz``,
    ``app/segments/<k>.onnx`` and, with ``optimize``, their pre-optimised forms as
    ``edgedeploy build`` ships them; plus :data:`PROBE_MODEL` beside ``app/``."""
    from edgedeploy.generator.optimize import optimize_segment
    from edgedeploy.runtime.engines import engine_spec
    from edgedeploy.runtime.runner_config import CONFIG_PATH
    from edgedeploy.runtime.stages import StageIO, segment_key, segments_needed

    root = Path(out_dir)
    graph.save(root / "app")
    wanted: dict[Any, tuple[str, list[str], list[str]]] = {}
    for st in stages:
        io = StageIO(int(st["start"]), int(st["stop"]), (), ())
        for engine, ins, outs in segments_needed(graph, io, choices):
            wanted.setdefault(segment_key(engine, ins, outs), (engine, ins, outs))
    segments = []
    for k, (engine, ins, outs) in enumerate(wanted.values()):
        if segment_provider is None:
            raise ValueError(f"the choices run layers on {engine}: give a segment provider")
        model = segment_provider(engine, ins, outs)
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        rel = f"app/segments/{k}.{engine_spec(engine).segment_format}"
        (root / "app" / "segments").mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        extra = optimize_segment(data, rel) if optimize else None
        for path, blob in (extra or {}).items():
            (root / path).write_bytes(blob)
        segments.append({"format": engine_spec(engine).segment_format, "inputs": ins,
                         "outputs": outs, "file": rel})
    plan = [{"name": str(st.get("name") or f"stage{i}"), "start": int(st["start"]),
             "stop": int(st["stop"]), "cpus": list(st.get("cpus") or [])}
            for i, st in enumerate(stages)]
    config = {"schema_version": 1, "name": graph.name or "model", "active": "memory",
              "graph": "app/graph.json", "weights": "app/weights.npz", "segments": segments,
              "plans": {"memory": {"stages": plan, "choices": dict(choices)}}}
    (root / CONFIG_PATH).write_text(json.dumps(config, indent=1) + "\n")
    (root / PROBE_MODEL).write_bytes(_probe_model())
    return root


def write_stage_bundle(graph: ir.Graph, choices: Mapping[str, str],
                       segment_provider: SegmentProvider | None, out_dir: str | Path,
                       *, optimize: bool = True) -> Path:
    """:func:`write_bundle` with the whole graph as one stage."""
    stage = {"name": "stage0", "start": 0, "stop": len(graph.layers)}
    return write_bundle(graph, [stage], choices, segment_provider, out_dir, optimize=optimize)


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]) \
        .SerializeToString()


def start_engine_runtime(root: str | Path) -> int:
    """Start onnxruntime in this process with the bundle's weightless probe model; the RSS it
    took (its environment and kernel registry), 0 when there is no probe or no onnxruntime."""
    probe = Path(root) / PROBE_MODEL
    if not probe.is_file():
        return 0
    from edgedeploy.runtime.engines.onnxruntime import OrtSegment, release_free_heap
    from edgedeploy.runtime.errors import ExecutionError

    before = rss_bytes()
    try:
        session = OrtSegment(probe)  # default options: its own arena, gone when closed
    except ExecutionError:
        return 0
    session.run({"x": np.ones(1, np.float32)})
    session.close()
    gc.collect()
    release_free_heap()  # what stays is onnxruntime's, not the probe session's freed blocks
    return rss_bytes() - before


def measure_stage_memory(root: str | Path, stage: int = 0, frames: int = 3) -> dict[str, Any]:
    """Build stage ``stage`` of the bundle's plan as a device runner does and run ``frames``
    frames through it; its peak RSS growth against its budget (see the module doc).

    Call it in a fresh process that imported only the runner's modules.
    """
    from edgedeploy.runtime.runner_config import (
        CONFIG_PATH,
        build_stage,
        load_config,
        load_graph,
        resolve_stages,
    )

    cfg = load_config(root)
    plan = cfg.plan()
    structure = load_graph(cfg, 0, 0)
    stage_cfg = resolve_stages(structure, plan)[stage]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(carried_shape(structure, t)).astype(np.float32)
          for t in stage_cfg.inputs]
    engine_runtime = start_engine_runtime(root)
    gc.collect()
    baseline = rss_bytes()
    reset_peak_rss()
    built = build_stage(str(root), CONFIG_PATH, stage_cfg, plan.choices)
    start_peak = rss_bytes("VmHWM")
    for _ in range(frames):
        built(xs)
    peak = rss_bytes("VmHWM")
    budget = memory_budget(built.executor)
    sessions = [s.session for s in built.executor.steps if s.session is not None]
    grown = peak - baseline
    return {**budget, "stage": stage_cfg.name, "layers": [stage_cfg.start, stage_cfg.stop],
            "baseline_rss": baseline, "engine_runtime": engine_runtime,
            "start_peak_growth": start_peak - baseline, "peak_rss": peak, "peak_growth": grown,
            "steady_growth": rss_bytes() - baseline,
            "segments": len(sessions),
            "segments_preoptimized": sum(bool(getattr(s, "optimized", False)) for s in sessions),
            "segments_cached": sum(bool(getattr(s, "cached", False)) for s in sessions),
            "segments_optimized_in_child": sum(bool(getattr(s, "child_optimized", False))
                                               for s in sessions),
            # the optimizer children's peak RSS (whole processes: interpreter and imports too)
            "optimizer_child_peak_rss": max([int(getattr(s, "child_peak_rss", 0))
                                             for s in sessions] or [0]),
            "ratio": grown / budget["budget"] if budget["budget"] else None,
            "ratio_with_engine_runtime": (grown + engine_runtime) / budget["budget"]
            if budget["budget"] else None}
