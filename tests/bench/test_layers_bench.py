"""Per-layer benchmark (issue 3, item 6): every applicable primitive vs onnxruntime's Conv.

Every distinct conv layer of the zoo's ResNet-50 and VGG-16 at 224x224, single-threaded, through
the same code as `edgedeploy bench layers` (candidates alternated round by round, median).
Writes ``results/bench_layers.json``; times are reported, never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgedeploy import zoo
from edgedeploy.benchmarks.layers import bench_layers
from edgedeploy.importers.onnx import import_onnx
from edgedeploy.runtime.ir import Descriptor

OUT = Path(__file__).resolve().parents[2] / "results" / "bench_layers.json"


def winograd_target(d: Descriptor) -> bool:
    """The issue's target set: 3x3 stride-1 layers, >= 128 channels, 14x14..56x56."""
    return (d.kernel == (3, 3) and d.stride == (1, 1) and min(d.c_in, d.c_out) >= 128
            and 14 <= d.h <= 56)


def test_every_conv_layer_of_resnet50_and_vgg16_against_onnxruntime() -> None:
    results = {}
    for name in ("resnet50", "vgg16"):
        graph = import_onnx(zoo.build(name))
        results[name] = bench_layers(graph, threads=1, progress=print)
    target = {}
    for model, data in results.items():
        for row in data["layers"]:
            if winograd_target(Descriptor.from_dict(row["descriptor"])):
                target[f"{model}:{row['name']}"] = row["ratio_vs_ort"].get("winograd_f4x3/nchw")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"models": results,
                               "winograd_f4x3_vs_ort_on_target_layers": target}, indent=1) + "\n")
    print("winograd_f4x3/nchw vs ort on 3x3/s1, >=128 ch, 14..56 px:", target)
    assert all(t > 0 for d in results.values() for r in d["layers"] for t in r["times_ms"].values())
