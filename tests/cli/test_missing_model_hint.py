"""A missing model named like a zoo model (the README's examples) gets the command that writes
it; other names get the path rule. Exit 2 either way, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedeploy.cli.main import main


@pytest.mark.parametrize(("argv", "command"), [
    (["inspect", "resnet50.onnx"], "edgedeploy zoo export resnet50 -o resnet50.onnx"),
    (["run", "yolo.onnx", "--frames", "2"], "edgedeploy zoo export yolo_tiny -o yolo.onnx"),
    (["inspect", "mobilenet_v2_224.onnx"],
     "edgedeploy zoo export mobilenet_v2 -o mobilenet_v2_224.onnx"),
])
def test_a_missing_zoo_model_names_the_export_command(argv, command, tmp_path, monkeypatch,
                                                      capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model file not found" in err and command in err and "Traceback" not in err


def test_the_manifest_example_names_the_export_command(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "demo.yaml").write_text(
        "name: demo\nmodel:\n  path: ../demo-out/mobilenet_v2.onnx\ntargets:\n  local: {}\n")
    assert main(["validate", "plans/demo.yaml"]) == 2
    err = capsys.readouterr().err
    assert "plans/demo.yaml:3:" in err
    assert "edgedeploy zoo export mobilenet_v2 -o demo-out/mobilenet_v2.onnx" in err


def test_other_names_get_the_path_rule_only(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "detector.onnx"]) == 2
    err = capsys.readouterr().err
    assert "zoo export" not in err and "check the path" in err


def test_bench_of_a_missing_model_names_the_file_not_a_manifest_it_made(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "resnet50.onnx"]) == 2
    err = capsys.readouterr().err
    assert "model file not found: resnet50.onnx" in err
    assert "edgedeploy zoo export resnet50 -o resnet50.onnx" in err
    assert "bench.yaml" not in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["plan", "validate"])
def test_a_model_given_where_a_manifest_goes_gets_the_two_ways_on(command, tmp_path: Path,
                                                                  monkeypatch, capsys) -> None:
    from edgedeploy import zoo

    monkeypatch.chdir(tmp_path)
    zoo.export("squeezenet1_1", tmp_path / "net.onnx", size=32)
    assert main([command, "net.onnx"]) == 2
    err = capsys.readouterr().err
    assert "net.onnx: a model file, not a YAML manifest" in err
    assert "edgedeploy init --model net.onnx" in err and "edgedeploy bench net.onnx" in err
    assert "NUL byte" not in err and "Traceback" not in err
