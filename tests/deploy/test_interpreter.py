"""One interpreter per target, decided by ``deploy.api.board_python``: the manifest's
``targets.<alias>.python``, else the board descriptor's ``ssh.python``, else ``python3`` (this
interpreter on the local transport). Push, health and doctor use it; bundles never carry a path of
the machine that built them.

The SSH board is a real sshd on this machine whose sessions find the system ``python3`` on their
PATH - one without numpy, like a fresh board image - so the configured venv interpreter matters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgedeploy import zoo
from edgedeploy.boards.catalog import load_target
from edgedeploy.deploy import api
from edgedeploy.deploy.api import board_python
from edgedeploy.deploy.doctor import doctor
from edgedeploy.deploy.release import ReleaseOptions
from edgedeploy.deploy.ssh import SshTransport
from edgedeploy.errors import TargetError
from edgedeploy.generator.sources import build_from_path
from edgedeploy.resources import targets_dir
from edgedeploy.schemas.manifest import TargetRef

REQUIRES = ("numpy", "onnxruntime")


@pytest.fixture(scope="module")
def local_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle built for ``board: local`` the way ``edgedeploy build net.onnx`` builds it."""
    tmp = tmp_path_factory.mktemp("interp")
    zoo.export("squeezenet1_1", tmp / "net.onnx", size=32, num_classes=10)
    return build_from_path(tmp / "net.onnx", tmp / "bundle", target="local").root


def test_a_bundle_built_for_local_carries_no_path_of_this_host(local_bundle: Path) -> None:
    host_paths = {sys.executable, str(Path(sys.executable).resolve()), sys.prefix}
    for name in ("run.sh", "health.sh", "bundle.json", "edgedeploy.env",
                 "edgedeploy-net.service"):
        text = (local_bundle / name).read_text()
        assert not [p for p in host_paths if p in text], name
    assert '"python": "python3"' in (local_bundle / "bundle.json").read_text()
    assert 'exec "$EDGEDEPLOY_PYTHON" main.py serve' in (local_bundle / "run.sh").read_text()


@pytest.mark.parametrize("python", ["/home/pi/venv/bin/python", "python3.11", "/usr/bin/python3"])
def test_a_target_may_name_its_interpreter(python: str) -> None:
    assert TargetRef.model_validate({"host": "pi", "python": python}).python == python


@pytest.mark.parametrize("python", ["~/venv/bin/python", "venv/bin/python", "py thon",
                                    "/opt/my env/python", "", "-c", "python\n"])
def test_an_interpreter_that_is_no_path_or_command_is_refused(python: str) -> None:
    with pytest.raises(ValidationError, match="python"):
        TargetRef.model_validate({"host": "pi", "python": python})


def test_board_python_prefers_the_target_then_the_descriptor_then_python3(tmp_path: Path) -> None:
    board = tmp_path / "pi.yaml"
    board.write_text((targets_dir() / "rpi4.yaml").read_text().replace(
        "python: python3", "python: /usr/bin/python3.11"))
    venv = "/home/pi/venv/bin/python"
    assert board_python(TargetRef(host="pi", board=str(board), python=venv)) == venv
    assert board_python(TargetRef(host="pi", board=str(board))) == "/usr/bin/python3.11"
    assert board_python(TargetRef(host="pi", board="rpi4")) == "python3"
    assert board_python(TargetRef(host="pi")) == "python3"  # board: local, over SSH
    descriptor = load_target(board)
    assert board_python(TargetRef(host="pi", board="rpi4"), descriptor) == "/usr/bin/python3.11"
    assert board_python(TargetRef()) == sys.executable  # this machine: this interpreter
    assert board_python(TargetRef(python=venv)) == venv


def _options(tmp_path: Path, python: str) -> ReleaseOptions:
    return ReleaseOptions(settle_s=0.5, health_timeout_s=90, poll_s=0.3,
                          health_script_timeout_s=60, journal_dir=tmp_path / "journal",
                          python=python)


@pytest.mark.ssh
@pytest.mark.timeout(300)
def test_a_local_bundle_runs_over_ssh_on_the_targets_interpreter(
        sshd, access, tmp_path: Path, local_bundle: Path) -> None:
    path = str(sshd.home / "interp")
    plain, venv = sshd.target_ref(path=path), sshd.target_ref(path=path, python=sys.executable)
    assert (board_python(plain), board_python(venv)) == ("python3", sys.executable)
    with SshTransport(sshd.host, user=sshd.user, port=sshd.port,
                      identity_file=sshd.identity_file, options=access) as transport:
        bare = doctor(transport, board_python(plain), REQUIRES)
    if not bare.ok:  # the board's python3 lacks numpy: push and doctor say so alike
        with pytest.raises(TargetError, match="numpy"):
            api.push_bundle(local_bundle, plain, access=access,
                            options=_options(tmp_path, board_python(plain)))
    (report,) = api.doctor(venv, python=board_python(venv), requires=REQUIRES, access=access)
    assert report.ok and report.python_cmd == sys.executable
    try:
        host = api.push_bundle(local_bundle, venv, access=access,
                               options=_options(tmp_path, board_python(venv))).hosts[0]
        assert host.outcome == "deployed" and host.health["ok"], host.message
        assert Path(path, "run", "python").read_text().strip() == sys.executable
        (row,) = api.status(venv, access=access)
        assert row["alive"] and row["python"] == sys.executable
        argv = Path(f"/proc/{row['pid']}/cmdline").read_bytes().split(b"\0")
        assert argv[:3] == [sys.executable.encode(), b"main.py", b"serve"]
    finally:
        api.stop(venv, access=access, check=False)
