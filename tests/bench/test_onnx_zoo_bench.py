"""Planned deployment vs onnxruntime on the ONNX model zoo's classic CNNs, never tuned on here.

The graphs the onnx wheel ships (``edgedeploy.testing.onnx_zoo``: Caffe2 exports of AlexNet,
DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19 and ZFNet-512, given
seeded weights) through ``edgedeploy bench``, as ``test_thirdparty_bench`` does its models.
Writes ``results/bench_onnx_zoo.json``; ratios are reported, not asserted.
``EDGEDEPLOY_BENCH_ONNX_ZOO`` picks models (comma-separated).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgedeploy.benchmarks.compare import BenchRequest, bench
from edgedeploy.testing import onnx_zoo

OUT = Path(__file__).resolve().parents[2] / "results" / "bench_onnx_zoo.json"


def test_planned_deployment_vs_onnxruntime_on_the_onnx_zoo(tmp_path: Path) -> None:
    names = os.environ.get("EDGEDEPLOY_BENCH_ONNX_ZOO", ",".join(onnx_zoo.NAMES)).split(",")
    rows = {}
    for name in names:
        data = bench(onnx_zoo.seeded(name, tmp_path), BenchRequest(frames=300, rounds=6),
                     progress=print)
        rows[name] = data
        print(f"{name}: x{data['ratio_vs_default']:.2f} vs default, "
              f"x{data['ratio_vs_best_baseline']:.2f} vs {data['best_baseline']} "
              f"(worst round x{data['ratio_vs_best_baseline_worst_round']:.2f})", flush=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(rows, indent=1) + "\n")
    assert rows and all(r["results"][0]["throughput_fps"] > 0 for r in rows.values())
