"""`infer` and the client through a real sshd: push a real bundle to an SSH board, then frames go
through an SSH exec channel to the board's bridge and its runner's Unix socket (no port opened
on the board) and come back equal to onnxruntime on the host."""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest
from tests.runtime.serving import Reference, assert_close, frames

from edgedeploy import zoo
from edgedeploy.cli.main import main
from edgedeploy.client import Client

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(300)]


@pytest.fixture
def manifest(sshd, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.ssh/known_hosts lives here for the CLI
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32, num_classes=10)
    (tmp_path / "edgedeploy.yaml").write_text(
        "name: sq\nmodel: sq.onnx\ntargets:\n  edge:\n"
        f"    host: 127.0.0.1\n    port: {sshd.port}\n    user: {sshd.user}\n"
        f"    identity_file: {sshd.identity_file}\n    path: {tmp_path / 'board'}\n"
        f"    python: {sys.executable}\n"
        "measure: {enabled: false}\nio: {window: 4}\n")
    return tmp_path / "edgedeploy.yaml"


def test_push_then_infer_over_ssh_equals_onnxruntime(manifest, tmp_path, capsys) -> None:
    reference = Reference(tmp_path / "sq.onnx")
    xs = np.concatenate(frames(5, seed=11))
    np.savez(tmp_path / "frames.npz", input=xs)
    m = ["-m", str(manifest), "--target", "edge"]
    try:
        assert main(["push", *m, "--no-refine", "--json"]) == 0, capsys.readouterr().err
        capsys.readouterr()
        rc = main(["infer", *m, str(tmp_path / "frames.npz"), "-o", str(tmp_path / "out.npz"),
                   "--json"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert json.loads(captured.out)["frames"] == 5
        with np.load(tmp_path / "out.npz") as npz:
            for k in range(5):
                assert_close([npz["logits"][k]], reference(xs[k:k + 1]))
        with Client.connect(manifest=manifest, target="edge") as c:
            assert "127.0.0.1" in c.label and c.label.endswith("/board/run/runner.sock")
            for index, outs in c.stream(xs[k:k + 1] for k in range(5)):
                assert_close(outs, reference(xs[index:index + 1]))
            assert not isinstance(c._stream, socket.socket)  # an SSH channel
        assert main(["status", *m, "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)["hosts"]
        assert [a.split("://")[0] for a in row["runner"]["io"]["listen"]] == ["unix"]
        assert main(["status", *m]) == 0  # the table says where the runner listens
        out = capsys.readouterr().out
        assert "io edge" in out and "runner.sock" in out and "served" in out
    finally:
        main(["stop", *m])
    capsys.readouterr()
    rc = main(["infer", *m, str(tmp_path / "frames.npz")])
    err = capsys.readouterr().err
    assert rc == 4 and "no runner serves" in err

