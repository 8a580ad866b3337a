"""`edgedeploy init` and `edgedeploy build` through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from edgedeploy import zoo
from edgedeploy.cli.main import app, main
from edgedeploy.schemas import load_manifest

runner = CliRunner()


def _model(tmp: Path) -> Path:
    return zoo.export("squeezenet1_1", tmp / "net.onnx", size=32, num_classes=10)


def test_init_writes_a_valid_manifest_and_the_make_include(tmp_path: Path) -> None:
    model = _model(tmp_path)
    res = runner.invoke(app, ["init", str(tmp_path), "--model", str(model), "--board", "rpi4",
                              "--json"])
    assert res.exit_code == 0, res.output
    manifest = load_manifest(tmp_path / "edgedeploy.yaml")
    assert manifest.targets["device"].board == "rpi4" and "local" in manifest.targets
    mk = tmp_path / "edgedeploy.mk"
    out = subprocess.run(["make", "-n", "-f", str(mk), "edgedeploy-build"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert "build \"edgedeploy.yaml\"" in out


def test_init_never_overwrites_without_force(tmp_path: Path, capsys) -> None:
    (tmp_path / "edgedeploy.yaml").write_text("mine\n")
    assert main(["init", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "edgedeploy.yaml").read_text() == "mine\n"
    assert not (tmp_path / "edgedeploy.mk").exists()
    res = runner.invoke(app, ["init", str(tmp_path), "--force"])
    assert res.exit_code == 0 and "name:" in (tmp_path / "edgedeploy.yaml").read_text()


def test_build_from_a_model_makes_a_one_stage_bundle(tmp_path: Path) -> None:
    model = _model(tmp_path)
    out = tmp_path / "b"
    res = runner.invoke(app, ["build", str(model), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["family"] == "linux" and len(data["id"]) == 16
    config = json.loads((out / "app/config.json").read_text())
    assert len(config["plans"]["plan0"]["stages"]) == 1


def test_build_with_a_board_family_renders_that_family(tmp_path: Path) -> None:
    model = _model(tmp_path)
    res = runner.invoke(app, ["build", str(model), "-o", str(tmp_path / "j"), "--target",
                              "jetson-tx2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["family"] == "jetson"
    assert "tegrastats" in (tmp_path / "j" / "run.sh").read_text()


def test_build_of_a_missing_file_is_a_clean_error(tmp_path: Path, capsys) -> None:
    assert main(["build", str(tmp_path / "none.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
