"""Planned deployment vs what a user would otherwise run, on every zoo model (issue 5, item 8).

Each model is planned for this host and measured beside onnxruntime's default session and
one-thread onnxruntime replicas, alternating in one run (`edgedeploy bench`). Writes
``results/bench_zoo.json``: ratio_vs_default (target >= 1.2), ratio_vs_best_baseline (>= 1.0) and
the prediction error (target within 15 %) are reported, not asserted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgedeploy import zoo
from edgedeploy.benchmarks.compare import BenchRequest, bench

OUT = Path(__file__).resolve().parents[2] / "results" / "bench_zoo.json"
HEAVY = {"vgg16": 24, "resnet50": 40, "alexnet": 60, "googlenet": 60, "yolo_tiny": 40}


def test_planned_deployment_vs_onnxruntime_on_every_zoo_model(tmp_path: Path) -> None:
    names = os.environ.get("EDGEDEPLOY_BENCH_MODELS", ",".join(zoo.list_models())).split(",")
    rows = {}
    for name in names:
        path = zoo.export(name, tmp_path / f"{name}.onnx")
        frames = HEAVY.get(name, 120)
        data = bench(path, BenchRequest(frames=frames, rounds=6), progress=print)
        rows[name] = data
        print(f"{name}: x{data['ratio_vs_default']:.2f} vs default, "
              f"x{data['ratio_vs_best_baseline']:.2f} vs {data['best_baseline']}, "
              f"prediction error {data['prediction_error']:+.0%}", flush=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(rows, indent=1) + "\n")
    assert all(r["results"][0]["throughput_fps"] > 0 for r in rows.values())
