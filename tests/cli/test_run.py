"""`edgedeploy run`: real execution on pinned cores, verified against onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgedeploy import zoo
from edgedeploy.cli.main import main


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.export("resnet18", tmp_path_factory.mktemp("run") / "r18.onnx", size=32)


def test_run_verify_reports_max_rel_error_in_json(model, capsys) -> None:
    assert main(["run", str(model), "--verify", "--frames", "5", "--sequential", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("throughput_fps", "latency_ms_p50", "latency_ms_p99", "stages", "max_rel_error"):
        assert key in data
    assert data["max_rel_error"] <= 1e-4
    assert data["throughput_fps"] > 0


def test_two_stage_pipeline_on_two_cores(model, capsys) -> None:
    code = main(["run", str(model), "--stages", "2", "--cores", "0:1", "--frames", "10",
                 "--verify", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["cpus"] for s in data["stages"]] == [[0], [1]]
    assert all(s["frames"] == 10 for s in data["stages"])
    assert data["max_rel_error"] <= 1e-4


@pytest.mark.parametrize("args, message", [
    (["--primitive", "winograd_f5x3"], "unknown primitive"),
    (["--cores", "0:99", "--stages", "2"], "not available"),
    (["--cores", "a,b"], "expected core ids"),
    (["--stages", "0"], "--stages"),
])
def test_bad_arguments_exit_2_with_a_clear_message(model, capsys, args, message) -> None:
    assert main(["run", str(model), "--frames", "1", *args]) == 2
    assert message in capsys.readouterr().err
