"""ProxyJump through a second, separate sshd, as a user reaches a board behind a bastion:
~/.ssh/config names both hosts, the manifest names only the board's alias. The bastion logs every
channel it forwards (LogLevel DEBUG1), which proves each command went through it; each hop's host
key is checked on its own, and a failure names the hop it happened on."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from edgedeploy import zoo
from edgedeploy.cli.main import main

pytestmark = pytest.mark.ssh

UNREACHABLE = 4  # README, exit codes: host unreachable, authentication or host-key failure


class Hops:
    """A bastion and a board (two sshd, two host keys) and a user whose ~/.ssh reaches both."""

    def __init__(self, bastion, board, home: Path) -> None:  # type: ignore[no-untyped-def]
        self.bastion, self.board, self.home = bastion, board, home
        self.manifest = home / "edgedeploy.yaml"
        self.path = board.home / "app"

    def trust(self, *servers) -> None:  # type: ignore[no-untyped-def]
        """~/.ssh/known_hosts with exactly these servers' keys."""
        text = "".join(server.known_hosts_line for server in servers)
        (self.home / ".ssh" / "known_hosts").write_text(text)

    def forwarded_to_board(self) -> int:
        """How many channels the bastion opened to the board's port."""
        log = self.bastion.log_file.read_text(errors="replace")
        return len(re.findall(r"server_request_direct_tcpip: originator .* target 127\.0\.0\.1 "
                              rf"port {self.board.port}\b", log))

    def logins_on_board(self) -> int:
        return self.board.log_file.read_text(errors="replace").count("Accepted publickey")

    def cli(self, capsys, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
        rc = main([*args, "-m", str(self.manifest), "--target", "edge"])
        out = capsys.readouterr()
        return rc, out.out, out.err

    def through_bastion(self, capsys, *args: str) -> dict:  # type: ignore[no-untyped-def]
        """Run a --json command that must succeed, and check it took exactly one tunnel."""
        before = self.forwarded_to_board()
        rc, out, err = self.cli(capsys, *args, "--json")
        assert rc == 0, err
        assert self.forwarded_to_board() == before + 1, "the command bypassed the bastion"
        return json.loads(out)


@pytest.fixture
def hops(sshd_factory, tmp_path, monkeypatch) -> Hops:  # type: ignore[no-untyped-def]
    bastion = sshd_factory("bastion", log_level="DEBUG1")
    board = sshd_factory("board")
    home = tmp_path / "user"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))  # this user's ~/.ssh/config and known_hosts
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (home / ".ssh" / "config").write_text(
        bastion.ssh_config_entry("bastion") + board.ssh_config_entry("board", ProxyJump="bastion"))
    found = Hops(bastion, board, home)
    found.trust(bastion, board)
    zoo.export("squeezenet1_1", home / "net.onnx", size=32, num_classes=10)
    found.manifest.write_text(
        "name: jump\nmodel: net.onnx\nmeasure: {enabled: false}\n"
        f"targets:\n  edge:\n    host: board\n    path: {found.path}\n"
        f"    python: {sys.executable}\n")
    return found


def _no_session_left(server) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 5
    while server.sessions() and time.monotonic() < deadline:
        time.sleep(0.1)
    return server.sessions() == 0


@pytest.mark.timeout(240)
def test_push_status_and_rollback_go_through_the_bastion_and_fail_cleanly_without_it(
        hops: Hops, capsys) -> None:  # type: ignore[no-untyped-def]
    try:
        first = hops.through_bastion(capsys, "push", "--no-refine")["deploy"]["hosts"][0]
        assert first["outcome"] == "deployed" and first["health"]["ok"], first
        assert Path(hops.path, "current").resolve().name == first["current"]  # on the board
        (row,) = hops.through_bastion(capsys, "status")["hosts"]
        assert row["alive"] and row["current"] == first["current"] and row["health"]["ok"]
        assert _no_session_left(hops.bastion)  # every command closed its jump, not only its end

        zoo.export("squeezenet1_1", hops.home / "net.onnx", size=32, num_classes=10, seed=1)
        second = hops.through_bastion(capsys, "push", "--no-refine")["deploy"]["hosts"][0]
        assert second["outcome"] == "deployed" and second["current"] != first["current"]
        back = hops.through_bastion(capsys, "rollback")["hosts"][0]
        assert back["current"] == first["current"], back
        (row,) = hops.through_bastion(capsys, "status")["hosts"]
        assert row["alive"] and row["current"] == first["current"]

        hops.bastion.stop()  # the board's sshd stays up: only the way to it is gone
        rc, out, err = hops.cli(capsys, "status")
        assert rc == UNREACHABLE, (out, err)
        assert f"jump host bastion (127.0.0.1:{hops.bastion.port})" in err, err
        assert "Connection refused" in err and "Errno None" not in err, err
        rc, out, err = hops.cli(capsys, "status", "--json")  # the same, as one JSON answer
        assert rc == UNREACHABLE and "jump host bastion" in json.dumps(json.loads(out)), out
    finally:
        if hops.bastion.proc is None:
            hops.bastion.start()
        main(["stop", "-m", str(hops.manifest), "--target", "edge"])


def test_a_board_the_bastion_cannot_reach_is_unreachable_and_says_so(hops: Hops, capsys) -> None:
    hops.board.stop()
    rc, out, err = hops.cli(capsys, "status")
    assert rc == UNREACHABLE, (out, err)
    assert f"the jump host bastion cannot reach 127.0.0.1:{hops.board.port}" in err, err
    assert hops.forwarded_to_board() == 1  # the bastion was reached and tried


@pytest.mark.parametrize("fault", ["unknown bastion key", "unknown board key",
                                   "changed bastion key"])
def test_every_hop_key_is_checked_strictly_before_anything_is_uploaded(
        hops: Hops, capsys, fault: str) -> None:  # type: ignore[no-untyped-def]
    culprit = hops.board if fault == "unknown board key" else hops.bastion
    if fault == "changed bastion key":
        hops.bastion.rotate_host_key()  # known_hosts keeps the bastion's old key
    else:
        hops.trust(hops.board if culprit is hops.bastion else hops.bastion)
    rc, out, err = hops.cli(capsys, "push", "--no-refine")
    assert rc == UNREACHABLE, (out, err)
    assert not hops.path.exists() and hops.logins_on_board() == 0  # nothing reached the board
    hop_id = f"[127.0.0.1]:{culprit.port}"
    if fault == "changed bastion key":
        assert f"jump host bastion (127.0.0.1:{culprit.port}): HOST KEY CHANGED" in err, err
        assert f"ssh-keygen -R '{hop_id}'" in err  # remove the bastion's key, not the board's
        assert hops.forwarded_to_board() == 0
    else:
        assert "unknown host key ssh-ed25519 SHA256:" in err and f"for {hop_id};" in err, err
        assert f"ssh-keyscan -p {culprit.port} 127.0.0.1" in err, err  # trust this hop's key
        assert (f"jump host bastion (127.0.0.1:{culprit.port})" in err) == (
            culprit is hops.bastion)
        assert hops.forwarded_to_board() == (culprit is hops.board)
