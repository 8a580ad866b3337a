"""The typed :class:`~edgedeploy.schemas.plan.Plan` of a solved problem (see lock.py for the file).

This is where the solver's internal indices become the plan's words: every stage and layer names
its engine (``runtime.engines``), a GPU stage names its engine, device, providers and feeding core
and is marked ``verified: false``, and LiteRT runs are aligned to whole TFLite operators
(:func:`align_segments`) so every segment the plan names can be cut and run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgedeploy.execute import primitive_mix
from edgedeploy.planner.adapter import gpu_engine, gpu_feeder
from edgedeploy.planner.half import computes_fp16, half_clusters
from edgedeploy.planner.lock import PLANNER_VERSION, relpath
from edgedeploy.planner.partition import Candidate, Metrics
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.solve import Solution
from edgedeploy.runtime import ir
from edgedeploy.runtime.engines import ENGINES, engine_of
from edgedeploy.runtime.executor import default_choice
from edgedeploy.runtime.layouts import carried_shape
from edgedeploy.runtime.stages import plan_stage_io
from edgedeploy.runtime.vocab import GPU_CLUSTER, LITERT, LOCAL, TFLITE
from edgedeploy.schemas.plan import (
    SCHEMA_VERSION,
    Baseline,
    Decision,
    ParetoPoint,
    ParetoStage,
    Plan,
    PlanLayer,
    PlanStage,
    PrecisionChoice,
    Predicted,
    WinogradChoice,
)


def predicted(m: Metrics) -> Predicted:
    return Predicted(throughput_fps=m.throughput_fps, latency_ms=m.latency_ms,
                     energy_mj=m.energy_mj, power_w=m.power_w, period_ms=m.period_ms)


def assign_cpus(problem: Problem, cand: Candidate, feeder: int | None = None) -> list[list[int]]:
    """Concrete logical CPUs per stage: each cluster's ids handed out in pipeline order; a GPU
    stage gets its feeding core (reserved for it when the problem was built)."""
    used: dict[str, int] = {}
    out = []
    for s in cand.stages:
        cfg = problem.configs[s.config]
        cl = problem.cluster(cfg.cluster)
        if cl.is_gpu:
            out.append([feeder] if feeder is not None else [])
            continue
        n = cfg.cores * s.replicas
        k = used.get(cl.name, 0)
        out.append(list(cl.cpu_ids[k:k + n]))
        used[cl.name] = k + n
    return out


def align_segments(graph: ir.Graph, choices: Sequence[str],
                   ranges: Sequence[tuple[int, int]]) -> list[str]:
    """Choices with every LiteRT run shrunk to whole TFLite operators within its stage.

    A LiteRT segment is cut from the .tflite by operator, so it must start and end where no
    operator is split between IR layers; layers left outside get their native default (the
    layers an operator expands into are IR ops the native engine runs).
    """
    out = list(choices)
    if graph.source.get("format") != TFLITE or LITERT not in out:
        return out
    from edgedeploy.importers.tflite_cut import litert_boundaries

    bounds = litert_boundaries(graph)
    for a, b in ranges:
        i = a
        while i < b:
            if out[i] != LITERT:
                i += 1
                continue
            j = i
            while j < b and out[j] == LITERT:
                j += 1
            lo = min((k for k in bounds if i <= k <= j), default=j)
            hi = max((k for k in bounds if lo <= k <= j), default=lo)
            for k in [*range(i, lo), *range(hi, j)]:
                out[k] = default_choice(graph.layers[k], TFLITE)
            i = j
    return out


def device_choices(names: Sequence[str], spans: Sequence[tuple[int, int, str]],
                   gpu: str | None) -> list[str]:
    """Internal GPU options (onnxruntime priced on ``gpu:1``) named by the GPU engine, for
    every ``(start, stop, cluster)`` span on the GPU."""
    out = list(names)
    for start, stop, cluster in spans:
        if cluster == GPU_CLUSTER and gpu is not None:
            out[start:stop] = [gpu] * (stop - start)
    return out


def plan_choices(problem: Problem, graph: ir.Graph, sol: Solution, cand: Candidate,
                 target: Any) -> list[str]:
    """A candidate's per-layer choices as the runner runs them (engines named, aligned)."""
    names = sol.candidate_choices(problem, cand)
    spans = [(s.start, s.stop, problem.configs[s.config].cluster) for s in cand.stages]
    names = device_choices(names, spans, gpu_engine(target))
    return align_segments(graph, names, [(s.start, s.stop) for s in cand.stages])


