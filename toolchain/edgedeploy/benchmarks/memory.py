"""What a runner's memory should be, to compare with what it is (peak RSS <= 1.5 x
(weights + largest live activations + workspaces)).

The budget, precisely (:func:`memory_budget`, for one stage's executor ``ex``):

* ``weights``: the bytes the stage must hold: packed weights of every primitive layer (after
  its offline transform: a Winograd layer counts its transformed kernels, not the raw OIHW
  ones), the raw weights of native ops, and the IR weights of the layers an onnxruntime
  session runs (the session's own copy).
* ``activations_and_workspace``: walking the stage's layers in order (an onnxruntime segment's
  layers one by one, since the session frees its intermediates too), with every tensor live from
  its producer (or the stage's start, for inputs) to its last reader (or the stage's end, for
  outputs), the maximum over layers of (float32 bytes of the live tensors while the layer runs,
  its inputs and outputs included, + that layer's primitive ``workspace_bytes``; 0 for native
  ops and onnxruntime layers).
* ``budget = weights + activations_and_workspace``.

The measurement (:func:`measure_stage_memory`) is what a device runner does: in a fresh process
with the interpreter, numpy, onnxruntime and ``edgedeploy.runtime`` imported (the baseline),
``runner_config.build_stage`` loads the stage from a bundle directory (graph, lazily read
weights, onnxruntime segment files) and runs a few frames; ``peak_growth`` is VmHWM minus the
baseline VmRSS and ``ratio = peak_growth / budget``. No host-side object (the ONNX model, the
segment cutter, the planner) is in that process: :func:`write_stage_bundle` prepares the
directory beforehand, in another process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import GraphExecutor, SegmentProvider


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
    weights = ex.weight_bytes()
    return {"weights": weights, "activations_and_workspace": peak, "budget": weights + peak}


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (or VmHWM: its peak) from /proc, in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def write_stage_bundle(graph: ir.Graph, choices: Mapping[str, str],
                       segment_provider: SegmentProvider | None, out_dir: str | Path) -> Path:
    """A minimal runner bundle (one single-stage plan) in the layout ``build_stage`` reads:
    ``app/config.json``, ``app/graph.json``, ``app/weights.npz``, ``app/segments/<k>.onnx``."""
    from edgedeploy.runtime.engines import engine_spec
    from edgedeploy.runtime.runner_config import CONFIG_PATH
    from edgedeploy.runtime.stages import StageIO, segments_needed

    root = Path(out_dir)
    graph.save(root / "app")
    io = StageIO(0, len(graph.layers), (), ())
    segments = []
    for k, (engine, ins, outs) in enumerate(segments_needed(graph, io, choices)):
        if segment_provider is None:
            raise ValueError(f"the choices run layers on {engine}: give a segment provider")
        model = segment_provider(engine, ins, outs)
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        fmt = engine_spec(engine).segment_format
        (root / "app" / "segments").mkdir(parents=True, exist_ok=True)
        (root / "app" / "segments" / f"{k}.{fmt}").write_bytes(data)
        segments.append({"format": fmt, "inputs": ins, "outputs": outs,
                         "file": f"app/segments/{k}.{fmt}"})
    stage = {"name": "stage0", "start": 0, "stop": len(graph.layers), "cpus": []}
    config = {"schema_version": 1, "name": graph.name or "model", "active": "memory",
              "graph": "app/graph.json", "weights": "app/weights.npz", "segments": segments,
              "plans": {"memory": {"stages": [stage], "choices": dict(choices)}}}
    (root / CONFIG_PATH).write_text(json.dumps(config, indent=1) + "\n")
    return root


def measure_stage_memory(root: str | Path, frames: int = 3) -> dict[str, Any]:
    """Build the bundle's (first) stage as a device runner does and run ``frames`` frames.

    Call it in a fresh process that imported only the runner's modules: the baseline is this
    process's RSS on entry, the peak its VmHWM after the frames.
    """
    from edgedeploy.runtime.executor import random_inputs
    from edgedeploy.runtime.runner_config import (
        CONFIG_PATH,
        build_stage,
        load_config,
        load_graph,
        resolve_stages,
    )

    baseline = rss_bytes()
    cfg = load_config(root)
    plan = cfg.plan()
    structure = load_graph(cfg, 0, 0)
    stage_cfg = resolve_stages(structure, plan)[0]
    stage = build_stage(str(root), CONFIG_PATH, stage_cfg, plan.choices)
    feeds = random_inputs(structure)
    xs = [feeds[t] for t in stage_cfg.inputs]
    for _ in range(frames):
        stage(xs)
    peak = rss_bytes("VmHWM")
    budget = memory_budget(stage.executor)
    grown = peak - baseline
    return {**budget, "baseline_rss": baseline, "peak_rss": peak, "peak_growth": grown,
            "steady_growth": rss_bytes() - baseline,
            "ratio": grown / budget["budget"] if budget["budget"] else None}
