"""Refinement after a fleet push measures on one canary host only; the other hosts keep serving,
and a refined release rolls out with push's batching, failure budget and health checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgedeploy import zoo
from edgedeploy.cli.main import main

pytestmark = pytest.mark.ssh

MANIFEST = """name: sq
model: sq.onnx
targets:
  fleet:
    hosts: [board-0, board-1]
    canary: {canary}
    path: ~/edgedeploy
    python: {python}
refine: {{max_evals: 2, frames_per_eval: 8, budget_s: 120}}
measure: {{budget_s: 1}}
"""


@pytest.fixture
def fleet_home(sshd_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from edgedeploy.benchmarks import decide

    # refinement's flow is checked, not which contender wins: the same plan on every run
    monkeypatch.setattr(decide, "inline_variants", lambda *_a, **_k: [])
    monkeypatch.setattr(decide, "inline_copies", lambda *_a, **_k: [])
    servers = [sshd_factory(f"b{i}") for i in range(2)]
    monkeypatch.setenv("HOME", str(tmp_path))  # the CLI's ~/.ssh/config and known_hosts
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text("".join(s.ssh_config_entry(f"board-{i}")
                                        for i, s in enumerate(servers)))
    (ssh / "known_hosts").write_text("".join(s.known_hosts_line for s in servers))
    zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    return tmp_path


def _manifest(home: Path, canary: str) -> Path:
    path = home / "edgedeploy.yaml"
    path.write_text(MANIFEST.format(canary=canary, python=sys.executable))
    return path


def test_refinement_stops_only_the_canary_and_rolls_out_serially(fleet_home, capsys) -> None:
    manifest = _manifest(fleet_home, "board-1")
    base = ["-m", str(manifest), "--target", "fleet"]
    try:
        rc = main(["push", *base, "--serial", "1", "--json"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        answer = json.loads(out.out)
        assert [h["outcome"] for h in answer["deploy"]["hosts"]] == ["deployed", "deployed"]
        assert answer["refine"]["evaluations"] >= 1 and "error" not in answer["refine"]
        # the plan was measured on the board (the canary) before it was built
        decision = json.loads((fleet_home / "sq.fleet.plan.json").read_text())["decision"]
        assert decision["measured"] and not decision["simulated"]

        assert main(["journal", *base, "--json", "-n", "500"]) == 0
        hosts = json.loads(capsys.readouterr().out)["hosts"]
        ops = {row["host"].split("@")[-1].split(":")[0]:  # one op per operation, not per step
               [op for op, _ in dict.fromkeys((e["op"], e["op_id"]) for e in row["entries"])]
               for row in hosts}
        assert "stop" not in _ops_of(ops, "board-0")  # kept serving throughout
        assert "stop" in _ops_of(ops, "board-1")  # the canary measured
        refined = answer["running"] != answer["deploy"]["hosts"][0]["release"]
        # a refined release went to both hosts; an unrefined one restarted only the canary
        assert _ops_of(ops, "board-0").count("push") == (2 if refined else 1)
        assert _ops_of(ops, "board-1").count("push") == 2

        assert main(["status", *base, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["hosts"]
        assert all(r["alive"] and r["current"] == answer["running"] for r in rows)
    finally:
        main(["stop", *base])


def _ops_of(ops: dict[str, list[str]], alias: str) -> list[str]:
    (found,) = [v for k, v in ops.items() if alias in k]
    return found


def test_a_canary_outside_the_fleet_is_refused_naming_the_hosts(fleet_home, capsys) -> None:
    manifest = _manifest(fleet_home, "board-2")
    assert main(["validate", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "canary 'board-2' is not one of this target's hosts" in err
    assert "board-0, board-1" in err
