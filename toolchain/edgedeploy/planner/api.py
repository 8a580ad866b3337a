"""``plan``: manifest -> one lockfile per target alias (the library verb of `edgedeploy plan`).

Pipeline: load manifest, model (IR) and target; price every (layer, primitive, configuration) with
the target's cost model; select primitives per configuration; map stages; compute baselines and
the Pareto set; write the canonical lockfile. ``check`` answers whether committed lockfiles are
stale without writing anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedeploy.planner.lock import (
    REPO_PROFILE,
    dumps,
    input_hashes,
    read_lock,
    reproducible,
    stale_reasons,
)
from edgedeploy.runtime import ir
from edgedeploy.schemas.manifest import Manifest

log = logging.getLogger("edgedeploy.planner")


@dataclass
class PlanResult:
    """One target alias's plan: where it went, the document, and whether it changed."""

    alias: str
    plan_file: Path
    doc: dict[str, Any]
    text: str
    written: bool = False
    stale: list[str] = field(default_factory=list)

    def replace_plan(self, plan: Any) -> None:
        """Take a rewritten plan (measure-to-decide) as this result's document and text."""
        self.doc = plan.model_dump(mode="json")
        self.text = dumps(self.doc)

    def write(self) -> bool:
        """Write the lockfile when its bytes changed; True when written."""
        self.plan_file.parent.mkdir(parents=True, exist_ok=True)
        old = self.plan_file.read_text() if self.plan_file.exists() else None
        if old != self.text:
            self.plan_file.write_text(self.text)
            self.written = True
        return self.written

    def summary(self) -> dict[str, Any]:
        """The ``--json`` answer: plan_file, predicted, baselines, stages (and a bit more)."""
        d = self.doc
        return {
            "alias": self.alias,
            "plan_file": str(self.plan_file),
            "target": d["target"]["board"],
            "objective": d["objective"],
            "predicted": d["predicted"],
            "baselines": {k: v["predicted"] for k, v in d["baselines"].items()},
            "stages": d["stages"],
            "pareto_size": len(d["pareto"]),
            "measured": d.get("measured"),
            "decision": d.get("decision"),
            "winograd": d.get("winograd"),
            "stale": self.stale,
        }


def plan_file_for(manifest: Manifest, alias: str, output: str | Path | None = None) -> Path:
    return Path(output) if output is not None else manifest.plan_file(alias)


def plan(manifest_path: str | Path, target_alias: str | None = None, *,
         output: str | Path | None = None, write: bool = True,
         manifest: Manifest | None = None, graph: ir.Graph | None = None) -> list[PlanResult]:
    """Plan every target alias of the manifest (or one); writes lockfiles unless ``write=False``.

    A caller that already holds the loaded ``manifest`` and the imported ``graph`` passes them
    on (``push`` loads each once), otherwise they are loaded here.
    """
    from edgedeploy.schemas import load_manifest

    manifest = manifest or load_manifest(manifest_path)
    aliases = [target_alias] if target_alias else list(manifest.targets)
    if output is not None and len(aliases) > 1:
        from edgedeploy.errors import InputError

        raise InputError("-o/--output names one file; give --target ALIAS with it")
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.planner.half import check_half_targets
    from edgedeploy.planner.precision import warn_full_range

    check_half_targets(manifest, aliases)
    graph = graph or model_graph(manifest)
    warn_full_range(manifest, graph)
    results = []
    for alias in aliases:
        ref = manifest.target(alias)
        path = plan_file_for(manifest, alias, output)
        model = cost_model(manifest, alias, load_target(ref.board), Path(manifest_path))
        doc = plan_document(manifest, Path(manifest_path), alias, ref.board, graph, path,
                            model=model)
        doc = priced_precision(manifest, Path(manifest_path), alias, ref.board, graph, path, doc,
                               model)
        log_decision(alias, doc)
        text = dumps(doc)
        result = PlanResult(alias, path, doc, text)
        if write:
            result.write()
        results.append(result)
    return results


