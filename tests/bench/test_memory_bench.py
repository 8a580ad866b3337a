"""Runner memory (issue 3): peak RSS growth vs weights + largest live activations + workspaces.

Each model runs in a fresh interpreter (peak RSS is per process) with the planner's choices for
this host. Writes ``results/bench_memory.json``; the 1.5x target is reported, not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgedeploy import zoo

OUT = Path(__file__).resolve().parents[2] / "results" / "bench_memory.json"
CHILD = """
import json, sys
import numpy, onnxruntime  # the runner's own imports: part of the baseline
from edgedeploy.benchmarks.compare import planned_for
from edgedeploy.benchmarks.memory import measure_runner_memory
from edgedeploy.importers import load_model
from edgedeploy.segments import SegmentCutter
path, doc = planned_for(__import__("pathlib").Path(sys.argv[1]), "local", None)
graph = load_model(path)
choices = {layer["name"]: layer["choice"] for layer in doc["layers"]}
cutter = SegmentCutter.for_graph(graph, path)
import gc; gc.collect()
print(json.dumps(measure_runner_memory(graph, choices, cutter)))
"""


def test_runner_peak_rss_against_its_memory_budget(tmp_path: Path) -> None:
    rows = {}
    for name in ("mobilenet_v2", "resnet18", "resnet50"):
        path = zoo.export(name, tmp_path / f"{name}.onnx")
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=1) + "\n")
    assert all(r["peak_growth"] > 0 for r in rows.values())
