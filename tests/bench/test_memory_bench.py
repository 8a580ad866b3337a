"""Runner memory: a stage process's peak RSS growth against the planner's memory estimate
(weights + largest live activations + workspaces); the target is <= 1.5x.

For each model (classifiers at 224x224, yolo_tiny at its default 416x416) the parent plans it
for this host as `edgedeploy plan` does, writes a bundle of that plan (graph, weights, segment
files pre-optimised as `edgedeploy build` ships them) and computes the planner's estimate per
stage; a fresh interpreter that imports only the runner's modules then builds each stage as a
device runner does (``runner_config.build_stage``) and runs frames: once on a first start (which
writes the board's optimised segments into the release's engine cache), once more as a restart,
and once on a first start with plain segments (a board whose onnxruntime differs from the build
host's).
Writes ``results/bench_memory.json`` (the target is reported as met or missed, not asserted).
Memory, not time: a shared CPU does not change it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import onnxruntime

from edgedeploy import zoo
from edgedeploy.benchmarks.compare import planned_for
from edgedeploy.benchmarks.memory import planner_estimate, write_bundle
from edgedeploy.importers import load_model
from edgedeploy.importers.segments import segment_provider
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.pipeline_spec import split_cpus

OUT = Path(__file__).resolve().parents[2] / "results" / "bench_memory.json"
MODELS = ("resnet50", "mobilenet_v2", "yolo_tiny")
TARGET = 1.5
CHILD = """
import json, sys
from edgedeploy.runtime.affinity import pin_process, set_thread_env
cpus = [int(c) for c in sys.argv[3].split(",")]
set_thread_env(len(cpus))  # as a stage replica starts (stage_worker): before numpy loads
pin_process(cpus)
import numpy, onnxruntime  # the runner's own imports: part of the baseline
import edgedeploy.runtime.runner_config, edgedeploy.runtime.engines.onnxruntime
import edgedeploy.runtime.primitives, edgedeploy.runtime.ops
from edgedeploy.benchmarks.memory import measure_stage_memory
print(json.dumps(measure_stage_memory(sys.argv[1], int(sys.argv[2]))))
"""


def _measure(root: Path, stage: int, cpus: tuple[int, ...]) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), str(stage),
                           ",".join(map(str, cpus))],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _figures(got: dict, budget: int) -> dict:
    keys = ("peak_growth", "start_peak_growth", "steady_growth", "segments_preoptimized",
            "segments_cached", "segments_optimized_in_child", "optimizer_child_peak_rss")
    return {**{key: got[key] for key in keys}, "ratio": got["peak_growth"] / budget,
            "ratio_with_engine_runtime": (got["peak_growth"] + got["engine_runtime"]) / budget}


def _model_rows(name: str, tmp_path: Path) -> dict:
    path = zoo.export(name, tmp_path / f"{name}.onnx")
    path, doc = planned_for(path, "local", None, workdir=tmp_path)
    graph = load_model(path)
    choices = {layer["name"]: layer["choice"] for layer in doc["layers"]}
    stages = doc["stages"]
    estimates = planner_estimate(graph, stages, choices)
    # laid out as deployed releases (<root>/releases/<id>), where a runner writes its cache
    roots = {opt: write_bundle(graph, stages, choices, segment_provider(graph, path),
                               tmp_path / "releases" / f"{name}-{'opt' if opt else 'plain'}",
                               optimize=opt)
             for opt in (True, False)}
    rows = []
    for k, estimate in enumerate(estimates):
        # one replica's process, on its share of the stage's cores (as the pipeline splits them)
        cpus = split_cpus(stages[k]["cpus"] or available_cpus(), stages[k]["replicas"])[0]
        first = _measure(roots[True], k, cpus)  # writes the board's cache (engine-cache/)
        again = _measure(roots[True], k, cpus)  # a restart: opens what the first start cached
        plain = _measure(roots[False], k, cpus)
        budget = estimate["budget"]
        rows.append({
            "stage": first["stage"], "layers": first["layers"],
            "replicas": stages[k]["replicas"], "replica_cpus": list(cpus),
            "planner_estimate": estimate,
            "runner_budget": {key: first[key] for key in
                              ("weights", "activations_and_workspace", "budget")},
            "engine_runtime": first["engine_runtime"], "segments": first["segments"],
            "first_start": _figures(first, budget), "restart": _figures(again, budget),
            "plain_segments": _figures(plain, budget),
        })
        print(name, json.dumps(rows[-1]), flush=True)
    return {"input_shape": list(graph.inputs[0].shape), "stages": rows}


def test_runner_stage_peak_rss_against_the_planners_estimate(tmp_path: Path) -> None:
    models = {name: _model_rows(name, tmp_path) for name in MODELS}
    result = {
        "command": "python -m pytest " + " ".join(sys.argv[1:]),
        "written_by": "tests/bench/test_memory_bench.py (make bench)",
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "onnxruntime": onnxruntime.__version__},
        "target_ratio": TARGET,
        "definitions": {
            "ratio": "stage peak RSS growth (VmHWM over the stage process's RSS after its "
                     "imports, its input frames and onnxruntime's start-up) / the planner's "
                     "estimate (weights + largest live activations + workspace)",
            "first_start": "the stage's first start in a release: a child process opens the "
                           "bundle's pre-optimised segments, runs onnxruntime's layout rewrites "
                           "for this CPU and saves them in the release's engine-cache/, then "
                           "exits; the stage opens what it saved (optimizer_child_peak_rss: the "
                           "child's whole peak RSS, interpreter and imports included)",
            "restart": "every later start on the same board: the cached, fully optimised "
                       "segments, weights mapped from the file",
            "ratio_with_engine_runtime": "the same with onnxruntime's per-process start-up "
                                         "(engine_runtime bytes whatever the model, mostly its "
                                         "library code paged in) counted in the growth",
            "plain_segments": "a first start opening plain segments (no pre-optimised form: "
                              "a board whose onnxruntime differs from the build host's)",
        },
        "models": models,
        "target_met": {when: all(row[when]["ratio"] <= TARGET for m in models.values()
                                 for row in m["stages"])
                       for when in ("first_start", "restart", "plain_segments")},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    rows = [row for m in models.values() for row in m["stages"]]
    for when in ("first_start", "plain_segments"):
        assert all(row[when]["segments_optimized_in_child"] == row["segments"] for row in rows)
    assert all(row["restart"]["segments_cached"] == row["segments"] for row in rows)
    assert all(row["restart"]["segments_optimized_in_child"] == 0 for row in rows)
    assert all(row["first_start"]["peak_growth"] > row["planner_estimate"]["weights"]
               for row in rows)
