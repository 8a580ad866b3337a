"""Planned deployment vs the stock runtimes on real third-party models (ONNX and TFLite).

Each model is planned as `edgedeploy plan` plans it (measured on this host; a quick profile first
when the cache has none) and measured beside onnxruntime's default session and one-thread
onnxruntime replicas (ONNX), or LiteRT threaded and one-thread LiteRT replicas (TFLite),
alternating in one run (`edgedeploy bench`). Writes ``results/bench_thirdparty.json``; ratios are
reported, not asserted. ``EDGEDEPLOY_BENCH_THIRDPARTY`` picks models (comma-separated).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgedeploy.benchmarks.compare import BenchRequest, bench
from edgedeploy.testing.thirdparty import MODELS, fetch

OUT = Path(__file__).resolve().parents[2] / "results" / "bench_thirdparty.json"


def test_planned_deployment_vs_the_stock_runtime_on_real_models() -> None:
    names = os.environ.get("EDGEDEPLOY_BENCH_THIRDPARTY", ",".join(MODELS)).split(",")
    rows = {}
    for name in names:
        spec = MODELS[name]
        path = fetch(name)
        data = bench(path, BenchRequest(frames=300, rounds=6, input_shape=spec.input_shape),
                     progress=print)
        rows[name] = data
        print(f"{name}: x{data['ratio_vs_default']:.2f} vs default, "
              f"x{data['ratio_vs_best_baseline']:.2f} vs {data['best_baseline']} "
              f"(worst round x{data['ratio_vs_best_baseline_worst_round']:.2f})", flush=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(rows, indent=1) + "\n")
    assert rows and all(r["results"][0]["throughput_fps"] > 0 for r in rows.values())