def plan_stage(k: int, io: Any, cluster: str, cores: int, replicas: int, cpus: Sequence[int],
               choices: Sequence[str], gpu: str | None, *, half: frozenset[str] = frozenset(),
               **figures: Any) -> PlanStage:
    """Stage ``k`` of a lockfile: its layers' ``choices`` counted and their engines named, a
    GPU stage with its engine's fields (``_gpu_fields``), ``fp16`` where its LiteRT segments
    compute it (``half``: the clusters that do, ``planner.half.half_clusters``);
    ``figures``: predicted/measured ms and any field to override. The one builder the planner,
    refinement and measure share."""
    fields = {"fp16": computes_fp16(cluster, choices, half), **_gpu_fields(gpu, cluster),
              **figures}
    return PlanStage(index=k, name=f"stage{k}", start=io.start, stop=io.stop, cluster=cluster,
                     cores=cores, replicas=replicas, cpus=list(cpus), inputs=list(io.inputs),
                     outputs=list(io.outputs), primitive_mix=primitive_mix(choices),
                     engines=sorted({engine_of(c) for c in choices}),
                     **{"predicted_ms": None, **fields})


def plan_layers(graph: ir.Graph, k: int, start: int, choices: Sequence[str],
                predicted_ms: Sequence[float | None] | None = None) -> list[PlanLayer]:
    """The lockfile entries of stage ``k``'s layers, from ``start``, one per choice."""
    ms = list(predicted_ms) if predicted_ms is not None else [None] * len(choices)
    layers = graph.layers[start:start + len(choices)]
    return [PlanLayer(name=lyr.name, op=lyr.op, choice=c, engine=engine_of(c), stage=k,
                      predicted_ms=ms[j], precision=_not_fp32(lyr.descriptor.precision))
            for j, (lyr, c) in enumerate(zip(layers, choices, strict=True))]


def _not_fp32(precision: str) -> str | None:
    return None if precision == "fp32" else precision


def _gpu_fields(engine: str | None, cluster: str) -> dict[str, Any]:
    if cluster != GPU_CLUSTER or engine is None:
        return {}
    return {"engine": engine, "device_id": 0, "fp16": False, "verified": False,
            "providers": list(ENGINES[engine].providers)}


def _baseline(problem: Problem, b: Any, feeder: int | None, half: frozenset[str]) -> Baseline:
    """A baseline for the lockfile: its predicted figures and, when it is an ordinary plan,
    its stage (so measurement can run it beside the plan). Under precision fp16 its LiteRT
    stages compute fp16 too: the stock runtime as it runs in that precision."""
    stages = None
    if b.runnable:
        cand = Candidate(b.stages, b.metrics)
        stages = _pareto_stages(problem, cand, b.choices, assign_cpus(problem, cand, feeder),
                                half)
    return Baseline(description=b.description, predicted=predicted(b.metrics), stages=stages)


def _pareto_stages(problem: Problem, cand: Candidate, choices: Sequence[str],
                   cpus: Sequence[Sequence[int]], half: frozenset[str],
                   gpu: str | None = None) -> list[ParetoStage]:
    """A candidate's stages as a Pareto point or a baseline holds them: each with its layers'
    ``choices``, ``fp16`` where its LiteRT segments compute it, a GPU stage's engine fields."""
    out = []
    for s, ids in zip(cand.stages, cpus, strict=True):
        cfg = problem.configs[s.config]
        mine = list(choices[s.start:s.stop])
        device = {k: v for k, v in _gpu_fields(gpu, cfg.cluster).items()
                  if k in ("engine", "device_id", "fp16")}
        out.append(ParetoStage(start=s.start, stop=s.stop, cluster=cfg.cluster, cores=cfg.cores,
                               replicas=s.replicas, cpus=list(ids), choices=mine,
                               **{"fp16": computes_fp16(cfg.cluster, mine, half), **device}))
    return out


def unmeasured(manifest: Any, alias: str) -> Decision:
    """The decision of a plan from the cost model alone (measure-to-decide replaces it)."""
    ref = manifest.target(alias) if alias in manifest.targets else None
    if ref is not None and ref.transport == "ssh":
        why = (f"{alias} is reached over SSH and was not measured at plan time (measurement "
               "off, the board unreachable or its runner serving: `plan` said which): "
               "`edgedeploy push` measures on the board (refinement starts from this plan)")
    else:
        why = "planned from the cost model alone (no measurement on the target)"
    return Decision(measured=False, target=alias, reason=why)


def _planned_model(manifest, graph: ir.Graph) -> Path:
    from edgedeploy.planner.precision import planned_model

    return planned_model(manifest, graph)


def precision_choice(graph: ir.Graph, plan_path: Path) -> PrecisionChoice | None:
    """The lockfile's ``precision`` block from the graph's record (``model.precision`` int8 or
    auto), paths relative to the lockfile; None for a model planned as given."""
    from edgedeploy.planner.precision import SOURCE_KEY

    record = graph.source.get(SOURCE_KEY)
    if not record:
        return None
    calib = dict(record["calibration"])
    if calib["source"] != "random":
        calib["source"] = relpath(calib["source"], plan_path.parent)
    model = record.get("model")
    return PrecisionChoice.model_validate(
        {**record, "calibration": calib,
         "model": relpath(model, plan_path.parent) if model else None})


