"""Whole models with a mixed per-layer choice of primitives match their reference runtime."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy import execute, zoo
from edgedeploy.errors import ExecutionError
from edgedeploy.importers import load_model
from edgedeploy.importers.segments import segment_provider
from edgedeploy.runtime import ir, primitives
from edgedeploy.runtime.executor import ONNXRUNTIME, GraphExecutor, max_rel_error, random_inputs
from edgedeploy.runtime.stages import GraphStage, plan_stage_io
from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    sizes = {"resnet18": 32, "mobilenet_v2": 32, "googlenet": 32, "yolo_tiny": 64}
    paths = {name: zoo.export(name, root / f"{name}.onnx", size=size)
             for name, size in sizes.items()}
    graphs = {name: load_model(path) for name, path in paths.items()}
    return {name: (path, graphs[name], segment_provider(graphs[name], path))
            for name, path in paths.items()}


def _reference(graph: ir.Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return execute.reference_outputs(graph, feeds)[1]


@settings(max_examples=6, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "googlenet", "yolo_tiny"])
def test_random_mixed_primitive_choice_matches_onnxruntime(models, name, data) -> None:
    _, graph, cutter = models[name]
    choices = {}
    for layer in graph.layers:
        if layer.op == ir.CONV2D:
            options = [p.name for p in primitives.applicable(layer.descriptor)] + [ONNXRUNTIME]
        else:
            options = ["native", ONNXRUNTIME] if layer.op != ir.OPAQUE else [ONNXRUNTIME]
        choices[layer.name] = data.draw(st.sampled_from(sorted(options)), label=layer.name)
    ex = GraphExecutor(graph, choices, segment_provider=cutter)
    feeds = random_inputs(graph, seed=3)
    got = ex.run(feeds)
    tol = 1e-3 if any(c.startswith("winograd_f4x3") for c in choices.values()) else 1e-4
    assert max_rel_error(got, _reference(graph, feeds)) <= tol, choices


def test_engine_threads_spin_only_where_one_segment_is_the_whole_stage(models) -> None:
    """A spinning onnxruntime pool holds the stage's cores between its runs, which the
    stage's other steps (native layers, other segments' pools) need."""
    from edgedeploy.runtime.engines.onnxruntime import SPINNING_KEY

    _, graph, cutter = models["resnet18"]
    cpus = sorted(os.sched_getaffinity(0))[:2]
    whole = GraphExecutor(graph, {layer.name: ONNXRUNTIME for layer in graph.layers},
                          segment_provider=cutter, cpus=cpus)
    assert [s.kind for s in whole.steps] == ["segment"]
    assert whole.steps[0].session.config_entry(SPINNING_KEY) != "0"
    pool = next(k for k, layer in enumerate(graph.layers) if layer.op == ir.MAXPOOL)
    mixed = GraphExecutor(graph, {layer.name: "native" if k == pool else ONNXRUNTIME
                                  for k, layer in enumerate(graph.layers)},
                          segment_provider=cutter, cpus=cpus)
    segments = [s for s in mixed.steps if s.kind == "segment"]
    assert len(segments) == 2
    assert all(s.session.config_entry(SPINNING_KEY) == "0" for s in segments)
    feeds = random_inputs(graph, seed=2)
    assert max_rel_error(mixed.run(feeds), whole.run(feeds)) <= 1e-5
    whole.close()
    mixed.close()


def test_stage_split_passes_skip_tensors_through(models) -> None:
    graph = models["resnet18"][1]
    n = len(graph.layers)
    ios = plan_stage_io(graph, [n // 3, 2 * n // 3])
    choices = execute.resolve_choices(graph)
    feeds = random_inputs(graph, seed=1)
    xs = [feeds[t] for t in ios[0].inputs]
    for io in ios:
        stage = GraphStage(graph, io, choices)
        xs = stage(xs)
    got = dict(zip(ios[-1].outputs, xs, strict=True))
    assert max_rel_error(got, _reference(graph, feeds)) <= 1e-4


def test_a_primitive_that_does_not_apply_is_refused_with_the_alternatives(models) -> None:
    graph = models["mobilenet_v2"][1]
    dw = next(layer for layer in graph.layers if layer.descriptor.is_depthwise)
    with pytest.raises(ExecutionError, match="does not apply") as err:
        GraphExecutor(graph, {dw.name: "winograd_f4x3/nchw"})
    assert "depthwise/nchw" in str(err.value)


def test_ort_layers_without_a_segment_source_are_a_clear_error(models) -> None:
    graph = models["resnet18"][1]
    with pytest.raises(ExecutionError, match="onnxruntime"):
        GraphExecutor(graph, {graph.layers[0].name: ONNXRUNTIME})


def test_tflite_model_runs_natively_and_matches_litert(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    b = TFLiteBuilder("tiny")
    x = b.input("image", (1, 24, 24, 3))
    y = b.conv2d(x, he_weights(rng, (16, 3, 3, 3), 27), np.full(16, 0.1, np.float32),
                 stride=2, activation="relu6")
    z = b.depthwise_conv2d(y, he_weights(rng, (1, 3, 3, 16), 9), np.zeros(16, np.float32),
                           activation="relu")
    z = b.conv2d(z, he_weights(rng, (16, 1, 1, 16), 16), np.zeros(16, np.float32))
    y = b.add(y, z)
    y = b.mean(y, (1, 2))
    b.output(b.fully_connected(y, he_weights(rng, (5, 16), 16), np.zeros(5, np.float32)))
    path = b.save(tmp_path / "tiny.tflite")
    graph = load_model(path)
    feeds = random_inputs(graph)
    got = GraphExecutor(graph).run(feeds)
    name, ref = execute.reference_outputs(graph, feeds)
    assert name == "litert"
    assert max_rel_error(got, ref) <= 1e-4


def test_executor_frees_tensors_after_their_last_reader(models) -> None:
    graph = models["resnet18"][1]
    ex = GraphExecutor(graph)
    last = ex._last_uses()
    # every tensor read by a step is released at or after that step, never before
    for k, step in enumerate(ex.steps):
        for t in step.inputs:
            assert last[t] >= k
