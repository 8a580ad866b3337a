"""Every dynamic dimension can be fixed: one shape, shapes by input name (CLI and manifest),
symbolic dimensions shared between inputs, batch > 1 planned and run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgedeploy.cli.main import main
from edgedeploy.errors import InputError
from edgedeploy.importers import load_model, parse_input_shapes, plan_shapes
from edgedeploy.schemas import load_manifest


def two_input_model(path: Path) -> Path:
    """image (N, 3, H, W) and mask (N, 4): conv -> global pool -> (N, 4) * mask, N shared."""
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Mul", ["f", "mask"], ["out"], name="gate")]
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("text, want", [
    ("1,3,224,224", (1, 3, 224, 224)),
    ("1x3x224x224", (1, 3, 224, 224)),
    ("input=1x3x224x224,mask=1x10", {"input": (1, 3, 224, 224), "mask": (1, 10)}),
    ("input=1,3,224,224,mask=1,10", {"input": (1, 3, 224, 224), "mask": (1, 10)}),
    ("serving_default_x:0=1x8;y/z=2,5", {"serving_default_x:0": (1, 8), "y/z": (2, 5)}),
])
def test_input_shapes_parse_as_one_shape_or_shapes_by_name(text, want) -> None:
    assert parse_input_shapes(text) == want


@pytest.mark.parametrize("text", ["a=1x2,a=3", "=1x2", "a=1x0", "a=x"])
def test_bad_input_shapes_are_input_errors(text) -> None:
    with pytest.raises(InputError):
        parse_input_shapes(text)


def test_shapes_by_name_fix_several_inputs_and_a_shared_symbol(tmp_path) -> None:
    path = two_input_model(tmp_path / "m.onnx")
    graph = load_model(path, input_shape={"image": (2, 3, 8, 12)})  # N binds mask's N too
    assert {t.name: t.shape for t in graph.inputs} == {"image": (2, 3, 8, 12), "mask": (2, 4)}
    assert graph.outputs[0].shape == (2, 4)
    both = load_model(path, input_shape={"image": (3, 3, 8, 8), "mask": (3, 4)})
    assert both.outputs[0].shape == (3, 4)


def test_dynamic_inputs_left_open_or_unknown_names_say_how_to_fix_them(tmp_path) -> None:
    path = two_input_model(tmp_path / "m.onnx")
    with pytest.raises(InputError) as info:
        load_model(path)
    assert "name=" in (info.value.hint or "") and "input_shapes" in (info.value.hint or "")
    with pytest.raises(InputError, match="image, mask"):
        load_model(path, input_shape={"imgae": (1, 3, 8, 8)})


def test_run_with_shapes_by_name_at_batch_2_matches_onnxruntime(tmp_path, capsys) -> None:
    path = two_input_model(tmp_path / "m.onnx")
    code = main(["run", str(path), "--input-shape", "image=2x3x8x8,mask=2x4", "--frames", "2",
                 "--warmup", "0", "--verify", "--sequential", "--json"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["max_rel_error"] <= 1e-5


def _manifest(folder: Path, model: Path, shapes: str) -> Path:
    path = folder / "edgedeploy.yaml"
    path.write_text(f"name: two\nmodel:\n  path: {model}\n{shapes}targets:\n  local: {{}}\n"
                    "output:\n  plans_dir: .\n")
    return path


def test_manifest_input_shapes_are_validated_and_merged(tmp_path) -> None:
    model = two_input_model(tmp_path / "m.onnx")
    m = load_manifest(_manifest(tmp_path, model, "  input_shapes:\n    image: [2, 3, 8, 8]\n"))
    assert m.model.shape_override() == {"image": [2, 3, 8, 8]}
    m = load_manifest(_manifest(tmp_path, model, "  input_name: mask\n  input_shape: [2, 4]\n"
                                "  input_shapes:\n    image: [2, 3, 8, 8]\n"))
    assert m.model.shape_override() == {"image": [2, 3, 8, 8], "mask": [2, 4]}
    for bad in ("  input_shapes:\n    image: [2, 0, 8, 8]\n",
                "  input_shape: [2, 4]\n  input_shapes:\n    image: [2, 3, 8, 8]\n"):
        with pytest.raises(InputError):
            load_manifest(_manifest(tmp_path, model, bad))


def test_a_planned_multi_input_batch_2_model_runs_from_its_lockfile(tmp_path, capsys) -> None:
    model = two_input_model(tmp_path / "m.onnx")
    manifest = _manifest(tmp_path, model, "  input_shapes:\n    image: [2, 3, 8, 8]\n")
    assert main(["plan", str(manifest), "--no-measure", "--json"]) == 0, capsys.readouterr().err
    plan_file = Path(json.loads(capsys.readouterr().out)["plan_file"])
    block = json.loads(plan_file.read_text())["model"]
    assert plan_shapes(block) == {"image": (2, 3, 8, 8), "mask": (2, 4)}
    code = main(["run", str(plan_file), "--frames", "2", "--warmup", "0", "--verify",
                 "--sequential", "--json"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["max_rel_error"] <= 1e-5
