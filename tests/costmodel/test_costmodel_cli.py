"""`edgedeploy profile` and `edgedeploy costmodel` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from edgedeploy.cli.main import main
from edgedeploy.zoo import build


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_tiny_real_profile_on_the_local_target_then_export_and_reimport(capsys, tmp_path):
    assert main(["profile", "--target", "local", "--budget-s", "3", "--shapes", "space",
                 "--json"]) == 0
    out = _json(capsys)
    assert out["new_samples"] > 0 and out["samples"] == out["new_samples"]
    profile = json.loads(Path(out["profile"]).read_text())
    sample = profile["samples"][0]
    assert sample["ms"] > 0 and sample["config"].startswith(profile["target"]["descriptor"]
                                                            ["clusters"][0]["name"])
    assert profile["runtime"]["onnxruntime"] and profile["runtime"]["blas"]

    exported = tmp_path / "local.json"
    assert main(["profile", "--target", "local", "--export", str(exported), "--json"]) == 0
    capsys.readouterr()
    assert main(["profile", "--target", "local", "--import", str(exported), "--json"]) == 0
    assert _json(capsys)["samples"] == out["samples"]  # nothing duplicated


def test_import_of_a_corrupt_file_exits_2_with_a_message(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert main(["profile", "--target", "local", "--import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a readable profile" in err and "Traceback" not in err
    assert bad.read_text() == "{oops"


def test_predict_prints_every_layer_for_a_board_never_profiled(capsys, tmp_path):
    path = tmp_path / "sq.onnx"
    onnx.save(build("squeezenet1_1", size=64, seed=0), path)
    assert main(["costmodel", "predict", str(path), "--target", "jetson-tx2", "--json"]) == 0
    out = _json(capsys)
    assert out["source"] == "prior"
    assert out["configs"][-1] == "gpu:1" and len(out["configs"]) == 7
    conv = next(layer for layer in out["layers"] if layer["op"] == "conv2d")
    assert "onnxruntime" in conv["ms"]["gpu:1"] and "im2col_gemm/nchw" in conv["ms"]["a57:4"]
    assert all(v > 0 for v in out["best_total_ms"].values())
    assert main(["costmodel", "predict", str(path), "--target", "rpi4"]) == 0
    assert "a72:4" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["profile", "--target", "rpi4", "--budget-s", "1"],
                                  ["costmodel", "eval", "--target", "rpi4"]])
def test_boards_that_cannot_be_reached_yet_are_a_clear_input_error(capsys, args):
    assert main(args) == 2
    assert "cannot be" in capsys.readouterr().err
