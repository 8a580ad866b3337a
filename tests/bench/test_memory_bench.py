"""Runner memory (issue 3): peak RSS growth vs weights + largest live activations + workspaces.

For each model the parent plans it for this host and writes a one-stage runner bundle (graph,
weights, onnxruntime segment files); a fresh interpreter that imports only the runner's modules
then builds the stage as a device runner does (``runner_config.build_stage``) and runs frames.
Writes ``results/bench_memory.json``; the 1.5x target is reported, not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgedeploy import zoo
from edgedeploy.benchmarks.compare import planned_for
from edgedeploy.benchmarks.memory import write_stage_bundle
from edgedeploy.importers import load_model
from edgedeploy.importers.segments import segment_provider

OUT = Path(__file__).resolve().parents[2] / "results" / "bench_memory.json"
CHILD = """
import json, sys
import numpy, onnxruntime  # the runner's own imports: part of the baseline
import edgedeploy.runtime.runner_config, edgedeploy.runtime.engines.onnxruntime
import edgedeploy.runtime.primitives, edgedeploy.runtime.ops
from edgedeploy.benchmarks.memory import measure_stage_memory
import gc; gc.collect()
print(json.dumps(measure_stage_memory(sys.argv[1])))
"""


def _bundle(name: str, tmp_path: Path) -> Path:
    path = zoo.export(name, tmp_path / f"{name}.onnx")
    path, doc = planned_for(path, "local", None)
    graph = load_model(path)
    choices = {layer["name"]: layer["choice"] for layer in doc["layers"]}
    return write_stage_bundle(graph, choices, segment_provider(graph, path),
                              tmp_path / f"{name}-bundle")


def test_runner_peak_rss_against_its_memory_budget(tmp_path: Path) -> None:
    rows = {}
    for name in ("mobilenet_v2", "resnet18", "resnet50"):
        root = _bundle(name, tmp_path)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=1) + "\n")
    assert all(r["peak_growth"] > 0 for r in rows.values())
    assert all(r["weights"] > 0 and r["budget"] > r["weights"] for r in rows.values())
