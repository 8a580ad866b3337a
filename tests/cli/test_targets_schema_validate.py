"""`edgedeploy targets`, `schema` and `validate` through typer's runner and the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgedeploy.boards.catalog import list_targets
from edgedeploy.cli.main import app, main
from edgedeploy.schemas.manifest import Manifest
from edgedeploy.schemas.plan import Plan
from edgedeploy.schemas.target import Target

runner = CliRunner()

GOOD = """\
name: demo
model:
  path: model.onnx
targets:
  local: {}
  jetson: {board: jetson-tx2, host: jetson.local, user: nvidia}
"""


def _manifest(tmp_path: Path, text: str) -> Path:
    (tmp_path / "model.onnx").write_bytes(b"x")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_targets_list_prints_one_row_per_board() -> None:
    result = runner.invoke(app, ["targets", "list"])
    assert result.exit_code == 0, result.output
    for name in list_targets():
        assert f"\n{name}\t" in result.stdout
    assert "256-core pascal-gp10b" in result.stdout


def test_targets_list_json_holds_every_board_with_its_clusters() -> None:
    result = runner.invoke(app, ["targets", "list", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [t["name"] for t in data["targets"]] == list_targets()
    tx2 = next(t for t in data["targets"] if t["name"] == "jetson-tx2")
    assert tx2["arch"] == "aarch64" and "denver2" in tx2["clusters"]


def test_targets_show_json_is_a_valid_descriptor() -> None:
    result = runner.invoke(app, ["targets", "show", "jetson-tx2", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert Target.model_validate(data).gpu is not None
    assert data["clusters"][0]["cpu_ids"] == [1, 2]


def test_targets_show_local_includes_the_fingerprint() -> None:
    data = json.loads(runner.invoke(app, ["targets", "show", "local", "--json"]).stdout)
    assert len(data["fingerprint"]) == 16
    text = runner.invoke(app, ["targets", "show", "local"]).stdout
    assert f"fingerprint {data['fingerprint']}" in text
    for cluster in data["clusters"]:  # what the fingerprint tells apart, shown to the user
        if cluster["simd"]:
            assert f"{cluster['name']} SIMD: {' '.join(cluster['simd'])}" in text


def test_targets_show_unknown_board_exits_2_with_suggestion(capsys: pytest.CaptureFixture) -> None:
    assert main(["targets", "show", "rpi3"]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'rpi3'" in err and "did you mean" in err and "Traceback" not in err


@pytest.mark.parametrize(("which", "model"), [("manifest", Manifest), ("target", Target),
                                               ("plan", Plan)])
def test_schema_prints_draft7_json_schema(which: str, model: type) -> None:
    result = runner.invoke(app, ["schema", which])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert set(schema["properties"]) == set(model.model_fields)


def test_schema_of_an_unknown_kind_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["schema", "lockfile"]) == 2


def test_validate_recognises_a_lockfile_and_checks_it(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    lock = Path(__file__).resolve().parents[2] / "plans" / "tx2.jetson.plan.json"
    assert main(["validate", str(lock)]) == 0
    captured = capsys.readouterr()
    assert "plan lockfile of tx2 for jetson (jetson-tx2)" in captured.out
    assert "unverified" in captured.err and "unknown" not in captured.err
    data = json.loads(runner.invoke(app, ["validate", str(lock), "--json"]).stdout)
    assert data["kind"] == "plan" and "onnxruntime-tensorrt" in data["engines"]
    bad = json.loads(lock.read_text())
    bad["layers"][0]["engine"] = "tensorrt"
    (tmp_path / "bad.plan.json").write_text(json.dumps(bad))
    assert main(["validate", str(tmp_path / "bad.plan.json")]) == 2
    assert "engine(s) ['tensorrt']" in capsys.readouterr().err


def test_validate_ok_prints_a_one_line_summary(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    path = _manifest(tmp_path, GOOD)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("OK ") and "demo" in out[0] and "model.onnx" in out[0]
    assert "jetson (jetson-tx2 via ssh jetson.local)" in out[0]


def test_validate_json_summarises_the_resolved_manifest(tmp_path: Path) -> None:
    path = _manifest(tmp_path, GOOD)
    result = runner.invoke(app, ["validate", str(path), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["name"] == "demo"
    assert data["model"] == {"path": str(tmp_path / "model.onnx"), "format": "onnx"}
    assert data["targets"]["jetson"] == {"board": "jetson-tx2", "transport": "ssh",
                                         "hosts": ["jetson.local"]}


@pytest.mark.parametrize(("text", "where"), [
    (GOOD.replace("targets:", "pipline:\n  max_stages: 2\ntargets:"), ":4:1:"),
    (GOOD.replace("model.onnx", "missing.onnx"), ":3:9:"),
    (GOOD.replace("jetson-tx2", "jetson-tx9"), ":6:19:"),
    ("name: [unclosed\n", ":2:1:"),
    ("", ":1:1:"),
])
def test_validate_bad_manifest_exits_2_naming_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, text: str, where: str) -> None:
    path = _manifest(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}{where}" in captured.err
    assert "Traceback" not in captured.err


def test_validate_json_on_error_prints_the_issues_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _manifest(tmp_path, GOOD + "objective: fast\n")
    assert main(["validate", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ok"] is False
    assert data["errors"][0]["line"] == 7 and data["errors"][0]["field"] == "objective"
    assert f"{path}:7:12:" in captured.err


def test_validate_binary_and_missing_files_exit_2(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    binary = tmp_path / "b.yaml"
    binary.write_bytes(bytes(range(256)))
    assert main(["validate", str(binary)]) == 2
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err
    assert "binary file" in err and "file not found" in err


def test_every_command_help_has_an_example() -> None:
    for argv in (["targets", "list"], ["targets", "show"], ["schema"], ["validate"]):
        result = runner.invoke(app, [*argv, "--help"])
        assert result.exit_code == 0 and "Example: edgedeploy" in result.stdout, argv
