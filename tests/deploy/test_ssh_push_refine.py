"""The default push over SSH: plan (measured on the board), build, deploy, then refine on the
board through the runner's `measure` (the interpreter the target names, only segments the
bundle ships), all through a real sshd, answered as JSON with exit 0 and the refined or pushed
release running. The bundle ships the baselines' segments, so refinement measures what a user
would run instead on the board itself."""

from __future__ import annotations

import json
import os
import sys

import pytest

from edgedeploy import zoo
from edgedeploy.cli.main import main

pytestmark = pytest.mark.ssh


@pytest.fixture
def manifest(sshd, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    from edgedeploy.benchmarks import decide

    # refinement's flow is checked, not which contender wins: with no inline contender in
    # measure-to-decide the plan, and the segments its bundle ships, are alike on every run
    monkeypatch.setattr(decide, "inline_variants", lambda *_a, **_k: [])
    monkeypatch.setattr(decide, "inline_copies", lambda *_a, **_k: [])
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.ssh/known_hosts lives here for the CLI
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no profile: the prior
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    (tmp_path / "edgedeploy.yaml").write_text(
        "name: sq\nmodel: sq.onnx\ntargets:\n  edge:\n"
        f"    host: 127.0.0.1\n    port: {sshd.port}\n    user: {sshd.user}\n"
        f"    identity_file: {sshd.identity_file}\n    path: {tmp_path / 'board'}\n"
        f"    python: {sys.executable}\n"
        "refine: {max_evals: 3, frames_per_eval: 8, budget_s: 120}\n"
        "measure: {budget_s: 1}\n")  # measured is checked, not the figures
    return tmp_path / "edgedeploy.yaml"


def test_the_default_push_over_ssh_refines_on_the_board_and_keeps_serving(manifest, capsys):
    try:
        rc = main(["push", "-m", str(manifest), "--target", "edge", "--json"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        answer = json.loads(out.out)
        assert answer["deploy"]["hosts"][0]["outcome"] == "deployed"
        # the plan it built was measured on the board first (measure-to-decide over SSH)
        plan = json.loads((manifest.parent / "sq.edge.plan.json").read_text())
        assert plan["decision"]["measured"] and not plan["decision"]["simulated"]
        refine = answer["refine"]
        assert "error" not in refine and refine["evaluations"] >= 1
        bases = refine["baselines"]  # measured through the board's runner, none left out
        assert sorted(bases) == ["onnxruntime_replicas", "onnxruntime_replicas_inline",
                                "onnxruntime_threads", "onnxruntime_threads_inline"]
        assert all(b["measured"]["throughput_fps"] > 0 for b in bases.values())
        assert refine["vs_best_baseline"] > 0
        assert answer["running"] == refine["release"]
        assert main(["status", "-m", str(manifest), "--target", "edge", "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)["hosts"]
        assert row["alive"] and row["current"] == answer["running"]
        assert row["python"] == sys.executable
    finally:
        main(["stop", "-m", str(manifest), "--target", "edge"])


def test_a_plan_that_runs_inline_is_refined_on_the_board_from_itself(manifest, capsys):
    """The board's runner measures the inline start inline (``main.py measure`` runs it in its
    own process, as it serves it), so refinement compares what runs with its candidates."""
    assert main(["plan", str(manifest), "--target", "edge", "--no-measure", "--json"]) == 0
    capsys.readouterr()
    lock = manifest.parent / "sq.edge.plan.json"
    doc = json.loads(lock.read_text())  # as measure-to-decide writes an inline winner
    cpus = sorted(os.sched_getaffinity(0))
    doc["stages"] = [{**doc["stages"][0], "stop": doc["stages"][-1]["stop"], "cpus": cpus,
                      "cores": len(cpus), "replicas": 1, "inline": True}]
    doc["decision"].update(measured=True, winner="onnxruntime_threads_inline")
    lock.write_text(json.dumps(doc))
    try:
        rc = main(["push", "-m", str(manifest), "--target", "edge", "--json"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        refine = json.loads(out.out)["refine"]
        assert "error" not in refine and refine["evaluations"] >= 1
        assert refine["plan_before"]["measured"]["mode"] == "inline"
    finally:
        main(["stop", "-m", str(manifest), "--target", "edge"])
