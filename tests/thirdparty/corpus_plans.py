"""What the corpus tests share: a manifest that plans a model for a board never profiled, and
a lockfile's stages run in order beside the model's stock runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedeploy import execute
from edgedeploy.importers import load_model
from edgedeploy.planner.api import stage_plans
from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import random_inputs
from edgedeploy.runtime.layouts import to_ir, to_model
from edgedeploy.runtime.stages import GraphStage
from edgedeploy.schemas.plan import load_plan


def manifest_for(folder: Path, path: Path, shapes: object = None) -> Path:
    """A manifest planning ``path`` for a Raspberry Pi 4 (a board this host never profiled,
    so the plan comes from the cost model's prior: deterministic and quick); ``shapes`` fix
    dynamic dimensions (one N,C,H,W shape, or a mapping by input name)."""
    lines = ["name: corpus", "model:", f"  path: {path}"]
    if isinstance(shapes, dict):
        lines.append("  input_shapes:")
        lines += [f"    {name!r}: {list(shape)}" for name, shape in shapes.items()]
    elif shapes:
        lines.append(f"  input_shape: {list(shapes)}")
    lines += ["targets:", "  pi:", "    board: rpi4", "    host: pi.local",
              "output:", "  plans_dir: ."]
    manifest = folder / "edgedeploy.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def run_plan(plan_file: Path, path: Path, shapes: object = None, graph: ir.Graph | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """The lockfile's stages, in order, with its choices; and the stock runtime's answer.
    ``graph``: the model as the test imported it already (a large one takes seconds)."""
    plan = load_plan(plan_file)
    graph = graph or load_model(path, input_shape=shapes)
    stages = stage_plans(plan, graph)
    segments = execute.segments_for(graph, [s.io for s in stages], plan.choices, path)
    feeds = random_inputs(graph, seed=11)
    env = to_model(graph, feeds)  # a pipeline's edges speak the model's own layout
    for stage in stages:
        run = GraphStage(graph, stage.io, plan.choices, segments)
        outs = run([env[t] for t in stage.io.inputs])
        for name, value in zip(stage.io.outputs, outs, strict=True):
            assert value.dtype == np.dtype(graph.tensors[name].dtype), name
            env[name] = value
        run.executor.close()
    runtime, ref = execute.reference_outputs(graph, feeds)
    return to_ir(graph, {k: env[k] for k in ref}), ref, runtime
