"""The bundle runner, run as the board runs it: a subprocess in the bundle folder, isolated from
the development tree (``python -I``), importing the bundle's own runtime copy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests.generator.conftest import small_bundle

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_bundle(tmp_path_factory, "runner")


def _env(state: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(state),
            "EDGEDEPLOY_STATE_DIR": str(state)}


def _run(bundle: Path, state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "main.py", *args], cwd=bundle, env=_env(state),
                          capture_output=True, text=True, timeout=100)


def test_health_passes_on_a_real_bundle(bundle: Path, tmp_path: Path) -> None:
    proc = _run(bundle, tmp_path, "health", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["plan"] == "plan0"
    assert report["max_rel_error"] <= 1e-3


def test_the_runner_imports_the_bundle_copy_not_the_dev_tree(bundle: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.path.insert(0, 'runner'); import edgedeploy.runtime.runner as r; "
            "print(r.__file__)")
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=bundle, env=_env(tmp_path),
                         capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()).resolve().is_relative_to(bundle.resolve())


def test_health_fails_when_the_reference_is_tampered(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    ref = dict(np.load(copy / "app/reference.npz"))
    ref["out0"] = ref["out0"] + 1.0
    np.savez(copy / "app/reference.npz", **ref)
    proc = _run(copy, tmp_path, "health", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout.strip())["ok"] is False


def test_serve_writes_a_status_file_and_exits_cleanly(bundle: Path, tmp_path: Path) -> None:
    proc = _run(bundle, tmp_path, "serve", "--frames", "20")
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "runner.status.json").read_text())
    assert status["frames"] >= 20 and status["state"] == "finished"
    assert status["active"] == "plan0" and len(status["stages"]) == 2
    assert status["throughput_fps"] > 0 and status["latency_ms_p99"] >= status["latency_ms_p50"]
    assert not [n for n in status["shm"] if (Path("/dev/shm") / n).exists()]


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


@pytest.mark.parametrize("whole_group", [False, True], ids=["pid", "group"])
def test_sigterm_during_serve_stops_cleanly(bundle: Path, tmp_path: Path,
                                            whole_group: bool) -> None:
    proc = subprocess.Popen([sys.executable, "-I", "main.py", "serve"], cwd=bundle,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    status_file = tmp_path / "runner.status.json"
    deadline = time.monotonic() + 60
    status: dict = {}
    while time.monotonic() < deadline:
        if status_file.exists():
            status = json.loads(status_file.read_text())
            if status.get("frames", 0) > 0:
                break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    assert status.get("frames", 0) > 0
    if whole_group:
        os.killpg(proc.pid, signal.SIGTERM)  # what the deployer's stop does
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    final = json.loads(status_file.read_text())
    assert final["state"] == "stopped" and final["last_error"] is None
    assert not [n for n in status["shm"] if (Path("/dev/shm") / n).exists()]
    deadline = time.monotonic() + 5  # the resource tracker leaves when its pipe closes
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_members(proc.pid) == []


def test_measure_prints_stage_times(bundle: Path, tmp_path: Path) -> None:
    proc = _run(bundle, tmp_path, "measure", "--plan", "plan1", "--frames", "8", "--warmup", "1",
                "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["plan"] == "plan1" and data["frames"] == 8
    assert len(data["stage_ms"]) == 1 and data["stage_ms"][0] > 0
    assert data["stages"][0]["replicas"] == 2 and data["throughput_fps"] > 0


def test_measure_runs_a_variant_given_as_json(bundle: Path, tmp_path: Path) -> None:
    config = json.loads((bundle / "app/config.json").read_text())
    n = config["plans"]["plan1"]["stages"][0]["stop"]
    variant = {"stages": [{"start": 0, "stop": 3, "cpus": [0]}, {"start": 3, "stop": n}]}
    proc = _run(bundle, tmp_path, "measure", "--config-json", json.dumps(variant), "--frames", "4",
                "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["stage_ms"]) == 2


def test_bad_requests_are_clean_errors_with_exit_code_2(bundle: Path, tmp_path: Path) -> None:
    proc = _run(bundle, tmp_path, "measure", "--plan", "nope", "--frames", "2")
    assert proc.returncode == 2 and "no plan 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
    gap = json.dumps({"stages": [{"start": 1, "stop": 2}]})
    proc = _run(bundle, tmp_path, "measure", "--config-json", gap, "--frames", "2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_control_request_switches_plans_without_losing_frames(bundle: Path,
                                                                tmp_path: Path) -> None:
    (tmp_path / "runner.control.json").write_text(json.dumps({"active": "plan1"}))
    proc = _run(bundle, tmp_path, "serve", "--frames", "30")
    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "runner.status.json").read_text())
    assert status["active"] == "plan1" and status["frames"] == 30
    assert [(s["from"], s["to"]) for s in status["switches"]] == [("plan0", "plan1")]