def winograd_choice(graph: ir.Graph, plan_path: Path) -> WinogradChoice | None:
    """The lockfile's ``winograd`` block from the record of a rewritten model's graph
    (``planner.winograd``), its file relative to the lockfile; None for the model as given."""
    from edgedeploy.planner.winograd import SOURCE_KEY

    record = graph.source.get(SOURCE_KEY)
    if not record:
        return None
    model = record.get("model")
    return WinogradChoice.model_validate(
        {**record, "model": relpath(model, plan_path.parent) if model else None})


def build_plan(manifest, alias: str, board: str, target, graph: ir.Graph, problem: Problem,
               sol: Solution, inputs: dict[str, Any], plan_path: Path) -> Plan:
    """The typed plan of ``sol`` (its best candidate, baselines and Pareto set)."""
    best = sol.best
    gpu, feeder = gpu_engine(target), gpu_feeder(target)
    choices = plan_choices(problem, graph, sol, best, target)
    cpus = assign_cpus(problem, best, feeder)
    ios = plan_stage_io(graph, [s.start for s in best.stages[1:]])
    half = half_clusters(graph, target)
    stages, layers = [], []
    for k, (s, io, ids) in enumerate(zip(best.stages, ios, cpus, strict=True)):
        cfg = problem.configs[s.config]
        mine = choices[s.start:s.stop]
        stage = plan_stage(k, io, cfg.cluster, cfg.cores, s.replicas, ids, mine, gpu, half=half,
                           predicted_ms=best.metrics.stage_ms[k])
        if stage.fp16 and board != LOCAL:  # its fp16 kernels never ran here
            stage = stage.model_copy(update={"verified": False})
        stages.append(stage)
        layers += plan_layers(graph, k, s.start, mine,
                              [float(sol.selection.layer_ms[i, s.config])
                               for i in range(s.start, s.stop)])
    pareto = [ParetoPoint(predicted=predicted(cand.metrics), stages=_pareto_stages(
        problem, cand, plan_choices(problem, graph, sol, cand, target),
        assign_cpus(problem, cand, feeder), half, gpu)) for cand in sol.pareto]
    c = manifest.constraints
    spec = manifest.model
    return Plan(
        schema_version=SCHEMA_VERSION, kind="edgedeploy-plan", name=manifest.name,
        objective=sol.objective,
        constraints={"max_latency_ms": c.max_latency_ms,
                     "min_throughput_fps": c.min_throughput_fps,
                     "max_power_w": c.max_power_w, "max_memory_mb": c.max_memory_mb},
        pipeline={"max_stages": manifest.pipeline.max_stages,
                  "allow_replication": manifest.pipeline.allow_replication},
        primitives={"allow": list(manifest.primitives.allow),
                    "deny": list(manifest.primitives.deny)},
        target={"alias": alias, "board": board if "/" not in board else
                relpath(board, plan_path.parent), "name": target.name,
                "simulated": bool(target.simulated), "engines": list(target.engines)},
        model={"path": relpath(_planned_model(manifest, graph), plan_path.parent),
               "format": spec.format,
               # as load_model takes them back: in the model's own layout
               "input_shape": (list(carried_shape(graph, graph.inputs[0].name))
                               if graph.inputs else []),
               **({"input_shapes": {t.name: list(carried_shape(graph, t.name))
                                    for t in graph.inputs}}
                  if len(graph.inputs) > 1 else {}),
               "layers": len(graph.layers)},
        inputs=inputs,
        planner={"version": PLANNER_VERSION, "exact_selection": sol.selection.exact,
                 "exact_mapping": sol.mapping.exact, "candidates": len(sol.mapping.candidates),
                 "baseline_chosen": sol.promoted.name if sol.promoted else None},
        predicted=predicted(best.metrics), stages=stages, layers=layers,
        decision=unmeasured(manifest, alias),
        precision=precision_choice(graph, plan_path),
        winograd=winograd_choice(graph, plan_path),
        baselines={b.name: _baseline(problem, b, feeder, half) for b in sol.baselines},
        pareto=pareto)


def build_document(manifest, alias: str, board: str, target, graph: ir.Graph, problem: Problem,
                   sol: Solution, inputs: dict[str, Any], plan_path: Path) -> dict[str, Any]:
    """The lockfile document (JSON data) of :func:`build_plan`."""
    return build_plan(manifest, alias, board, target, graph, problem, sol, inputs,
                      plan_path).model_dump(mode="json")


__all__ = ["align_segments", "assign_cpus", "build_document", "build_plan", "device_choices",
           "plan_choices", "plan_layers", "plan_stage", "predicted"]
