"""Board power in the runner's reports, on real bundles run as the board runs them: ``measure``
and ``serve`` read the tegrastats log a Jetson bundle names (through run.sh, or its env file when
started directly), and boards without one report null power and say why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.generator.conftest import small_build

from edgedeploy.deploy.status import power_text, render_status
from edgedeploy.generator import build_bundle
from edgedeploy.refine.measure import from_runner_json
from edgedeploy.runtime.power import NO_SENSOR

pytestmark = pytest.mark.timeout(120)

# A Xavier NX on L4T 35: VDD_IN is the module's input power, 5000 mW.
LINE = ("RAM 2133/7852MB (lfb 540x4MB) SWAP 0/3427MB (cached 0MB) "
        "CPU [4%@1420,2%@1420,1%@1420,0%@1420,off,off] EMC_FREQ 0%@1600 GR3D_FREQ 0%@114 "
        "AUX@37.5C CPU@39C thermal@38.4C AO@37C GPU@38C PMIC@50C "
        "VDD_IN 5000mW/5000mW VDD_CPU_GPU_CV 1000mW/1000mW VDD_SOC 1200mW/1200mW")
POWER_KEYS = {"power_w", "energy_mj", "power_source", "power_note"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same model and plans as a Jetson bundle and as a plain Linux one."""
    tmp = tmp_path_factory.mktemp("power")
    build, graph, model = small_build(tmp, family="jetson")
    return {family: build_bundle(build, graph, model, tmp / family, family=family).root
            for family in ("jetson", "linux")}


def _env(state: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(state),
            "EDGEDEPLOY_STATE_DIR": str(state), **extra}


def _measure(bundle: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-I", "main.py", "measure", "--plan", "plan0",
                           "--frames", "6", "--warmup", "1", "--json"], cwd=bundle, env=env,
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _log(path: Path) -> Path:
    path.write_text(f"{LINE}\n{LINE}\n")
    return path


def test_jetson_bundle_names_the_log_run_sh_writes(bundles: dict[str, Path]) -> None:
    env_file = (bundles["jetson"] / "edgedeploy.env").read_text()
    assert "EDGEDEPLOY_POWER_LOG=tegrastats.log\n" in env_file
    assert '--logfile "$EDGEDEPLOY_POWER_LOG"' in (bundles["jetson"] / "run.sh").read_text()
    assert "EDGEDEPLOY_POWER_LOG" not in (bundles["linux"] / "edgedeploy.env").read_text()
    assert "tegrastats" not in (bundles["linux"] / "run.sh").read_text()


def test_measure_reads_the_log_named_by_the_env_file(bundles: dict[str, Path],
                                                     tmp_path: Path) -> None:
    """Started directly (as refinement does over SSH): the env file's relative name, under the
    state dir, is the file tegrastats writes there."""
    _log(tmp_path / "tegrastats.log")
    data = _measure(bundles["jetson"], _env(tmp_path))
    assert data["power_w"] == 5.0 and data["power_source"] == "tegrastats:VDD_IN"
    assert data["power_note"] == ""
    frame_ms = 1000.0 / data["throughput_fps"]
    assert data["energy_mj"] == pytest.approx(5.0 * frame_ms)
    m = from_runner_json(data, 1.0)  # the host's refinement reads the same figures
    assert m.power_w == 5.0 and m.energy_mj == pytest.approx(5.0 * frame_ms)


def test_measure_takes_the_path_run_sh_exports(bundles: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    log = _log(tmp_path / "elsewhere" / "power.log")
    data = _measure(bundles["jetson"], _env(tmp_path / "state", EDGEDEPLOY_POWER_LOG=str(log)))
    assert data["power_w"] == 5.0
    assert data["energy_mj"] == pytest.approx(5000.0 / data["throughput_fps"])


@pytest.mark.parametrize(("family", "note"), [
    ("linux", NO_SENSOR),  # a board the bundle names no sensor for
    ("jetson", "no tegrastats log at "),  # tegrastats missing or not started
])
def test_measure_without_a_log_reports_null_power_and_why(bundles: dict[str, Path],
                                                          tmp_path: Path, family: str,
                                                          note: str) -> None:
    data = _measure(bundles[family], _env(tmp_path))
    assert data["power_w"] is None and data["energy_mj"] is None
    assert data["power_source"] == "none" and data["power_note"].startswith(note)
    assert data["throughput_fps"] > 0
    m = from_runner_json(data, 1.0)
    assert m.power_w is None and m.energy_mj is None


FAKE_TEGRASTATS = f"""#!/bin/sh
# tegrastats --interval MS --logfile PATH, writing a real-format line every 0.2 s
while [ $# -gt 0 ]; do
  case "$1" in --logfile) log="$2"; shift ;; esac
  shift
done
while :; do echo "{LINE}" >> "$log"; sleep 0.2; done
"""


def test_run_sh_serve_reports_power_in_the_status_file(bundles: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """run.sh as deployed: it starts tegrastats (a stand-in writing the real format) on the path
    it exports, and the serve loop's status carries power per frame; the runner stops it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tegrastats"
    fake.write_text(FAKE_TEGRASTATS)
    fake.chmod(0o755)
    state = tmp_path / "state"
    env = _env(state, EDGEDEPLOY_PYTHON=sys.executable)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    proc = subprocess.run(["sh", "run.sh", "--duration-s", "2.5"], cwd=bundles["jetson"],
                          env=env, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    assert (state / "tegrastats.log").read_text().startswith("RAM ")
    status = json.loads((state / "runner.status.json").read_text())
    assert status["state"] == "finished" and set(status) >= POWER_KEYS
    assert status["power_w"] == 5.0 and status["power_source"] == "tegrastats:VDD_IN"
    assert status["energy_mj"] == pytest.approx(5000.0 / status["throughput_fps"], rel=1e-3)
    assert dict(render_status(status))["power"].startswith("5.00 W, ")
    size = (state / "tegrastats.log").stat().st_size
    time.sleep(0.6)  # the sidecar was stopped with the runner: the log no longer grows
    assert (state / "tegrastats.log").stat().st_size == size


def test_serve_without_a_sensor_says_why_in_the_status(bundles: dict[str, Path],
                                                      tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-I", "main.py", "serve", "--frames", "12"],
                          cwd=bundles["linux"], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "runner.status.json").read_text())
    assert set(status) >= POWER_KEYS
    assert status["power_w"] is None and status["energy_mj"] is None
    assert status["power_note"] == NO_SENSOR
    assert dict(render_status(status))["power"] == f"- ({NO_SENSOR})"


def test_power_text_for_partial_and_old_runners() -> None:
    partial = {"power_w": 4.25, "energy_mj": 42.5, "power_source": "tegrastats:sum(GPU+CPU)",
               "power_note": "partial: sum of 2 monitored rails"}
    assert power_text(partial) == ("4.25 W, 42.5 mJ/frame [tegrastats:sum(GPU+CPU)] "
                                   "(partial: sum of 2 monitored rails)")
    assert power_text({}) == "-"  # a runner from before power was reported
