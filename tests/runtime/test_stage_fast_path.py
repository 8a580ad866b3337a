"""A stage that is one engine session hands frames straight to it (the hot path of a model of
10-20 us a call), and answers exactly as the executor's general path does, also for frames the
engine would refuse as they come (another element type)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgedeploy import execute
from edgedeploy.importers import load_model
from edgedeploy.runtime.executor import random_inputs
from edgedeploy.runtime.layouts import to_model
from edgedeploy.runtime.stages import GraphStage, plan_stage_io
from edgedeploy.runtime.vocab import LITERT, ONNXRUNTIME
from edgedeploy.testing.onnx_models import pytorch_style_resnet_block
from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights


def _tflite(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    b = TFLiteBuilder("two_in")
    x = b.input("image", (1, 8, 8, 3))
    z = b.input("bias", (1, 8, 8, 4))
    y = b.conv2d(x, he_weights(rng, (4, 3, 3, 3), 27), None)
    y = b.add(y, z)
    b.output(b.mean(y, (1, 2)), y)
    return b.save(tmp_path / "two_in.tflite")


def _frame(graph, seed: int) -> list[np.ndarray]:
    """A seeded frame as a pipeline feeds the whole-model stage: in the model's own layout."""
    feeds = to_model(graph, random_inputs(graph, seed))
    return [feeds[t] for t in plan_stage_io(graph, [])[0].inputs]


def _both_ways(graph, choices, path, xs):
    io = plan_stage_io(graph, [])[0]
    segments = execute.segments_for(graph, [io], choices, path)
    stage = GraphStage(graph, io, choices, segments)
    try:
        fast = stage(xs)
        general = stage.executor.run(dict(zip(io.inputs, xs, strict=True)))
    finally:
        stage.executor.close()
    return stage, io, fast, [general[t] for t in io.outputs]


def test_a_whole_model_litert_stage_calls_the_interpreter_and_answers_as_the_executor(
        tmp_path: Path) -> None:
    path = _tflite(tmp_path)
    graph = load_model(path)
    xs = _frame(graph, 1)
    stage, _, fast, general = _both_ways(graph, {la.name: LITERT for la in graph.layers}, path,
                                          xs)
    assert stage._session is not None and stage._ordered
    for a, b in zip(fast, general, strict=True):
        np.testing.assert_array_equal(a, b)
    # float64 frames: the interpreter refuses them as they come; the checked way casts them
    wide = [x.astype(np.float64) for x in xs]
    _, _, fast64, _ = _both_ways(graph, {la.name: LITERT for la in graph.layers}, path, wide)
    for a, b in zip(fast64, general, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_a_whole_model_onnxruntime_stage_goes_straight_to_its_session(tmp_path: Path) -> None:
    path = tmp_path / "block.onnx"
    onnx.save(pytorch_style_resnet_block(), path)
    graph = load_model(path)
    xs = _frame(graph, 2)
    stage, _, fast, general = _both_ways(graph, {la.name: ONNXRUNTIME for la in graph.layers},
                                         path, xs)
    assert stage._session is not None
    for a, b in zip(fast, general, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_stage_of_native_layers_or_several_steps_keeps_the_executors_path(
        tmp_path: Path) -> None:
    path = _tflite(tmp_path)
    graph = load_model(path)
    xs = _frame(graph, 3)
    mixed = {la.name: LITERT for la in graph.layers[1:]}  # the conv native, NCHW
    stage, _, fast, general = _both_ways(graph, mixed, path, xs)
    assert stage._session is None
    for a, b in zip(fast, general, strict=True):
        np.testing.assert_array_equal(a, b)
