"""An int8 model that breaks the accuracy guard is mended by keeping its worst regions fp32.

The network is built so that one place ruins int8: its input carries one huge value a pixel (a
sensor's saturated pixel, say) on a channel its first conv ignores, so the uint8 scale of the
input swamps every other input value (all round to zero), while the tensors after the first conv
quantize well. The guard figures are recomputed here with onnxruntime on the files the lockfile
names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.cli.main import main
from edgedeploy.importers.quantize import prepare, quantize
from edgedeploy.planner import plan
from edgedeploy.planner.sensitivity import added_errors, quantized_nodes, ranked_regions, regions
from edgedeploy.schemas.plan import load_plan

CONVS = 8
FRAMES = 10  # the last 2 are held out for the guard
BOUND = 0.05  # the manifest default

MANIFEST = """name: net
model:
  path: net.onnx
  precision: {precision}
  calibration: frames.npz
  max_output_error: {bound}
{extra}targets:
  local: {{board: local}}
measure: {{enabled: false}}
"""


def _network(path: Path) -> None:
    """A classifier of which of input channels 1 and 2 is brighter (classes 3 and 7): the first
    conv reads them, the rest pass their channels on (identity convs), a pooled head."""
    nodes, inits, x = [], [], "input"
    for k in range(CONVS):
        w = np.zeros((8, 3 if k == 0 else 8, 3, 3), np.float32)
        if k == 0:  # channel 0, where the outlier is, does not reach the rest
            for c in range(4):
                w[c, 1, 1, 1] = (c + 1) / 4
                w[c + 4, 2, 1, 1] = (c + 1) / 4
        else:
            w[np.arange(8), np.arange(8), 1, 1] = 1.0
        inits += [numpy_helper.from_array(w, f"w{k}"),
                  # a bias a layer, alike over channels (no class favoured) and unlike between
                  # layers (identical constants would be merged into one, shared across layers)
                  numpy_helper.from_array(np.full(8, 0.01 * (k + 1), np.float32), f"b{k}")]
        nodes += [helper.make_node("Conv", [x, f"w{k}", f"b{k}"], [f"c{k}"], name=f"conv{k}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}")]
        x = f"r{k}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["output"], name="flatten")]
    graph = helper.make_graph(
        nodes, "outlier", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                         [1, 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _frames() -> np.ndarray:
    frames = np.random.default_rng(1).random((FRAMES, 1, 3, 16, 16), dtype=np.float32)
    frames[:, 0, 0, 0, 0] = 1000.0
    return frames


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("outlier")
    _network(folder / "net.onnx")
    np.savez(folder / "frames.npz", input=_frames())
    return folder


def _project(folder: Path, source: Path, precision: str = "int8", bound: object = BOUND,
             extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("net.onnx", "frames.npz"):
        shutil.copy(source / name, folder / name)
    manifest = folder / "m.yaml"
    manifest.write_text(MANIFEST.format(precision=precision, bound=bound, extra=extra))
    return manifest


@pytest.fixture(scope="module")
def mixed_plan(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = _project(tmp_path_factory.mktemp("mixed"), source)
    assert main(["plan", str(manifest), "--target", "local"]) == 0
    return manifest.parent / "net.local.plan.json"


def _error(model: Path, reference: Path, frames: np.ndarray) -> float:
    def outputs(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.stack([sess.run(None, {"input": f})[0] for f in frames])

    got, want = outputs(model), outputs(reference)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def test_the_guard_keeps_the_ruinous_region_fp32_and_the_rest_int8(mixed_plan: Path) -> None:
    p = load_plan(mixed_plan)
    prec = p.precision
    assert prec is not None and (prec.requested, prec.chosen) == ("int8", "int8")
    assert "conv0" in prec.fp32_nodes and len(prec.fp32_nodes) < (2 * CONVS + 2) / 2
    assert "wholly int8 refused" in (prec.reason or "")
    folder, held = mixed_plan.parent, _frames()[-2:]
    mixed = p.model_path(mixed_plan)
    whole = next((folder / "build/precision").glob("net.int8.*.onnx"))
    # the wholly int8 model breaks the bound; the planned one, recomputed, keeps it
    assert _error(whole, folder / "net.onnx", held) > BOUND
    error = _error(mixed, folder / "net.onnx", held)
    assert prec.measured_error == pytest.approx(error, rel=1e-4) and error <= BOUND
    # the lockfile says which layers compute in int8: the first conv not, the last ones so
    layers = {layer.name: layer.precision for layer in p.layers}
    assert layers["conv0"] is None and layers[f"conv{CONVS - 1}"] == "int8"


def test_the_mixed_plan_runs_and_matches_onnxruntime(
        mixed_plan: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", str(mixed_plan), "--verify", "--sequential", "--frames", "3",
               "--warmup", "0", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["max_rel_error"] <= 1e-4


def test_replanning_reuses_the_mixed_model(mixed_plan: Path) -> None:
    text = mixed_plan.read_text()
    folder = mixed_plan.parent / "build/precision"
    before = {f: f.stat().st_mtime_ns for f in folder.iterdir()}
    again = plan(mixed_plan.parent / "m.yaml", "local")[0]
    assert not again.written and mixed_plan.read_text() == text
    assert {f: f.stat().st_mtime_ns for f in folder.iterdir()} == before


def test_no_passing_mix_refuses_int8_with_the_best_error(
        source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _project(tmp_path, source, bound="1e-9")
    assert main(["plan", str(manifest), "--target", "local"]) == 3
    err = capsys.readouterr().err
    assert "with up to half the model kept fp32 the best was" in err
    assert "Traceback" not in err and not (tmp_path / "net.local.plan.json").exists()


def test_auto_keeps_fp32_and_remembers_that_no_mix_passed(source: Path, tmp_path: Path
                                                          ) -> None:
    manifest = _project(tmp_path, source, precision="auto", bound="1e-9")
    p = load_plan(plan(manifest, "local")[0].plan_file)
    assert p.precision is not None and p.precision.chosen == "fp32"
    assert p.precision.fp32_nodes == [] and "int8 refused" in (p.precision.reason or "")
    record = next((tmp_path / "build/precision").glob("net.mixed.*.guard.json"))
    assert json.loads(record.read_text())["fp32_nodes"] is None
    stamp = record.stat().st_mtime_ns
    plan(manifest, "local")
    assert record.stat().st_mtime_ns == stamp  # the failed search is not run again


def test_the_first_conv_adds_the_most_error(source: Path, tmp_path: Path) -> None:
    frames = [{"input": f} for f in _frames()[:8]]
    pre = prepare(source / "net.onnx", str(tmp_path / "pre.onnx"))
    quantize(pre, tmp_path / "int8.onnx", frames, prepared=True)
    added = added_errors(pre, tmp_path / "int8.onnx", frames[:4])
    assert max(added, key=added.__getitem__) == "conv0"
    assert all(v >= 0 for v in added.values())


def test_quantized_nodes_trace_their_inputs_to_fp32_tensors(source: Path, tmp_path: Path
                                                            ) -> None:
    frames = [{"input": f} for f in _frames()[:4]]
    quantize(source / "net.onnx", tmp_path / "int8.onnx", frames)
    reference = onnx.load(str(source / "net.onnx"))
    fp32_tensors = {"input"} | {o for n in reference.graph.node for o in n.output}
    nodes = quantized_nodes(onnx.load(str(tmp_path / "int8.onnx")))
    assert {n.name for n in nodes} >= {f"conv{k}" for k in range(CONVS)}
    for node in nodes:
        assert set(node.inputs) <= fp32_tensors and node.inputs  # no weights, no QDQ names


@given(st.integers(0, 60), st.integers(1, 12))
def test_regions_cut_the_node_order_into_near_equal_contiguous_runs(n: int, count: int) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["x"], name=f"n{k}")
                               for k in range(n)], "g", [], [])
    parts = regions(helper.make_model(graph), count)
    assert [name for part in parts for name in part] == [f"n{k}" for k in range(n)]
    assert len(parts) == min(count, n) and all(parts)
    if parts:
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@given(st.lists(st.floats(0, 10), min_size=1, max_size=10))
def test_regions_rank_by_the_error_their_nodes_add(scores: list[float]) -> None:
    parts = [[f"a{k}", f"b{k}"] for k in range(len(scores))]
    added = {f"a{k}": s / 2 for k, s in enumerate(scores)} | {
        f"b{k}": s / 2 for k, s in enumerate(scores)}
    order = ranked_regions(parts, added)
    assert sorted(order) == list(range(len(scores)))
    keys = [(-(added[f"a{k}"] + added[f"b{k}"]), k) for k in order]
    assert keys == sorted(keys)


def test_plan_says_which_nodes_it_kept_fp32(mixed_plan: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(mixed_plan.parent / "m.yaml"), "--target", "local"]) == 0
    err = capsys.readouterr().err
    assert "precision int8 (requested int8): max relative error" in err
    assert "node(s) kept fp32 (conv0" in err


def test_a_top1_bound_refuses_what_the_error_bound_lets_through(
        source: Path, tmp_path: Path) -> None:
    """A classifier's user bounds top-1 agreement: the wholly int8 model, within a loose error
    bound, flips classes; keeping the ruinous region fp32 agrees on every held-out frame."""
    loose = _project(tmp_path / "loose", source, bound=100)
    p = load_plan(plan(loose, "local")[0].plan_file)
    assert p.precision is not None and p.precision.fp32_nodes == []
    assert p.precision.top1_agreement is not None and p.precision.top1_agreement < 1.0
    bounded = _project(tmp_path / "bounded", source, bound=100,
                       extra="  min_top1_agreement: 1.0\n")
    q = load_plan(plan(bounded, "local")[0].plan_file)
    assert q.precision is not None and q.precision.chosen == "int8"
    assert q.precision.top1_agreement == 1.0 and q.precision.min_top1_agreement == 1.0
    assert "conv0" in q.precision.fp32_nodes
    assert "min_top1_agreement 100.0%" in (q.precision.reason or "")
