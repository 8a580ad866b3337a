"""The installed systemd user unit: systemd's own parser accepts it, and its ExecStart runs the
release ``current`` points at (what a reboot starts)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgedeploy.deploy import scripts, unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("root", ["/srv/edgedeploy", "/home/pi/my board/100%", 'odd"quote\\dir'])
def test_systemd_parses_the_unit_for_awkward_roots(tmp_path: Path, root: str) -> None:
    path = tmp_path / "edgedeploy-0123456789ab.service"
    path.write_text(unit.render(root, "run.sh"))
    res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Restart=on-failure" in path.read_text()
    assert "WantedBy=default.target" in path.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_rejects_a_broken_exec_line(tmp_path: Path) -> None:
    """The oracle above can fail: a unit whose command does not exist is refused."""
    path = tmp_path / "broken.service"
    path.write_text(unit.render("/srv/x", "run.sh").replace("ExecStart=", "ExecStart=nosuch "))
    res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert res.returncode != 0


def test_a_control_character_in_the_root_is_refused() -> None:
    with pytest.raises(Exception, match="systemd unit"):
        unit.render("/srv/a\nb", "run.sh")


def test_exec_start_runs_the_release_current_points_at(tmp_path: Path) -> None:
    """The unit's command line, run by hand as systemd would: ``@current`` resolves to the
    release behind the ``current`` symlink, which is what the runner reports and runs."""
    root = tmp_path / "board root"
    for release in ("r1", "r2"):
        rel = root / "releases" / release
        rel.mkdir(parents=True)
        (rel / "run.sh").write_text(f'echo {release} > "$PWD/../../ran"\n')
    (root / "logs").mkdir()
    (root / "run").mkdir()
    (root / "current").symlink_to("releases/r2")
    (root / "run" / "start.sh").write_text(scripts.START)
    res = subprocess.run(["/bin/sh", str(root / "run" / "start.sh"), str(root), unit.CURRENT,
                          "run.sh", "once"], timeout=30)
    assert res.returncode == 0
    assert (root / "ran").read_text().strip() == "r2"
    assert (root / "run" / "runner.release").read_text() == "r2"
    assert "release r2 starting" in (root / "logs" / "runner.log").read_text()
