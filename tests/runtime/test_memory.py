"""What a stage keeps resident: packed weights and sessions, never the raw copy of its layers."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from edgedeploy import zoo
from edgedeploy.importers import load_model
from edgedeploy.importers.segments import segment_provider
from edgedeploy.runtime.executor import GraphExecutor, random_inputs
from edgedeploy.runtime.runner_config import NpzWeights


class _Handing(Mapping[str, np.ndarray]):
    """Hands out a fresh copy per access and remembers a weak reference to each one."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self._weights = dict(weights)
        self.handed: list[tuple[str, weakref.ref]] = []

    def __getitem__(self, key: str) -> np.ndarray:
        arr = self._weights[key].copy()
        self.handed.append((key, weakref.ref(arr)))
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = zoo.export("resnet18", tmp_path_factory.mktemp("m") / "r.onnx", size=64)
    return load_model(path), path


def _choices(graph) -> dict[str, str]:
    convs = [layer for layer in graph.layers if layer.op == "conv2d"]
    return {convs[0].name: "im2col_gemm/nchw", convs[1].name: "winograd_f4x3/nchw",
            **{layer.name: "onnxruntime" for layer in convs[2:]}}


def test_executor_keeps_no_raw_weights_of_packed_or_onnxruntime_layers(resnet) -> None:
    graph, path = resnet
    original = graph.weights
    lazy = _Handing(original)
    graph.weights = lazy  # type: ignore[assignment]
    try:
        ex = GraphExecutor(graph, _choices(graph), segment_provider=segment_provider(
            graph, path))
        gc.collect()
        kept = {k for k, ref in lazy.handed if ref() is not None}
        ort_keys = {k for step in ex.steps if step.kind == "segment"
                    for layer in step.layers for k in layer.weights.values()}
        winograd = next(s for s in ex.steps if s.primitive and "winograd" in s.primitive.name)
        assert ort_keys and not kept & ort_keys  # the sessions hold their own copy
        assert winograd.layers[0].weights["weight"] not in kept  # replaced by its transform
        assert ex._segment_provider is None  # segment models are not kept beside the sessions
        out = ex.run(random_inputs(graph))
        assert all(np.isfinite(v).all() for v in out.values())
    finally:
        graph.weights = original


def test_weight_bytes_counts_onnxruntime_layers_without_loading_them(resnet, tmp_path) -> None:
    graph, path = resnet
    graph.save(tmp_path)
    lazy = NpzWeights(tmp_path / "weights.npz")
    assert set(lazy) == set(graph.weights)
    assert all(lazy.nbytes_of(k) == graph.weights[k].nbytes for k in graph.weights)
    key = next(iter(graph.weights))
    np.testing.assert_array_equal(lazy[key], graph.weights[key])
    eager = GraphExecutor(graph, _choices(graph), segment_provider=segment_provider(
        graph, path))
    assert eager.weight_bytes() > 0
    # every layer in one segment: the engine holds (about) all the model's weights
    whole = GraphExecutor(graph, {layer.name: "onnxruntime" for layer in graph.layers},
                          segment_provider=segment_provider(graph, path))
    total = sum(a.nbytes for a in graph.weights.values())
    assert 0.9 * total <= whole.weight_bytes() <= 1.1 * total


def test_lazy_weights_refuse_a_key_the_file_lacks(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", a=np.zeros(3, np.float32))
    with pytest.raises(KeyError):
        NpzWeights(tmp_path / "w.npz", ["a", "b"])
    assert "b" not in NpzWeights(tmp_path / "w.npz", ["a"])


def _stage(graph, start: int, stop: int):
    from edgedeploy import execute
    from edgedeploy.runtime.stages import plan_stage_io

    (io,) = [s for s in plan_stage_io(graph, [c for c in (start, stop) if
                                                0 < c < len(graph.layers)])
             if (s.start, s.stop) == (start, stop)]
    return execute.stage_from_io(io=io, cpus=(0,), replicas=1, name="s")


def test_a_stage_process_gets_only_the_weights_of_the_layers_it_runs_itself(resnet) -> None:
    import pickle

    from edgedeploy import execute

    graph, _ = resnet
    total = sum(a.nbytes for a in graph.weights.values())
    every = {layer.name: "onnxruntime" for layer in graph.layers}
    (spec,) = execute.stage_specs(graph, [_stage(graph, 0, len(graph.layers))], every, {})
    handed = spec.factory_args[0].weights
    # an all-onnxruntime stage: the segment holds the weights; the spec carries sizes only
    assert len(pickle.dumps(spec)) < 0.05 * total
    assert {k: handed.nbytes_of(k) for k in handed} == {k: a.nbytes for k, a in
                                                         graph.weights.items()}
    key = next(iter(graph.weights))
    with pytest.raises(KeyError, match="engine segment"):
        handed[key]
    # mixed: the native and primitive layers' arrays are handed over as they are, no others
    choices = _choices(graph)
    half = len(graph.layers) // 2
    (spec,) = execute.stage_specs(graph, [_stage(graph, half, len(graph.layers))], choices, {})
    handed = spec.factory_args[0].weights
    own = {k for layer in graph.layers[half:] if choices.get(layer.name) != "onnxruntime"
           for k in layer.weights.values()}
    assert own and all(handed[k] is graph.weights[k] for k in own)
    assert set(handed) == {k for layer in graph.layers[half:] for k in layer.weights.values()}


def test_a_stage_built_from_its_spec_runs_and_counts_what_it_holds_as_before(resnet) -> None:
    from edgedeploy import execute
    from edgedeploy.runtime.executor import GraphExecutor

    graph, path = resnet
    choices = _choices(graph)
    stage = _stage(graph, 0, len(graph.layers))
    segments = execute.segments_for(graph, [stage.io], choices, path)
    (spec,) = execute.stage_specs(graph, [stage], choices, segments)
    built = spec.factory(*spec.factory_args)
    whole = GraphExecutor(graph, choices, segment_provider=segment_provider(graph, path))
    assert built.executor.weight_bytes() == whole.weight_bytes()
    feeds = random_inputs(graph)
    (y,) = built([feeds[t.name] for t in graph.inputs])
    np.testing.assert_allclose(y, whole.run(feeds)[graph.outputs[0].name], rtol=1e-4,
                               atol=1e-4)
