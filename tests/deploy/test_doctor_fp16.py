"""A bundle whose CPU stages compute fp16 needs cores that do (``cpu:fp16``): doctor reads the
board's /proc/cpuinfo, and the requirement comes from the bundle and from the lockfile alike."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgedeploy.boards.detect import detect_local
from edgedeploy.cli.main import main
from edgedeploy.deploy.bundle import BundleError, parse_requirement
from edgedeploy.deploy.doctor import doctor
from edgedeploy.deploy.local import LocalTransport
from edgedeploy.runtime.engines import CPU_FP16, board_requirements

HOST_FP16 = sorted(i for c in detect_local().clusters if c.fp16_arithmetic for i in c.cpu_ids)


def test_the_requirement_parses_and_a_feature_edgedeploy_does_not_check_is_refused() -> None:
    assert parse_requirement(CPU_FP16) == ("cpu", "fp16")
    with pytest.raises(BundleError, match="names no CPU feature") as err:
        parse_requirement("cpu:avx9000")
    assert "cpu:fp16" in (err.value.hint or "")
    assert CPU_FP16 in board_requirements(["litert"], cpu_fp16=True)
    assert CPU_FP16 not in board_requirements(["litert"])


def test_doctor_lists_the_cores_that_compute_fp16_only_when_asked() -> None:
    """This host's cores, as its detection reads them; missing where none does."""
    report = doctor(LocalTransport(), sys.executable, ["numpy", CPU_FP16])
    assert report.fp16_cpus == HOST_FP16
    assert report.ok == bool(HOST_FP16)
    assert any("fp16 arithmetic" in m for m in report.missing) == (not HOST_FP16)
    plain = doctor(LocalTransport(), sys.executable, ["numpy"])
    assert plain.fp16_cpus is None and plain.providers is None  # neither read unasked


@pytest.mark.skipif(not HOST_FP16, reason="this host's cores compute no fp16")
def test_an_fp16_lockfile_and_its_bundle_require_fp16_cores(tmp_path: Path, capsys) -> None:
    from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights

    rng = np.random.default_rng(0)
    b = TFLiteBuilder("half")
    x = b.input("image", (1, 16, 16, 3))
    b.output(b.mean(b.conv2d(x, he_weights(rng, (8, 3, 3, 3), 27), np.zeros(8, np.float32),
                             activation="relu"), (1, 2)))
    b.save(tmp_path / "net.tflite")
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text(f"name: h\nmodel: {{path: net.tflite, precision: fp16}}\ntargets:\n"
                        f"  here: {{board: local, path: {tmp_path / 'board'}, "
                        f"python: {sys.executable}}}\nmeasure: {{enabled: false}}\n")
    assert main(["plan", str(manifest), "--target", "here"]) == 0
    capsys.readouterr()
    assert main(["doctor", "-m", str(manifest), "--target", "here", "--json"]) == 0
    host = json.loads(capsys.readouterr().out)["hosts"][0]
    assert host["requires_from"].endswith("h.here.plan.json") and host["ok"]
    assert host["fp16_cpus"] == HOST_FP16
    assert main(["build", str(tmp_path / "h.here.plan.json"), "-o", str(tmp_path / "out"),
                 "--json"]) == 0
    meta = json.loads((tmp_path / "out" / "bundle.json").read_text())
    assert CPU_FP16 in meta["requires"]
