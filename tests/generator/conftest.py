"""A small real bundle shared by the generator and runner tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedeploy import api, zoo
from edgedeploy.generator import BuildInput, PlanConfig, StageConfig, build_bundle
from edgedeploy.runtime.executor import default_choice


def small_build(tmp: Path, family: str = "linux") -> tuple[BuildInput, object, Path]:
    """squeezenet1_1 at 32x32 with a two-stage plan (one onnxruntime segment) and a 1-stage
    replicated alternative: a small Pareto set."""
    model = tmp / "net.onnx"
    if not model.exists():
        zoo.export("squeezenet1_1", model, size=32, num_classes=10)
    graph = api.load_model(model)
    n = len(graph.layers)
    choices = {layer.name: default_choice(layer) for layer in graph.layers}
    for layer in graph.layers[n // 2:n // 2 + 2]:
        choices[layer.name] = "onnxruntime"
    two = PlanConfig("plan0", (StageConfig("stage0", 0, n // 2, cpus=(0,)),
                               StageConfig("stage1", n // 2, n, cpus=(0,))),
                    choices, {"throughput_fps": 100.0, "latency_ms": 5.0})
    one = PlanConfig("plan1", (StageConfig("stage0", 0, n, cpus=(0,), replicas=2),), {}, {})
    return BuildInput("tiny", "local", family, (two, one)), graph, model


def small_bundle(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """The :func:`small_build` bundle, built under a fresh temporary folder called ``name``."""
    tmp = tmp_path_factory.mktemp(name)
    build, graph, model = small_build(tmp)
    return build_bundle(build, graph, model, tmp / "bundle").root


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_bundle(tmp_path_factory, "bundle")
