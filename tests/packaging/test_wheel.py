"""A wheel install (not only an editable one) ships the board descriptors and templates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_package_targets_and_templates(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0 and "hatchling" in proc.stderr:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
             str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("edgedeploy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgedeploy/cli/main.py" in names
    assert "edgedeploy/runtime/ir.py" in names
    board_files = [n for n in names if n.startswith("edgedeploy/_data/targets/")]
    assert any(n.endswith("jetson-tx2.yaml") for n in board_files)
    assert any(n.startswith("edgedeploy/_data/templates/") for n in names)
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "edgedeploy = edgedeploy.cli.main:run" in zipfile.ZipFile(wheel).read(
        entry[0]).decode()


def test_console_script_runs_in_a_subprocess() -> None:
    exe = Path(sys.executable).parent / "edgedeploy"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("edgedeploy ")
    assert "onnxruntime" in proc.stdout and "litert" in proc.stdout
