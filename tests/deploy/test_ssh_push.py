"""Pushes over a real sshd: atomic switch, health, rollback on every fault, no injection."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.deploy.bundles import make_bundle

from edgedeploy.deploy import api
from edgedeploy.deploy.board import DeployHooks
from edgedeploy.deploy.ssh import SshTransport
from edgedeploy.deploy.transport import ConnectionLostError
from edgedeploy.errors import (
    DeployError,
    EdgeDeployError,
    RollbackFailedError,
    UnreachableError,
)

pytestmark = pytest.mark.ssh


def _board(sshd, name: str) -> str:  # type: ignore[no-untyped-def]
    return str(sshd.home / name)


def _running(sshd, access, path: str) -> dict:  # type: ignore[no-untyped-def]
    (row,) = api.status(sshd.target_ref(path=path), access=access)
    return row


def test_push_installs_switches_and_reports_a_healthy_runner(sshd, access, fast, tmp_path):
    path = _board(sshd, "ok")
    result = api.push_bundle(make_bundle(tmp_path, "alpha"), sshd.target_ref(path=path),
                             access=access, options=fast)
    host = result.hosts[0]
    assert (host.outcome, host.current, host.health) == ("deployed", "alpha-0001",
                                                         {"ok": True, "release": "alpha"})
    assert os.readlink(f"{path}/current") == "releases/alpha-0001"
    row = _running(sshd, access, path)
    assert row["alive"] and row["running"] == "alpha-0001" and row["health"]["ok"]
    journal = [json.loads(x) for x in Path(f"{path}/journal.jsonl").read_text().splitlines()]
    assert [e["step"] for e in journal][:3] == ["connect", "probe", "doctor"]
    assert {e["outcome"] for e in journal} == {"ok"}
    assert journal == [json.loads(x) for x in host_journal(fast, host.host)]
    again = api.push_bundle(make_bundle(tmp_path, "alpha"), sshd.target_ref(path=path),
                            access=access, options=fast)
    assert again.hosts[0].outcome == "unchanged"
    api.stop(sshd.target_ref(path=path), access=access)


def host_journal(opts, host: str) -> list[str]:  # type: ignore[no-untyped-def]
    (path,) = opts.journal_dir.glob("*.jsonl")
    return [line for line in path.read_text().splitlines() if line]


@pytest.fixture
def deployed(sshd, access, fast, tmp_path):  # type: ignore[no-untyped-def]
    """A board at a fresh path running release alpha-0001."""
    path = _board(sshd, tmp_path.name)
    api.push_bundle(make_bundle(tmp_path, "alpha"), sshd.target_ref(path=path), access=access,
                    options=fast)
    yield path
    api.stop(sshd.target_ref(path=path), access=access, check=False)


def _assert_alpha_still_running(sshd, access, path: str) -> None:  # type: ignore[no-untyped-def]
    row = _running(sshd, access, path)
    assert (row["current"], row["running"], row["alive"]) == ("alpha-0001", "alpha-0001", True)


@pytest.mark.parametrize("kind", ["health", "crash"])
def test_a_failing_release_is_rolled_back_to_the_running_previous_one(
        sshd, access, fast, tmp_path, deployed, kind):
    bad = make_bundle(tmp_path, "beta", health="fail" if kind == "health" else "ok",
                      crash=kind == "crash")
    with pytest.raises(DeployError) as info:
        api.push_bundle(bad, sshd.target_ref(path=deployed), access=access, options=fast)
    assert info.value.exit_code == 5
    text = str(info.value)
    assert "rolled back to alpha-0001" in text
    assert ("not healthy" in text) if kind == "health" else ("exited after start" in text)
    assert info.value.result.hosts[0].outcome == "rolled-back"
    _assert_alpha_still_running(sshd, access, deployed)


def test_a_rollback_that_fails_too_is_reported_as_broken(sshd, access, fast, tmp_path, deployed):
    Path(sshd.home, ".edgedeploy-sick-alpha").write_text("")  # alpha cannot come back healthy
    try:
        with pytest.raises(RollbackFailedError, match="restoring alpha-0001 failed too") as info:
            api.push_bundle(make_bundle(tmp_path, "beta", health="fail"),
                            sshd.target_ref(path=deployed), access=access, options=fast)
    finally:
        Path(sshd.home, ".edgedeploy-sick-alpha").unlink()
    assert info.value.exit_code == 6
    assert info.value.result.hosts[0].outcome == "rollback-failed"


def test_a_corrupted_upload_is_caught_on_the_board_and_never_switched(
        sshd, access, fast, tmp_path, deployed):
    def corrupt(transport, tmp: str) -> None:  # type: ignore[no-untyped-def]
        transport.run(["sh", "-c", 'echo tampered >> "$1"', "x", f"{tmp}/runtime/model.bin"])

    fast.hooks = DeployHooks(before_verify=corrupt)
    with pytest.raises(DeployError, match="does not match its SHA256SUMS") as info:
        api.push_bundle(make_bundle(tmp_path, "beta"), sshd.target_ref(path=deployed),
                        access=access, options=fast)
    assert "model.bin: FAILED" in str(info.value)
    assert not any(p.name.startswith(".incoming") for p in Path(deployed, "releases").iterdir())
    _assert_alpha_still_running(sshd, access, deployed)


def test_a_dropped_connection_mid_upload_leaves_the_previous_release_running(
        sshd, access, fast, tmp_path, deployed):
    fast.hooks = DeployHooks(after_file_uploaded=lambda rel: sshd.kill())
    big = make_bundle(tmp_path, "beta", payload=os.urandom(4 << 20))
    try:
        with pytest.raises(UnreachableError, match="alpha-0001 is still current") as info:
            api.push_bundle(big, sshd.target_ref(path=deployed), access=access, options=fast)
        assert info.value.exit_code == 4
    finally:
        sshd.start()
    _assert_alpha_still_running(sshd, access, deployed)


def _closed_channel_put(sshd, access, payload: Path, name: str,  # type: ignore[no-untyped-def]
                        then: Callable[[], None] = lambda: None) -> None:
    """Upload once, close the file channel as a dying transport does, call ``then``, and
    upload again."""
    with SshTransport(sshd.host, user=sshd.user, port=sshd.port,
                      identity_file=sshd.identity_file, options=access) as transport:
        transport.put(payload, str(sshd.home / "first.bin"))
        transport.conn.sftp().get_channel().close()
        then()
        transport.put(payload, str(sshd.home / name))


def test_a_closed_file_channel_is_a_lost_link_only_where_the_link_dies(sshd, access, tmp_path):
    # Paramiko closes a dead transport's channels before it marks the transport inactive, so
    # "Socket is closed" alone cannot tell a dead board from a dead file channel.
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(1 << 16))
    with pytest.raises(EdgeDeployError, match=r"cannot write .*second\.bin") as info:
        _closed_channel_put(sshd, access, payload, "second.bin")
    assert not isinstance(info.value, UnreachableError)
    assert Path(sshd.home, "first.bin").read_bytes() == payload.read_bytes()
    # the link dies a moment after the channel closed, while the upload waits to see
    killer = threading.Thread(target=lambda: (time.sleep(0.1), sshd.kill()), daemon=True)
    try:
        with pytest.raises(ConnectionLostError, match="connection lost while uploading"):
            _closed_channel_put(sshd, access, payload, "third.bin", then=killer.start)
    finally:
        killer.join(timeout=30)  # the kill done before sshd starts again
        sshd.start()


def test_a_read_only_releases_folder_fails_cleanly(sshd, access, fast, tmp_path, deployed):
    # As root chmod does not stop writes, so root makes the folder immutable (chattr +i, a real
    # kernel refusal); another user gets a plain chmod -w.
    releases = Path(deployed, "releases")
    if os.geteuid() == 0:
        if os.system(f"chattr +i '{releases}' 2>/dev/null") != 0:
            pytest.skip("this filesystem does not support chattr +i")
        undo = f"chattr -i '{releases}'"
    else:
        releases.chmod(0o555)
        undo = f"chmod 755 '{releases}'"
    try:
        with pytest.raises(DeployError, match="failed before the switch") as info:
            api.push_bundle(make_bundle(tmp_path, "beta"), sshd.target_ref(path=deployed),
                            access=access, options=fast)
    finally:
        os.system(undo)
    assert info.value.exit_code == 5 and "alpha-0001 is still current" in str(info.value)
    _assert_alpha_still_running(sshd, access, deployed)


HOSTILE = "we ird 'q\" $(touch {canary}) `touch {canary}`;rm -rf {canary}x\nline2"


def test_hostile_paths_and_names_are_never_interpreted(sshd, access, fast, tmp_path):
    canary = tmp_path / "pwned"
    path = str(sshd.home / HOSTILE.format(canary=canary))
    bundle = make_bundle(tmp_path, "hostile")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["name"] = HOSTILE.format(canary=canary)
    (bundle / "bundle.json").write_text(json.dumps(meta))
    from edgedeploy.deploy.bundle import write_sums

    write_sums(bundle)
    result = api.push_bundle(bundle, sshd.target_ref(path=path), access=access, options=fast)
    assert result.hosts[0].outcome == "deployed"
    assert Path(path, "current", "heartbeat").exists()
    assert _running(sshd, access, path)["alive"]
    api.stop(sshd.target_ref(path=path), access=access)
    assert not canary.exists() and not Path("/tmp/pwned").exists()
