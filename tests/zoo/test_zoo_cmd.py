"""`edgedeploy zoo list|export` through the real CLI entry point."""

from __future__ import annotations

import hashlib
import json

import onnx
import pytest

from edgedeploy import zoo
from edgedeploy.cli.main import main


def test_export_writes_a_loadable_model_and_returns_0(tmp_path, capsys) -> None:
    path = tmp_path / "out" / "resnet18.onnx"
    assert main(["zoo", "export", "resnet18", "-o", str(path), "--size", "64"]) == 0
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]
    err = capsys.readouterr().err
    assert "wrote" in err and "resnet18" in err and len(err.strip().splitlines()) == 1


def test_export_is_reproducible_and_seed_and_batch_are_honoured(tmp_path) -> None:
    a, b, c = (tmp_path / f"{k}.onnx" for k in "abc")
    argv = ["zoo", "export", "squeezenet1_1", "--size", "48", "--seed", "5", "--batch", "2"]
    assert main([*argv, "-o", str(a)]) == 0
    assert main([*argv, "-o", str(b)]) == 0
    assert main(["zoo", "export", "squeezenet1_1", "--size", "48", "-o", str(c)]) == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert a.read_bytes() == zoo.build("squeezenet1_1", size=48, seed=5,
                                       batch=2).SerializeToString()


def test_export_json_summary_describes_the_written_file(tmp_path, capsys) -> None:
    path = tmp_path / "m.onnx"
    assert main(["zoo", "export", "mobilenet_v2", "-o", str(path), "--size", "96",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "mobilenet_v2" and data["size"] == 96
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["bytes"] == path.stat().st_size
    assert data["outputs"] == ["logits"] and data["params"] == 3_504_872


@pytest.mark.parametrize("argv", [
    ["zoo", "export", "resnet-19", "-o", "x.onnx"],  # unknown model
    ["zoo", "export", "yolo_tiny", "-o", "x.onnx", "--size", "100"],  # not a multiple of 32
    ["zoo", "export", "alexnet", "-o", "x.onnx", "--size", "32"],  # too small
    ["zoo", "export", "resnet18"],  # no output path
])
def test_bad_export_arguments_exit_2_without_writing(argv, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_message_suggests_the_closest_name(capsys) -> None:
    assert main(["zoo", "export", "mobilenetv2", "-o", "/nonexistent/x.onnx"]) == 2
    err = capsys.readouterr().err
    assert "unknown zoo model" in err and "mobilenet_v2" in err
    assert "Traceback" not in err


def test_list_json_gives_every_model_with_its_published_figures(capsys) -> None:
    assert main(["zoo", "list", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert [m["name"] for m in models] == zoo.list_models()
    resnet50 = next(m for m in models if m["name"] == "resnet50")
    assert resnet50["published_gmacs"] == pytest.approx(4.09)
    assert resnet50["published_params"] == 25_557_032
    assert resnet50["input_shape"] == [1, 3, 224, 224]
    assert all(m["source"] and m["description"] for m in models)


def test_list_prints_one_row_per_model(capsys) -> None:
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in zoo.list_models():
        assert name in out
    assert "15.470" in out  # VGG-16's published GMACs
