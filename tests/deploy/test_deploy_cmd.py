"""The deployer's CLI verbs against a real sshd, through the real entry point."""

from __future__ import annotations

import json

import pytest
from tests.deploy.bundles import make_bundle

from edgedeploy.cli.deploy_cmd import resolve_cli_target
from edgedeploy.cli.main import main
from edgedeploy.deploy import api

pytestmark = pytest.mark.ssh


@pytest.fixture
def manifest(sshd, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.ssh/known_hosts lives here for the CLI
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    (tmp_path / "m.onnx").write_bytes(b"")
    board = tmp_path / "board"
    (tmp_path / "edgedeploy.yaml").write_text(
        "name: demo\nmodel: m.onnx\ntargets:\n  edge:\n"
        f"    host: 127.0.0.1\n    port: {sshd.port}\n    user: {sshd.user}\n"
        f"    identity_file: {sshd.identity_file}\n    path: {board}\n")
    return tmp_path / "edgedeploy.yaml"


def test_status_releases_logs_rollback_and_stop_through_the_cli(manifest, sshd, fast, tmp_path,
                                                                capsys):
    ref = resolve_cli_target(manifest, "edge")
    for name in ("alpha", "beta"):
        api.push_bundle(make_bundle(tmp_path, name), ref, options=fast)
    capsys.readouterr()
    assert main(["status", "-m", str(manifest), "--target", "edge", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["hosts"]
    assert (row["current"], row["alive"], row["releases"]) == (
        "beta-0001", True, ["beta-0001", "alpha-0001"])
    assert main(["logs", "-m", str(manifest), "--target", "edge", "-n", "5"]) == 0
    assert "runner beta up" in capsys.readouterr().out
    assert main(["rollback", "-m", str(manifest), "--target", "edge", "--json"]) == 0
    (host,) = json.loads(capsys.readouterr().out)["hosts"]
    assert (host["outcome"], host["current"]) == ("ok", "alpha-0001")
    assert main(["stop", "-m", str(manifest), "--target", "edge"]) == 0
    assert "stopped alpha-0001" in capsys.readouterr().out
    assert main(["releases", "-m", str(manifest), "--target", "edge", "--json"]) == 0
    (rel,) = json.loads(capsys.readouterr().out)["hosts"]
    assert rel["current"] == "alpha-0001"


def test_an_unknown_host_key_exits_4_from_the_cli(manifest, tmp_path, capsys):
    (tmp_path / ".ssh" / "known_hosts").write_text("")
    assert main(["status", "-m", str(manifest), "--target", "edge"]) == 4
    assert "unknown host key" in capsys.readouterr().err


def test_doctor_lists_what_the_board_has(manifest, capsys):
    assert main(["doctor", "-m", str(manifest), "--target", "edge", "--json",
                 "--require", "no-such-dist-xyz"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["hosts"][0]["python"]
