"""`edgedeploy bench MANIFEST_OR_MODEL`: the planned deployment beside what a user would otherwise
run, alternating in one run (a shared, noisy machine makes separate runs incomparable)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.benchmarks import systems
from edgedeploy.benchmarks.estimator import warmup_frames
from edgedeploy.errors import InputError
from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import random_inputs
from edgedeploy.runtime.layouts import to_model
from edgedeploy.schemas.plan import Plan

#: Seconds a timed window lasts at least, for every system (the same frames for all, so the
#: fastest one's rate sets them): a system that sat idle while the others ran needs a few frames
#: to come back to speed, which a short window mistakes for the system itself
#: (results/order_effect.json: two identical systems measured up to 30 % apart in 20-frame
#: rounds, within 5 % in 0.4 s ones), and a micro-batched system completes frames in groups,
#: of which a short window holds too few.
MIN_WINDOW_S = 0.4
#: ... unless the slowest system's window would last longer than this (a system several times
#: slower than the fastest then keeps its own 0.4 s and more).
MAX_WINDOW_S = 2.0
#: Frames of the probe that sizes the windows (it warms every system up as well).
PROBE_FRAMES = 4
#: Baselines run on the plan's variant of the user's model (int8, or with convolutions as
#: Winograd), or computing as the plan does (fp16), carry its suffix.
INT8_SUFFIX = "_int8"
WINOGRAD_SUFFIX = "_winograd"
FP16_SUFFIX = "_fp16"
VARIANT_SUFFIXES = (INT8_SUFFIX, WINOGRAD_SUFFIX, FP16_SUFFIX)


@dataclass
class BenchRequest:
    frames: int = 200
    #: Alternated rounds, in pairs (one in each order; an odd count is rounded up): a system
    #: measured right after another may run slower or faster than one measured first.
    rounds: int = 4
    target: str = "local"
    input_shape: tuple[int, ...] | None = None
    seed: int = 0
    #: Measure-to-decide budget while planning (None: the manifest's; 0: no measurement).
    measure_budget_s: float | None = 30.0


def planned_for(source: Path, target: str, input_shape: tuple[int, ...] | None,
                measure_budget_s: float | None = None,
                progress: Callable[[str], None] | None = None, *,
                workdir: Path) -> tuple[Path, Any]:
    """(model path, plan document) for a manifest's alias or for a bare model on this host,
    planned as a user's `edgedeploy plan` plans it: measured on this host unless
    ``measure_budget_s`` is 0 (from a fresh cache, that is the prior and whatever profile the
    user has). The model path is the file the plan runs (a variant of the model, where it
    chose one); a bare model's manifest and build folder go in ``workdir``, which the caller
    keeps while it uses that file."""
    from edgedeploy.benchmarks.decide import measure_result
    from edgedeploy.planner.api import model_graph, plan
    from edgedeploy.schemas import load_manifest

    def planned(manifest_path: Path) -> Any:
        manifest = load_manifest(manifest_path)
        graph = model_graph(manifest)
        result = plan(manifest_path, target, write=False, manifest=manifest, graph=graph)[0]
        if measure_budget_s != 0 and manifest.measure.enabled:
            measure_result(manifest, target, result, graph, budget_s=measure_budget_s,
                           progress=progress)
        return result

    if source.suffix in (".yaml", ".yml"):
        result = planned(source)
        # lockfile paths are relative to where the lockfile would be written
        return (result.plan_file.parent / result.doc["model"]["path"]).resolve(), result.doc
    if target != "local":
        raise InputError("benchmarking a bare model runs on this host: use --target local",
                         hint="give a manifest to benchmark another alias")
    from edgedeploy.importers import check_model_file

    check_model_file(source)  # its error names the user's file, not the manifest made for it
    manifest = workdir / "bench.yaml"
    shape = f"\n  input_shape: {list(input_shape)}" if input_shape else ""
    manifest.write_text(f"name: {source.stem}\nmodel:\n  path: {source.resolve()}{shape}\n"
                        "targets:\n  local: {}\n")
    result = planned(manifest)
    return (result.plan_file.parent / result.doc["model"]["path"]).resolve(), result.doc


def bench(source: str | Path, request: BenchRequest,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the plan and the baselines; returns the JSON answer of `edgedeploy bench`."""
    with tempfile.TemporaryDirectory() as tmp:  # a bare model's plan and its variant files
        return _bench(Path(source), request, Path(tmp), progress)