def check(manifest_path: str | Path, target_alias: str | None = None, *,
          output: str | Path | None = None, manifest: Manifest | None = None,
          graph: ir.Graph | None = None) -> list[PlanResult]:
    """Re-plan in memory and compare with the committed lockfiles; ``stale`` lists why."""
    results = plan(manifest_path, target_alias, output=output, write=False, manifest=manifest,
                   graph=graph)
    for r in results:
        recorded = read_lock(r.plan_file)
        if recorded is None:
            r.stale = [f"{r.plan_file} is missing or unreadable"]
            continue
        r.stale = stale_reasons(recorded.get("inputs", {}), r.doc["inputs"])
        log.info("check %s: %s", r.plan_file, "; ".join(r.stale) or "inputs unchanged")
        measured = bool((recorded.get("decision") or {}).get("measured"))
        # a measured lockfile holds the board's choice and a profiled one this machine's
        # calibration, which the repository cannot reproduce: up to date while its inputs are
        exact = (not measured and reproducible(recorded.get("inputs", {}))
                 and reproducible(r.doc["inputs"]))
        if not r.stale and exact and r.plan_file.read_text() != r.text:
            r.stale = ["plan content differs from what the planner computes now"]
    return results


def log_decision(alias: str, doc: dict[str, Any]) -> None:
    """What the planner decided and from what (``-v``); every layer's choice with ``-vv``."""
    def num(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)

    fps = (doc.get("predicted") or {}).get("throughput_fps")
    source = ((doc.get("inputs") or {}).get("costmodel") or {}).get("source", "prior")
    stages = "; ".join(
        f"{s['name']} layers {s['start']}-{s['stop'] - 1} on {s['cluster']} "
        f"{s['cores']} core(s) x{s['replicas']} ({s['engine']}, {num(s.get('predicted_ms'))} ms)"
        for s in doc.get("stages", []))
    log.info("plan %s on %s: cost model %s; %s; predicted %s fps", alias,
             doc.get("target", {}).get("board"), source, stages, num(fps))
    for name, base in (doc.get("baselines") or {}).items():
        log.info("plan %s: baseline %s predicted %s fps", alias, name,
                 num((base.get("predicted") or {}).get("throughput_fps")))
    if log.isEnabledFor(logging.DEBUG):
        for layer in doc.get("layers", []):
            log.debug("plan %s: %s (%s) -> %s on %s, stage %s, %s ms", alias, layer["name"],
                      layer["op"], layer["choice"], layer["engine"], layer["stage"],
                      num(layer.get("predicted_ms")))


def model_graph(manifest: Manifest, precision: str | None = None) -> ir.Graph:
    """The manifest's model imported into the IR (its input shape and format applied); with
    ``model.precision`` int8/auto, the int8 model when the accuracy guard accepts it.
    ``precision="fp32"`` under ``auto`` imports the model as given even so (the board measured
    it faster), its record saying why; ``precision="fp16"`` under ``auto`` the model as given
    computed in fp16 (ModelError where the guard refuses it)."""
    from edgedeploy.importers import load_model

    spec = manifest.model
    graph = load_model(spec.path, input_shape=spec.shape_override(), input_name=spec.input_name,
                       fmt=spec.format)
    if spec.precision == "fp32":
        return graph
    from edgedeploy.planner.precision import SOURCE_KEY, choose, half_choice, measured_fp32

    if precision == "fp16" and spec.precision == "auto":
        graph.source[SOURCE_KEY] = half_choice(manifest, graph)
        return graph

    path, record = choose(manifest, graph)  # int8 within the accuracy guard, or fp32 kept
    if record is not None and record["chosen"] == "int8":
        if precision == "fp32" and spec.precision == "auto":
            record = measured_fp32(record)
        else:
            graph = load_model(path, input_shape=spec.shape_override(),
                               input_name=spec.input_name, fmt=spec.format)
    graph.source[SOURCE_KEY] = record
    return graph


def planned_graph(manifest: Manifest, doc: dict[str, Any], graph: ir.Graph) -> ir.Graph:
    """The imported model a lockfile runs: ``graph`` (from :func:`model_graph`) when the lockfile
    planned its precision, else the model as given (``auto``, where the board measured fp32
    faster than int8, or fp16 faster than both); the model with the lockfile's layers
    rewritten as Winograd where measure-to-decide chose that (rebuilt from the layer list where
    its file is gone)."""
    from edgedeploy.planner.precision import SOURCE_KEY

    rewrite = doc.get("winograd") or {}
    if rewrite.get("chosen"):
        from edgedeploy.planner.winograd import variant_graph

        return variant_graph(manifest, {k: v for k, v in rewrite.items() if k != "model"})
    chosen = (doc.get("precision") or {}).get("chosen")
    record = graph.source.get(SOURCE_KEY) or {}
    if chosen is None or record.get("chosen") in (None, chosen):
        return graph
    return model_graph(manifest, precision=chosen)


