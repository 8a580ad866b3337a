"""Planned deployment vs LiteRT on real third-party TFLite models (the engine seam's payoff).

Each model is planned for this host (LiteRT segments are plan options now) and measured beside
LiteRT with all threads and one-thread LiteRT replicas, alternating in one run (`edgedeploy
bench`). Writes ``results/bench_tflite.json``; ratios are reported, not asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgedeploy.benchmarks.compare import BenchRequest, bench
from edgedeploy.testing.thirdparty import MODELS, fetch

OUT = Path(__file__).resolve().parents[2] / "results" / "bench_tflite.json"


def test_planned_deployment_vs_litert_on_real_tflite_models() -> None:
    rows = {}
    for name, spec in MODELS.items():
        if not spec.filename.endswith(".tflite"):
            continue
        path = fetch(name)
        data = bench(path, BenchRequest(frames=600, rounds=3), progress=print)
        rows[name] = data
        print(f"{name}: x{data['ratio_vs_default']:.2f} vs LiteRT threaded, "
              f"x{data['ratio_vs_best_baseline']:.2f} vs {data['best_baseline']}", flush=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(rows, indent=1) + "\n")
    assert rows and all(r["results"][0]["throughput_fps"] > 0 for r in rows.values())
