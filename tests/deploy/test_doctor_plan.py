"""doctor checks what the target's plan needs (its engines' packages and providers), and its
install hint works where the system Python refuses pip (PEP 668: Debian 12, Raspberry Pi OS
Bookworm): a venv on the board and the manifest's ``python:`` pointing at it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgedeploy import zoo
from edgedeploy.cli.main import main
from edgedeploy.deploy.doctor import doctor
from edgedeploy.deploy.local import LocalTransport

SYSTEM_PYTHON = Path("/usr/bin/python3")
MISSING = "edgedeploy-no-such-dist"


def test_doctor_takes_its_requirements_from_the_lockfile(tmp_path: Path, capsys) -> None:
    zoo.export("squeezenet1_1", tmp_path / "m.onnx", size=32)
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text(f"name: d\nmodel: m.onnx\ntargets:\n  here: {{board: local, path: "
                        f"{tmp_path / 'board'}, python: {sys.executable}}}\n")
    base = ["-m", str(manifest), "--target", "here", "--json"]
    assert main(["doctor", *base]) == 0
    before = json.loads(capsys.readouterr().out)["hosts"][0]
    assert before["requires_from"] == "default" and set(before["requires"]) == {"numpy"}

    assert main(["plan", str(manifest), "--target", "here", "--no-measure"]) == 0
    plan = json.loads((tmp_path / "d.here.plan.json").read_text())
    engines = {e for s in plan["stages"] for e in [s["engine"], *s["engines"]]}
    capsys.readouterr()
    assert main(["doctor", *base]) == 0
    after = json.loads(capsys.readouterr().out)["hosts"][0]
    assert after["requires_from"].endswith("d.here.plan.json")
    assert "numpy" in after["requires"]
    assert ("onnxruntime" in after["requires"]) == ("onnxruntime" in engines)

    assert main(["doctor", *base, "--require", MISSING]) == 1  # explicit beats the plan
    explicit = json.loads(capsys.readouterr().out)["hosts"][0]
    assert explicit["requires_from"] == "--require" and MISSING in explicit["requires"]


def test_a_venv_interpreter_gets_a_pip_hint() -> None:
    report = doctor(LocalTransport(), sys.executable, [MISSING])
    assert report.venv
    assert f"{sys.executable} -m pip install {MISSING}" in report.missing[0]


@pytest.mark.skipif(not any(SYSTEM_PYTHON.parent.parent.glob("lib/python3*/EXTERNALLY-MANAGED")),
                    reason="needs a PEP 668 system Python (Debian 12 / Bookworm)")
def test_an_externally_managed_system_python_gets_a_venv_hint() -> None:
    report = doctor(LocalTransport(), str(SYSTEM_PYTHON), [MISSING])
    assert report.externally_managed and not report.venv
    hint = report.missing[0]
    assert "refuses pip" in hint and "python3 -m venv ~/edgedeploy-venv" in hint
    assert f"~/edgedeploy-venv/bin/pip install {MISSING}" in hint and "`python:`" in hint
    assert f"{SYSTEM_PYTHON} -m pip install" not in hint