def plan_document(manifest: Manifest, manifest_path: Path, alias: str, board: str, graph,
                  plan_path: Path, *, model: Any = None) -> dict[str, Any]:
    """Plan one target and return the lockfile document (``model``: the target's cost model,
    where the caller already holds it)."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.planner.adapter import build_problem
    from edgedeploy.planner.document import build_document
    from edgedeploy.planner.solve import solve

    target = load_target(board)
    model = model or cost_model(manifest, alias, target, manifest_path)
    problem = build_problem(graph, target, model)
    solution = solve(problem, manifest, graph)
    spec = manifest.model
    inputs = input_hashes(manifest_path, spec.path, target, model.digest(), model.source,
                          spec.calibration if spec.precision != "fp32" else None)
    return build_document(manifest, alias, board, target, graph, problem, solution, inputs,
                          plan_path)


def priced_precision(manifest: Manifest, manifest_path: Path, alias: str, board: str,
                     graph: ir.Graph, plan_path: Path, doc: dict[str, Any],
                     model: Any) -> dict[str, Any]:
    """``precision: auto`` with an int8 model the guard accepted, planned from the cost model:
    where this board's profile has measured int8 (``costmodel.segments``), the model as given is
    planned too and the plan predicted better for the objective is kept (a tie keeps the model
    as given); where it has not, the int8 plan is kept and its record says it was not priced.
    A TFLite model is kept as given: no profile prices LiteRT's int8 kernels, and they ran
    slower than fp32 on some of the corpus's models here. Measure-to-decide, where the board is
    reachable, times both instead."""
    from edgedeploy.planner.precision import SOURCE_KEY
    from edgedeploy.runtime.vocab import INT8

    record = graph.source.get(SOURCE_KEY) or {}
    if manifest.model.precision != "auto" or record.get("chosen") != INT8:
        return doc
    if manifest.model.format == "tflite":
        return _with_reason(
            plan_document(manifest, manifest_path, alias, board,
                          model_graph(manifest, precision="fp32"), plan_path, model=model),
            "int8 accepted by the guard; fp32 kept unmeasured: a profile prices onnxruntime's "
            "int8 kernels, not LiteRT's, which ran slower than fp32 on some models (measure on "
            "a reachable target, or ask for precision: int8)")
    if not model.prices(INT8):
        return _with_reason(doc, "int8 accepted by the guard; taken unpriced: this board's "
                                 "profile has not run int8 models (`edgedeploy profile` does)")
    fp32 = plan_document(manifest, manifest_path, alias, board,
                         model_graph(manifest, precision="fp32"), plan_path, model=model)
    ours, theirs = _objective(doc, manifest.objective), _objective(fp32, manifest.objective)
    why = (f"int8 accepted by the guard; predicted with this board's measured int8 speed: "
           f"int8 {ours:.4g}, fp32 {theirs:.4g} ({_UNITS[manifest.objective]})")
    if ours < theirs:
        return _with_reason(doc, f"{why}; int8 chosen")
    return _with_reason(fp32, f"{why}; fp32 kept")


#: What each objective compares, in units where less is better.
_UNITS = {"throughput": "ms a frame", "latency": "ms", "energy": "mJ a frame"}


def _objective(doc: dict[str, Any], objective: str) -> float:
    predicted = doc.get("predicted") or {}
    if objective == "latency":
        return float(predicted.get("latency_ms") or float("inf"))
    if objective == "energy" and predicted.get("energy_mj") is not None:
        return float(predicted["energy_mj"])
    fps = float(predicted.get("throughput_fps") or 0.0)
    return 1e3 / fps if fps > 0 else float("inf")


def _with_reason(doc: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**doc, "precision": {**(doc.get("precision") or {}), "reason": reason}}


def cost_model(manifest: Manifest, alias: str, target: Any, manifest_path: Path) -> Any:
    """The target's cost model: calibrated from the profile the manifest keeps in the repository
    (``targets.<alias>.profile``; hashed into the lockfile), else from the board's cached one."""
    from edgedeploy.costmodel import CostModel
    from edgedeploy.costmodel.profile import read_profile, target_fingerprint
    from edgedeploy.planner.lock import relpath

    path = manifest.target(alias).profile
    if path is None:
        return CostModel.for_target(target)
    model = CostModel.for_target(target, read_profile(path, target_fingerprint(target)))
    model.source = f"{REPO_PROFILE}{relpath(path, manifest_path.parent)}"
    return model


def stage_plans(plan_obj, graph) -> list:
    """The chosen plan's stages as the runner runs them (boundary tensors filled in)."""
    from edgedeploy.runtime.runner_config import resolve_stages

    return resolve_stages(graph, plan_obj.runner_plans()[0])
