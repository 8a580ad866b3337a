"""`edgedeploy journal` tells a board's deploy history: read on the board, or from this
machine's copy without a connection."""

from __future__ import annotations

import json
from pathlib import Path

from tests.deploy.bundles import make_bundle

from edgedeploy.cli.deploy_cmd import resolve_cli_target
from edgedeploy.cli.main import main
from edgedeploy.deploy import api
from edgedeploy.deploy.release import ReleaseOptions


def test_journal_shows_push_rollback_and_stop_steps(tmp_path: Path, capsys) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text("name: demo\nmodel: m.onnx\ntargets:\n"
                        f"  bench: {{board: local, path: {tmp_path / 'board'}}}\n")
    ref = resolve_cli_target(manifest, "bench")
    opts = ReleaseOptions(settle_s=0.5, health_timeout_s=2.0, poll_s=0.2,
                          health_script_timeout_s=5)  # the default (session) local journal
    try:
        for name in ("alpha", "beta"):
            api.push_bundle(make_bundle(tmp_path, name), ref, options=opts)
        base = ["-m", str(manifest), "--target", "bench"]
        assert main(["rollback", *base]) == 0
        assert main(["rollback", *base, "--to", "deadbeef-0001"]) == 2
    finally:
        assert main(["stop", "-m", str(manifest), "--target", "bench"]) == 0
    capsys.readouterr()

    assert main(["journal", *base, "--json", "-n", "200"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["hosts"]
    entries = row["entries"]
    assert row["source"].endswith("board/journal.jsonl")
    ops = [e["op"] for e in entries]
    assert ops.count("push") >= 2 and "rollback" in ops and "stop" in ops
    assert any(e["outcome"] == "refused" for e in entries)  # the bad --to, journaled
    steps = {e["step"] for e in entries if e["op"] == "push"}
    assert {"upload", "switch", "health"} <= steps, steps

    assert main(["journal", *base, "--json", "--local", "-n", "3"]) == 0
    (local,) = json.loads(capsys.readouterr().out)["hosts"]
    assert len(local["entries"]) == 3 and local["entries"] == entries[-3:]

    assert main(["journal", *base, "-n", "2"]) == 0
    text = capsys.readouterr().out
    assert "stop" in text and "\t" in text  # piped: one tab-separated row per entry
