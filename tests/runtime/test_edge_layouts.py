"""A model's inputs and outputs cross the runner in the model's own layout (NHWC for a .tflite
model's rank-4 ones), and a LiteRT segment speaks its own layout: a whole-model LiteRT stage
transposes nothing, a native layer at the model's edge converts once, and every path agrees with
LiteRT itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgedeploy import execute
from edgedeploy.importers import load_model
from edgedeploy.runtime import executor as executor_mod
from edgedeploy.runtime.executor import random_inputs
from edgedeploy.runtime.layouts import (
    carried_shape,
    edge_layouts,
    stacked_to_ir,
    to_ir,
    to_model,
)
from edgedeploy.runtime.stages import GraphStage, plan_stage_io
from edgedeploy.runtime.vocab import LITERT, NCHW, NHWC
from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights


def _model(tmp_path: Path) -> Path:
    """An image in (1x12x10x3), a feature map (rank 4) and a pooled vector (rank 2) out."""
    rng = np.random.default_rng(0)
    b = TFLiteBuilder("edges")
    x = b.input("image", (1, 12, 10, 3))
    y = b.conv2d(x, he_weights(rng, (8, 3, 3, 3), 27), rng.standard_normal(8).astype(np.float32),
                 activation="relu")
    y = b.conv2d(y, he_weights(rng, (4, 1, 1, 8), 8), None)
    b.output(y, b.mean(y, (1, 2)))
    return b.save(tmp_path / "edges.tflite")


@pytest.fixture()
def graph(tmp_path: Path):
    return load_model(_model(tmp_path))


def _conversions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every rank-4 layout conversion the executors make from here on."""
    seen: list[tuple[str, str]] = []
    real = executor_mod._to_layout

    def spy(x: np.ndarray, have: str, want: str) -> np.ndarray:
        if have != want and x.ndim == 4:
            seen.append((have, want))
        return real(x, have, want)

    monkeypatch.setattr(executor_mod, "_to_layout", spy)
    return seen


def test_a_tflite_models_rank4_edges_are_its_own_nhwc_and_nothing_else(graph) -> None:
    image, (fmap, pooled) = graph.inputs[0].name, [t.name for t in graph.outputs]
    assert edge_layouts(graph) == {image: NHWC, fmap: NHWC}
    assert graph.shape(image) == (1, 3, 12, 10)  # the IR's NCHW
    assert carried_shape(graph, image) == (1, 12, 10, 3)  # as the application has it
    assert carried_shape(graph, pooled) == graph.shape(pooled)
    ir = random_inputs(graph)
    assert np.array_equal(to_ir(graph, to_model(graph, ir))[image], ir[image])
    stacked = np.stack([to_model(graph, random_inputs(graph, k))[image] for k in range(3)])
    np.testing.assert_array_equal(stacked_to_ir(graph, image, stacked)[1],
                                  random_inputs(graph, 1)[image])


def test_an_onnx_models_edges_are_the_irs(tmp_path: Path) -> None:
    import onnx

    from edgedeploy.testing.onnx_models import tf2onnx_style_mobilenet

    path = tmp_path / "small.onnx"
    onnx.save(tf2onnx_style_mobilenet(), path)  # even one whose input is channels-last
    graph = load_model(path)
    assert edge_layouts(graph) == {}
    assert carried_shape(graph, graph.inputs[0].name) == graph.shape(graph.inputs[0].name)


