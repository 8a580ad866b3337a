"""-v logs what the planner decides and from what; -vv adds every layer's choice; without -v
stderr carries no log lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgedeploy import zoo

EXE = str(Path(sys.executable).with_name("edgedeploy"))


def _plan(tmp_path: Path, *flags: str) -> str:
    res = subprocess.run([EXE, *flags, "plan", "m.yaml", "--target", "tx2", "--no-measure"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stderr


def test_verbosity_levels_log_the_planners_decisions(tmp_path: Path) -> None:
    zoo.export("squeezenet1_1", tmp_path / "m.onnx", size=32)
    (tmp_path / "m.yaml").write_text(
        "name: v\nmodel: m.onnx\ntargets:\n  tx2: {board: jetson-tx2}\n")
    quiet = _plan(tmp_path)
    assert "INFO" not in quiet and "DEBUG" not in quiet
    info = _plan(tmp_path, "-v")
    assert "plan tx2 on jetson-tx2: cost model prior" in info and "predicted" in info
    assert "baseline onnxruntime_replicas" in info and "DEBUG" not in info
    assert "check " not in info  # plan does not check
    debug = _plan(tmp_path, "-vv")
    assert debug.count("DEBUG edgedeploy.planner: plan tx2: ") >= 20  # one line per layer