def _bench(source: Path, request: BenchRequest, workdir: Path,
           progress: Callable[[str], None] | None) -> dict[str, Any]:
    from edgedeploy.importers import load_model

    model_path, doc = planned_for(source, request.target, request.input_shape,
                                  request.measure_budget_s, progress, workdir=workdir)
    if doc["target"].get("simulated") or doc["target"]["board"] != "local":
        raise InputError(f"target {request.target!r} is board {doc['target']['board']!r}; "
                         "bench measures on this host", hint="use a local target alias")
    # the lockfile records every input's shape; one override is ambiguous for several inputs
    shapes = doc["model"].get("input_shapes") or {}
    shape = ({name: tuple(s) for name, s in shapes.items()} if len(shapes) > 1
             else tuple(doc["model"]["input_shape"]) if doc["model"].get("input_shape") else None)
    graph = load_model(model_path, input_shape=shape)
    given, suffix = _given_model(source, doc)
    candidates = _systems(graph, model_path, doc, suffix)
    if given is not None:  # the plan runs our variant of the model: the user's own model too
        candidates += _baselines(load_model(given, input_shape=shape), given)
    if (doc.get("precision") or {}).get("chosen") == "fp16":  # the stock runtime in fp16 too
        candidates += _baselines(graph, model_path, FP16_SUFFIX, fp16=True)
    # in the model's own layout, as its application holds them for every system
    pool = [to_model(graph, random_inputs(graph, request.seed + k)) for k in range(4)]
    names = [t.name for t in graph.inputs]
    frames = [[feeds[n] for n in names] for feeds in pool]

    def frame(k: int) -> list[np.ndarray]:
        return frames[k % len(frames)]

    rounds = max(2, request.rounds + request.rounds % 2)
    try:
        # every system takes a probe first; the rates size the windows: the same frames for
        # all, enough for the fastest system's window to last MIN_WINDOW_S, unless that would
        # hold the slowest one for more than MAX_WINDOW_S
        rates = [s.probe(PROBE_FRAMES, frame) for s in candidates]
        per_round = max(1, request.frames // rounds, math.ceil(min(
            max(rates) * MIN_WINDOW_S, max(min(rates) * MAX_WINDOW_S, 1.0))))
        warmup = warmup_frames(per_round)  # the same for every system, before every window
        for r in range(rounds):
            order = candidates if r % 2 == 0 else candidates[::-1]  # alternate who goes first
            for system in order:
                if progress:
                    progress(f"round {r + 1}/{rounds}: {system.name}")
                system.measure_round(per_round, warmup, frame)
    finally:
        for system in candidates:
            system.close()
    return _answer(candidates, doc, graph)


def _systems(graph: ir.Graph, model_path: Path, doc: dict[str, Any], suffix: str = ""
             ) -> list[systems.System]:
    """The plan, and the baselines on the model it runs (names ending in ``suffix``)."""
    from edgedeploy.planner.api import stage_plans

    plan = Plan.model_validate(doc)  # the plan as the runner runs it: the one conversion
    return [systems.pipelined("edgedeploy", _describe(plan), graph, stage_plans(plan, graph),
                              plan.choices, model_path), *_baselines(graph, model_path, suffix)]


def _baselines(graph: ir.Graph, model_path: Path, suffix: str = "", *, fp16: bool = False
               ) -> list[systems.System]:
    """What a user would run instead: the stock runtime, threaded and replicated (a stateful
    model only threaded: replicas would each hold a state of every other frame); ``fp16``:
    LiteRT computing in fp16, as a user who knows XNNPACK's FORCE_FP16 runs it."""
    onnx = graph.source.get("format") == "onnx"
    out = [systems.ort_default(model_path) if onnx
           else systems.litert_all_cores(graph, model_path, fp16=fp16)]
    if not graph.source.get("stateful"):
        out.append(systems.ort_replicas(graph, model_path) if onnx
                   else systems.litert_replicas(graph, model_path, fp16=fp16))
    for system in out:
        system.name += suffix
    return out


def _given_model(source: Path, doc: dict[str, Any]) -> tuple[Path | None, str]:
    """The model the user has when the plan runs a variant of it (int8 ``precision``, or
    ``winograd`` convolutions), and the suffix of the baselines run on the variant; (None, "")
    when the plan runs the model as given."""
    if (doc.get("precision") or {}).get("chosen") == "int8":
        suffix = INT8_SUFFIX
    elif (doc.get("winograd") or {}).get("chosen"):
        suffix = WINOGRAD_SUFFIX
    else:
        return None, ""
    if source.suffix not in (".yaml", ".yml"):  # a bare model is the user's model
        return source.resolve(), suffix
    from edgedeploy.schemas import load_manifest

    return Path(load_manifest(source).model.path).resolve(), suffix