def test_a_whole_model_litert_stage_takes_the_models_frames_and_transposes_nothing(
        graph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedeploy.runtime.engines.litert import LiteRTModel

    io = plan_stage_io(graph, [])[0]
    choices = {layer.name: LITERT for layer in graph.layers}
    segments = execute.segments_for(graph, [io], choices, Path(graph.source["path"]))
    frame = to_model(graph, random_inputs(graph, 3))
    seen = _conversions(monkeypatch)
    stage = GraphStage(graph, io, choices, segments)
    try:
        got = dict(zip(io.outputs, stage([frame[t] for t in io.inputs]), strict=True))
    finally:
        stage.executor.close()
    assert seen == []
    with LiteRTModel(graph.source["path"]) as stock:  # the user's LiteRT, fed the same frame
        want = stock.run(frame)
    for name, y in want.items():
        np.testing.assert_array_equal(got[name], y)


def test_native_layers_at_a_models_edges_convert_once_each_way_and_agree_with_litert(
        graph, monkeypatch: pytest.MonkeyPatch) -> None:
    io = plan_stage_io(graph, [])[0]
    seen = _conversions(monkeypatch)
    stage = GraphStage(graph, io, {}, {})  # the default choices: NCHW primitives, native ops
    feeds = random_inputs(graph, 5)
    try:
        got = stage([to_model(graph, feeds)[t] for t in io.inputs])
    finally:
        stage.executor.close()
    assert seen.count((NHWC, NCHW)) == 1 and seen.count((NCHW, NHWC)) == 1
    _, want = execute.reference_outputs(graph, feeds)
    mine = to_ir(graph, dict(zip(io.outputs, got, strict=True)))
    for name, y in want.items():
        np.testing.assert_allclose(mine[name], y, rtol=1e-4, atol=1e-4)


def test_a_pipeline_of_a_tflite_model_is_fed_and_answers_in_its_own_layout(graph) -> None:
    """Two stages, a LiteRT one then a native one: the rings carry the model's edges NHWC and
    the run verifies against LiteRT."""
    from edgedeploy.runtime.runner_config import StageConfig

    ios = plan_stage_io(graph, [1])
    choices = {graph.layers[0].name: LITERT}
    plans = [StageConfig(name=f"s{k}", start=io.start, stop=io.stop, inputs=io.inputs,
                         outputs=io.outputs, cpus=(0,)) for k, io in enumerate(ios)]
    segments = execute.segments_for(graph, ios, choices, Path(graph.source["path"]))
    first, last = execute.stage_specs(graph, plans, choices, segments)
    assert first.inputs[0].shape == (1, 12, 10, 3)
    assert [t.shape for t in last.outputs] == [(1, 12, 10, 4), (1, 4)]
    report = execute.run_stages(graph, plans, choices, execute.RunRequest(frames=4, warmup=1,
                                                                          verify=True),
                                graph.source["path"])
    assert report.max_rel_error is not None and report.max_rel_error < 1e-4


def test_the_planner_prices_a_tflite_models_edges_in_nhwc(graph) -> None:
    from edgedeploy.planner.problem import tensors_from_graph

    by_name = {t.name: t for t in tensors_from_graph(graph)}
    assert by_name[graph.inputs[0].name].edge_layout == NHWC
    assert by_name[graph.outputs[0].name].edge_layout == NHWC
    assert by_name[graph.outputs[1].name].edge_layout == NCHW  # rank 2: no layout
    inner = graph.layers[0].outputs[0]
    assert by_name[inner].edge_layout == NCHW


def test_image_preprocessing_feeds_a_tflite_model_nhwc_unless_the_manifest_says_otherwise(
        graph) -> None:
    from edgedeploy.errors import ManifestError
    from edgedeploy.generator.io_config import runner_io
    from edgedeploy.runtime.preprocess import Preprocess
    from edgedeploy.schemas.io import Io

    config, _ = runner_io(Io.model_validate({"preprocess": {"scale": 1.0}}), graph)
    assert config["preprocess"]["layout"] == NHWC  # the bundle's config always says it
    image = carried_shape(graph, graph.inputs[0].name)
    prep = Preprocess.for_input(image, config["preprocess"])
    assert prep(np.zeros((30, 20, 3), np.uint8)).shape == image
    with pytest.raises(ManifestError, match="check layout"):  # NCHW said for an NHWC input
        runner_io(Io.model_validate({"preprocess": {"layout": "nchw"}}), graph)
    # an images source without a preprocess entry reads them in the model's layout too
    config, _ = runner_io(Io.model_validate({"source": {"images": "/data/cam"}}), graph)
    assert config["preprocess"]["layout"] == NHWC


def test_inspect_says_the_shape_the_runner_takes_a_tflite_models_edges_in(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgedeploy.cli.main import main

    path = _model(tmp_path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "image 1x3x12x10 (the runner's: 1x12x10x3, the model's own layout)" in out
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [t["own_shape"] for t in report["outputs"]] == [[1, 12, 10, 4], [1, 4]]
