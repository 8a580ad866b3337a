"""Each template family renders; families differ only where their tables say."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from edgedeploy.generator.context import BuildInput, render_context
from edgedeploy.generator.render import render_all, template_name
from edgedeploy.resources import templates_dir
from edgedeploy.runtime.affinity import BLAS_SPIN_LOG2_CYCLES
from edgedeploy.runtime.runner_config import PlanConfig, StageConfig


def _ctx(family: str):
    plan = PlanConfig("p", (StageConfig("s0", 0, 3, cpus=(0, 1)),), {})
    build = BuildInput("cam", "board", family, (plan,))
    return render_context(build, 2, "0.0")


@pytest.mark.parametrize("family", ["linux", "jetson", "rpi"])
def test_every_family_renders_every_file(family: str, tmp_path: Path) -> None:
    files = render_all(_ctx(family))
    assert set(files) == {"run.sh", "health.sh", "main.py", "edgedeploy.env",
                          "edgedeploy-cam.service"}
    run = tmp_path / "run.sh"
    run.write_text(files["run.sh"])
    subprocess.run(["sh", "-n", str(run)], check=True)
    assert files["run.sh"].rstrip().endswith('main.py serve "$@"')
    assert "OMP_NUM_THREADS=2" in files["edgedeploy.env"]
    # the runner's own process (an inline stage) lets idle BLAS threads sleep soon, too
    assert f"OPENBLAS_THREAD_TIMEOUT={BLAS_SPIN_LOG2_CYCLES}" in files["edgedeploy.env"]


def test_jetson_sets_power_mode_clocks_and_samples_power() -> None:
    run = render_all(_ctx("jetson"))["run.sh"]
    assert "nvpmodel -m 0" in run and "jetson_clocks" in run and "tegrastats" in run
    assert "command -v nvpmodel" in run  # guarded: absent tools are skipped
    assert template_name("jetson", "run.sh") == "jetson/run.sh.j2"


def test_rpi_hints_the_performance_governor_only_when_writable() -> None:
    run = render_all(_ctx("rpi"))["run.sh"]
    assert "scaling_governor" in run and "[ -w" in run and "performance" in run


def test_linux_has_no_board_specific_setup() -> None:
    run = render_all(_ctx("linux"))["run.sh"]
    assert "nvpmodel" not in run and "scaling_governor" not in run


def test_unknown_family_is_a_clean_error() -> None:
    with pytest.raises(Exception, match="unknown template family"):
        BuildInput("x", "t", "windows", (PlanConfig("p", (StageConfig("s0", 0, 1),), {}),))


def _make(*args: str) -> subprocess.CompletedProcess:
    """A top-level make, whatever make runs this test (``make test`` exports MAKELEVEL and
    MAKEFLAGS, which turn on "Entering directory" lines in a nested make)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(["make", "--no-print-directory", *args], capture_output=True,
                          text=True, check=True, env=env)


def test_makefile_include_parses_with_make(tmp_path: Path) -> None:
    mk = templates_dir() / "make" / "edgedeploy.mk"
    out = _make("-n", "-f", str(mk), "push", "TARGET=jetson", "EDGEDEPLOY=echo-ed")
    assert 'echo-ed  push -m "edgedeploy.yaml" --target "jetson"' in out.stdout
    fw = tmp_path / "Makefile"
    fw.write_text(f"include {mk}\nall:\n\t@echo firmware\n")
    out = _make("-n", "-f", str(fw))
    assert out.stdout.strip() == "echo firmware"  # the include keeps the default goal


def test_the_include_pushes_locked_under_ci_only(tmp_path: Path) -> None:
    """CI services set CI: there a push deploys the committed lockfile or fails (exit 7)."""
    mk = templates_dir() / "make" / "edgedeploy.mk"
    fw = tmp_path / "Makefile"
    fw.write_text(f"include {mk}\nrelease: edgedeploy-push\n")
    ci = _make("-n", "-f", str(fw), "release", "EDGEDEPLOY=ed", "CI=true").stdout
    assert ci.strip().endswith("--locked")
    local = _make("-n", "-f", str(fw), "release", "EDGEDEPLOY=ed", "CI=").stdout
    assert "--locked" not in local and "push -m" in local