def _host() -> dict[str, Any]:
    """Which machine measured: its fingerprint, description and each cluster's cores and SIMD
    extensions. Two VMs sold under one CPU name ("AMD EPYC") can differ in both, and a results
    file that does not say which ran it cannot be compared with the next."""
    from edgedeploy.boards.detect import detect_local

    target = detect_local()
    return {"fingerprint": target.fingerprint, "description": target.description,
            "clusters": [{"name": c.name, "cores": c.cores, "max_freq_mhz": c.max_freq_mhz,
                          "l2_kib": c.l2_kib, "simd": c.simd} for c in target.clusters]}


#: What a lockfile's stage leaves unwritten at its default (a batch of 1, not inline).
_UNWRITTEN = {"batch": 1, "inline": False}


def _describe(plan: Plan) -> str:
    parts = [f"{s.cluster}:{s.cores}x{s.replicas}" + (f" batch {s.batch}" if s.batch > 1 else "")
             + (" inline" if s.inline else "") for s in plan.stages]
    return f"planned: {len(plan.stages)} stage(s) " + " | ".join(parts)


def _answer(candidates: list[systems.System], doc: dict[str, Any], graph: ir.Graph
            ) -> dict[str, Any]:
    results = [s.summary() for s in candidates]
    ours_config = next(s.configuration for s in candidates if s.name == "edgedeploy")
    for system, r in zip(candidates, results, strict=True):
        if system.name != "edgedeploy" and ours_config is not None:
            r["same_configuration_as_plan"] = system.configuration == ours_config
    by_name = {r["system"]: r for r in results}
    ours = by_name["edgedeploy"]["throughput_fps"]
    default = by_name.get("ort_default") or by_name["litert"]
    # the best baseline is the best way to run the model the user has; our variant of it (int8
    # or Winograd) run the same ways is reported beside it
    baselines = [r for r in results if r["system"] != "edgedeploy"
                 and not r["system"].endswith(VARIANT_SUFFIXES)]
    best = max(baselines, key=lambda r: r["throughput_fps"])
    round_ratios = [a / b for a, b in zip(by_name["edgedeploy"]["rounds_fps"],
                                          best["rounds_fps"], strict=False) if b > 0]
    extra: dict[str, Any] = {}
    for key in ("precision", "winograd"):
        if doc.get(key):
            extra[key] = doc[key]
    objective = doc.get("objective") or "throughput"
    if objective == "latency":  # what the plan was chosen for: one frame's time, p50
        quickest = min(baselines, key=lambda r: r["latency_ms_p50"])
        extra.update({"best_latency_baseline": quickest["system"],
                      "latency_ratio_vs_best_baseline":
                          quickest["latency_ms_p50"] / by_name["edgedeploy"]["latency_ms_p50"]})
    for suffix in VARIANT_SUFFIXES:
        variant = [r for r in results if r["system"].endswith(suffix)]
        if variant:
            top = max(variant, key=lambda r: r["throughput_fps"])
            tag = suffix.lstrip("_")
            extra.update({f"best_{tag}_baseline": top["system"],
                          f"ratio_vs_best_{tag}_baseline": ours / top["throughput_fps"]})
    return {
        "model": graph.name,
        "target": doc["target"]["board"],
        "objective": objective,
        "host": _host(),
        "results": results,
        "ratio_vs_default": ours / default["throughput_fps"],
        "ratio_vs_best_baseline": ours / best["throughput_fps"],
        "ratio_vs_best_baseline_worst_round": min(round_ratios) if round_ratios else None,
        # a pair is a round in each order: what running first or after another did cancels
        "ratio_vs_best_baseline_worst_pair": min(
            float(np.sqrt(a * b)) for a, b in zip(round_ratios[::2], round_ratios[1::2],
                                                  strict=False)) if len(round_ratios) > 1
        else None,
        "estimator": "median over rounds of frames / wall time of the round, every system timed "
                     "from outside after the same warm-up, fed the same frames, rounds "
                     "alternated in pairs (one in each order)",
        "best_baseline": best["system"],
        # the plan runs the best baseline's own configuration: the ratio is one way of running
        # the model measured twice, and its distance from 1 is this host's noise
        "plan_is_best_baseline": bool(best.get("same_configuration_as_plan")),
        "predicted_throughput_fps": doc["predicted"]["throughput_fps"],
        "decision": doc.get("decision"),
        "prediction_error": (doc["predicted"]["throughput_fps"] - ours) / ours if ours else None,
        "plan": {"stages": [{k: s.get(k, _UNWRITTEN.get(k))
                             for k in ("name", "cluster", "cores", "replicas", "batch", "cpus",
                                       "engine", "engines", "primitive_mix", "inline")}
                            for s in doc["stages"]]},
        **extra,
    }
