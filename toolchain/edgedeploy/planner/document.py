"""The lockfile document of a solved plan (layout: see README "Plan lockfile" and lock.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedeploy.planner.lock import PLANNER_VERSION, SCHEMA_VERSION, relpath
from edgedeploy.planner.partition import Candidate, Metrics
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.solve import Solution, stage_choices
from edgedeploy.runtime import ir
from edgedeploy.runtime.stages import plan_stage_io


def predicted(m: Metrics) -> dict[str, float]:
    return {"throughput_fps": m.throughput_fps, "latency_ms": m.latency_ms,
            "energy_mj": m.energy_mj, "power_w": m.power_w, "period_ms": m.period_ms}


def assign_cpus(problem: Problem, cand: Candidate) -> list[list[int]]:
    """Concrete logical CPUs per stage: each cluster's ids handed out in pipeline order."""
    used: dict[str, int] = {}
    out = []
    for s in cand.stages:
        cfg = problem.configs[s.config]
        cl = problem.cluster(cfg.cluster)
        n = 0 if cl.is_gpu else cfg.cores * s.replicas
        k = used.get(cl.name, 0)
        out.append(list(cl.cpu_ids[k:k + n]))
        used[cl.name] = k + n
    return out


def _mix(names: list[str]) -> dict[str, int]:
    mix: dict[str, int] = {}
    for n in names:
        mix[n] = mix.get(n, 0) + 1
    return dict(sorted(mix.items()))


def build_document(manifest, alias: str, board: str, target, graph: ir.Graph, problem: Problem,
                   sol: Solution, inputs: dict[str, Any], plan_path: Path) -> dict[str, Any]:
    best = sol.best
    choices = sol.choices(problem)
    cpus = assign_cpus(problem, best)
    ios = plan_stage_io(graph, [s.start for s in best.stages[1:]])
    stages, layers = [], []
    for k, (s, io, ids) in enumerate(zip(best.stages, ios, cpus, strict=True)):
        cfg = problem.configs[s.config]
        stages.append({"index": k, "name": f"stage{k}", "start": s.start, "stop": s.stop,
                       "cluster": cfg.cluster, "cores": cfg.cores, "replicas": s.replicas,
                       "cpus": ids, "inputs": list(io.inputs), "outputs": list(io.outputs),
                       "predicted_ms": best.metrics.stage_ms[k],
                       "primitive_mix": _mix(choices[s.start:s.stop])})
        for i in range(s.start, s.stop):
            layers.append({"name": graph.layers[i].name, "op": graph.layers[i].op,
                           "choice": choices[i], "stage": k,
                           "predicted_ms": float(sol.selection.layer_ms[i, s.config])})
    pareto = []
    for cand in sol.pareto:
        names = stage_choices(problem, sol.selection, cand)
        pareto.append({"predicted": predicted(cand.metrics), "stages": [
            {"start": s.start, "stop": s.stop, "cluster": problem.configs[s.config].cluster,
             "cores": problem.configs[s.config].cores, "replicas": s.replicas, "cpus": ids,
             "choices": names[s.start:s.stop]}
            for s, ids in zip(cand.stages, assign_cpus(problem, cand), strict=True)]})
    c = manifest.constraints
    spec = manifest.model
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "edgedeploy-plan",
        "name": manifest.name,
        "objective": sol.objective,
        "constraints": {"max_latency_ms": c.max_latency_ms,
                        "min_throughput_fps": c.min_throughput_fps,
                        "max_power_w": c.max_power_w, "max_memory_mb": c.max_memory_mb},
        "pipeline": {"max_stages": manifest.pipeline.max_stages,
                     "allow_replication": manifest.pipeline.allow_replication},
        "primitives": {"allow": list(manifest.primitives.allow),
                       "deny": list(manifest.primitives.deny)},
        "target": {"alias": alias, "board": board if "/" not in board else
                   relpath(board, plan_path.parent), "name": target.name,
                   "simulated": bool(target.simulated)},
        "model": {"path": relpath(spec.path, plan_path.parent), "format": spec.format,
                  "input_shape": list(graph.inputs[0].shape) if graph.inputs else [],
                  "layers": len(graph.layers)},
        "inputs": inputs,
        "planner": {"version": PLANNER_VERSION, "exact_selection": sol.selection.exact,
                    "exact_mapping": sol.mapping.exact,
                    "candidates": len(sol.mapping.candidates)},
        "predicted": predicted(best.metrics),
        "stages": stages,
        "layers": layers,
        "baselines": {b.name: {"description": b.description, "predicted": predicted(b.metrics)}
                      for b in sol.baselines},
        "pareto": pareto,
    }
