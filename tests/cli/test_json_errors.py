"""With --json a failing command still prints one JSON object on stdout, with the documented
exit code; ``push --locked`` refuses a stale lockfile with the stale exit code and writes
nothing."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from edgedeploy import zoo
from edgedeploy.cli.main import main
from edgedeploy.errors import ExitCode

MANIFEST = """name: tiny
model:
  path: tiny.onnx
objective: throughput
measure: {{enabled: false}}
targets:
  local: {{board: local, path: {board}}}
  tx2: {{board: jetson-tx2}}
  far:
    board: local
    user: ci
    hosts: ['127.0.0.1:{port}']
{extra}"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    zoo.export("squeezenet1_1", path, size=32)
    return path


@pytest.fixture
def project(tmp_path: Path, model_file: Path) -> Path:
    shutil.copy(model_file, tmp_path / "tiny.onnx")
    _write(tmp_path)
    return tmp_path


def _write(project: Path, extra: str = "") -> Path:
    path = project / "m.yaml"
    path.write_text(MANIFEST.format(board=project / "board", port=_closed_port(), extra=extra))
    return path


def _one_json_error(capsys: pytest.CaptureFixture[str], code: int) -> dict:
    out = capsys.readouterr().out
    data = json.loads(out)  # exactly one object: json.loads refuses trailing data
    err = data["error"]
    assert err["exit_code"] == code and err["message"]
    return err


def test_infeasible_plan_is_a_json_error_with_exit_3(project: Path, capsys) -> None:
    m = _write(project, "constraints:\n  min_throughput_fps: 1000000\n")
    assert main(["plan", str(m), "--target", "tx2", "--json"]) == ExitCode.INFEASIBLE
    err = _one_json_error(capsys, ExitCode.INFEASIBLE)
    assert err["code"] == "infeasible" and "throughput" in err["message"]


def test_unreachable_status_is_a_json_error_with_exit_4(project: Path, capsys) -> None:
    rc = main(["status", "-m", str(project / "m.yaml"), "--target", "far", "--json"])
    assert rc == ExitCode.UNREACHABLE
    out = json.loads(capsys.readouterr().out)
    # status answers per host: the one object carries the failure and the exit code
    assert out.get("exit_code", out.get("error", {}).get("exit_code")) == ExitCode.UNREACHABLE


@pytest.mark.parametrize("argv", [
    ["validate", "no-such.yaml", "--json"],
    ["plan", "no-such.yaml", "--json"],
    ["inspect", "no-such.onnx", "--json"],
    ["plan", "no-such.yaml", "--json", "--no-such-flag"],
])
def test_bad_input_is_a_json_error_with_exit_2(argv: list[str], capsys) -> None:
    assert main(argv) == ExitCode.BAD_INPUT
    err = _one_json_error(capsys, ExitCode.BAD_INPUT)
    assert err["code"] == "bad_input"


def test_without_json_stdout_stays_empty_on_failure(capsys) -> None:
    assert main(["plan", "no-such.yaml"]) == ExitCode.BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == "" and "no-such.yaml" in captured.err


def test_push_locked_refuses_a_stale_lockfile_and_writes_nothing(project: Path, capsys) -> None:
    m = project / "m.yaml"
    before = sorted(p.name for p in project.iterdir())
    assert main(["push", "-m", str(m), "--target", "local", "--locked", "--json"]) \
        == ExitCode.STALE
    err = _one_json_error(capsys, ExitCode.STALE)
    assert err["code"] == "stale_lockfile" and "edgedeploy plan" in err["hint"]
    assert sorted(p.name for p in project.iterdir()) == before  # no lockfile, no bundle, no board
    assert main(["plan", str(m), "--target", "local", "--check"]) == ExitCode.STALE
