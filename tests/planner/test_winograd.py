"""The Winograd variant of a model: which convolutions it applies to, their gains timed alone,
the rewritten file cached by what it depends on, and the graph a lockfile that chose it runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.errors import ModelError
from edgedeploy.planner import winograd
from edgedeploy.planner.api import model_graph, planned_graph
from edgedeploy.planner.precision import planned_model
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.schemas import load_manifest


def _model(path: Path, *, dynamic_batch: bool = False) -> Path:
    """Three 3x3 convolutions (two of one shape) and a strided one the rewrite leaves alone."""
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for k, (c_in, c_out, stride) in enumerate([(4, 8, 1), (8, 8, 1), (8, 8, 1), (8, 8, 2)]):
        w = numpy_helper.from_array(
            (rng.standard_normal((c_out, c_in, 3, 3)) * 0.2).astype(np.float32), f"w{k}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [x, f"w{k}"], [f"c{k}"], name=f"conv{k}",
                                      pads=[1, 1, 1, 1], strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}"))
        x = f"r{k}"
    batch: str | int = "N" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 9, 9])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(winograd, "MIN_LAYER_MACS", 0)  # the model's layers are tiny
    _model(tmp_path / "m.onnx", dynamic_batch=True)
    (tmp_path / "m.yaml").write_text("name: m\nmodel:\n  path: m.onnx\ntargets:\n  local: {}\n")
    return load_manifest(tmp_path / "m.yaml")


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_the_sites_are_the_3x3_stride_1_convolutions_of_an_fp32_onnx_model(
        manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    # a dynamic batch axis is taken as 1, as the importer takes it: every size is known
    assert [s.node for s in winograd.sites(manifest)] == ["conv0", "conv1", "conv2"]
    off = manifest.model_copy(update={"measure": manifest.measure.model_copy(
        update={"winograd": False})})
    assert winograd.sites(off) == []
    int8 = manifest.model_copy(update={"model": manifest.model.model_copy(
        update={"precision": "int8"})})
    assert winograd.sites(int8) == []
    # a layer too small for its timing to mean anything is left alone
    monkeypatch.setattr(winograd, "MIN_LAYER_MACS", winograd.macs(winograd.sites(manifest)[1]))
    assert [s.node for s in winograd.sites(manifest)] == ["conv1", "conv2"]


def test_layers_of_one_shape_share_one_timing_and_the_cpus_are_given_back(manifest) -> None:
    before = available_cpus()
    counts = sorted({1, len(before)})
    timings = winograd.layer_timings(winograd.sites(manifest), counts, budget_s=30.0)
    assert available_cpus() == before
    assert set(timings) == set(counts)
    for t in timings.values():
        assert set(t) == {"conv0", "conv1", "conv2"} and all(min(v) > 0 for v in t.values())
        assert t["conv1"] == t["conv2"]  # one shape, timed once
    # the heaviest shape goes first; a spent budget leaves the rest untimed
    assert winograd.layer_timings(winograd.sites(manifest), [1], budget_s=-1.0) == {1: {}}
    assert winograd.chosen({"a": 1.2, "b": winograd.MIN_LAYER_GAIN, "c": 0.9}) == ["a", "b"]


def test_the_rewritten_file_answers_as_the_model_and_is_cached_by_its_inputs(manifest) -> None:
    path = winograd.variant_file(manifest, ["conv2", "conv0"])
    assert path.parent == Path(manifest.output.build_dir) / "winograd"
    mtime = path.stat().st_mtime_ns
    assert winograd.variant_file(manifest, ["conv0", "conv2"]) == path  # order is no input
    assert path.stat().st_mtime_ns == mtime  # taken from the cache, not written again
    assert winograd.variant_file(manifest, ["conv1"]) != path
    x = np.random.default_rng(1).standard_normal((1, 4, 9, 9)).astype(np.float32)
    want = _run(Path(manifest.model.path), x)
    np.testing.assert_allclose(_run(path, x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    ops = {n.name.split("/")[0] for n in onnx.load(str(path)).graph.node if "/winograd/" in n.name}
    assert ops == {"conv0", "conv2"}
    with pytest.raises(ModelError, match="conv3"):  # strided: not a site of the rewrite
        winograd.variant_file(manifest, ["conv3"])


def test_a_lockfile_that_chose_the_rewrite_runs_it_rebuilt_where_it_is_gone(manifest) -> None:
    graph = model_graph(manifest)
    record = {"chosen": True, "layers": ["conv1"], "layer_gains": {"conv1": 1.3}, "cores": 1,
              "model": "build/winograd/elsewhere.onnx"}
    assert planned_graph(manifest, {"winograd": {**record, "chosen": False}}, graph) is graph
    runs = planned_graph(manifest, {"winograd": record}, graph)
    path = planned_model(manifest, runs)
    assert path == winograd.variant_file(manifest, ["conv1"]) and path.is_file()
    os.remove(path)
    again = planned_graph(manifest, {"winograd": record}, graph)
    assert planned_model(manifest, again) == path and path.is_file()
    assert len(again.layers) > len(graph.layers)
    assert planned_model(manifest, graph) == Path(manifest.model.path)


@pytest.mark.parametrize("c_in,c_out,size", [(8, 16, 10), (16, 8, 9)])
def test_a_layer_is_timed_in_its_context_and_both_forms_compute_the_same(c_in: int, c_out: int,
                                                                         size: int) -> None:
    from edgedeploy.importers.onnx_winograd import ConvSite

    site = ConvSite("conv", c_in, c_out, size, size)
    given, rewritten = winograd.both_forms(site)
    convs = [f"conv{k}" for k in range(winograd.copies(site))]
    assert len(convs) == winograd.CONTEXT_COPIES  # a small layer: copies in a row
    ops = {n.name: n.op_type for n in given.graph.node}
    # each copy of the layer sits between a 1x1 convolution and another, ReLUs beside it
    assert all(ops[c] == "Conv" and ops[f"before{k}"] == ops[f"after{k}"] == "Conv"
               and ops[f"relu{k}"] == "Relu" for k, c in enumerate(convs))
    assert not {n.name for n in rewritten.graph.node} & set(convs)  # every copy rewritten
    x = np.random.default_rng(0).standard_normal((1, c_in, size, size)).astype(np.float32)
    a, b = (ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
            for m in (given, rewritten))
    assert a.shape == (1, c_out, size, size)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


def test_a_layer_of_many_multiply_adds_is_timed_in_one_copy() -> None:
    from edgedeploy.importers.onnx_winograd import ConvSite

    big = ConvSite("conv", 256, 256, 56, 56)  # VGG-16's: 1.85 G multiply-adds
    assert winograd.macs(big) >= winograd.ONE_COPY_MACS and winograd.copies(big) == 1
    assert [n.name for n in winograd.both_forms(big)[0].graph.node if n.op_type == "Conv"] == \
        ["before0", "conv0", "after0"]
    assert winograd.copies(ConvSite("conv", 256, 256, 14, 14)) == winograd.CONTEXT_COPIES
