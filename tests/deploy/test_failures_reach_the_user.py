"""Every failure of the deployer's commands reaches the user as its own message and documented
exit code, in text and with ``--json`` -- never as "internal error", never as exit 0 -- through
the real entry point, a real sshd and real runners.

* push: a refinement step that fails after a successful deploy (it measured, then cannot write
  the refined plan) is reported with its own exit code, and the deployed release keeps running;
  the answer says which release runs at the end.
* rollback ``--to`` an id the board does not have is a usage error (exit 2) that lists the
  board's releases and is journalled.
* a fleet's status/releases/logs/doctor exit with the worst host's code (4: unreachable, host key
  changed).
* the operational commands need the manifest's target, not its model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.deploy.bundles import make_bundle

from edgedeploy import api, zoo
from edgedeploy.cli.main import main
from edgedeploy.deploy import api as deploy
from edgedeploy.testing.sshd import free_port


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of this test's own: ~/.ssh for the CLI, journals and profiles kept apart."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / ".ssh").mkdir()
    return tmp_path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


# --- push: a failed refinement after a good deploy -------------------------------------------


def _squeezenet_project(tmp_path: Path, *, max_evals: int, frames_per_eval: int) -> Path:
    """A squeezenet manifest deployed to a local folder, refined briefly. Planned from the cost
    model: the failures are checked, not which contender a measurement would pick."""
    zoo.export("squeezenet1_1", tmp_path / "net.onnx", size=64)
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text(
        "name: sq\nmodel: net.onnx\ntargets:\n  local:\n    path: board\n"
        "output: {plans_dir: plans, build_dir: build}\n"
        "measure: {enabled: false}\n"
        f"refine: {{max_evals: {max_evals}, frames_per_eval: {frames_per_eval}}}\n")
    return manifest


def test_a_refinement_that_fails_after_the_deploy_is_reported_and_the_release_keeps_running(
        tmp_path, home, capsys) -> None:
    manifest = _squeezenet_project(tmp_path, max_evals=2, frames_per_eval=4)
    # refinement measures on the device, then cannot write the refined plan: a folder is there
    (tmp_path / "plans" / "sq.local.refined.plan.json").mkdir(parents=True)
    base = ["-m", str(manifest), "--target", "local"]
    try:
        rc, out, err = _run(["push", *base, "--json"], capsys)
        assert rc == 1, err  # the refine failure's own code: an operational failure
        assert "internal error" not in err and "Traceback" not in err
        assert "refinement after the deploy failed" in err and "keeps running" in err
        answer = json.loads(out)  # one JSON object: the deploy, and the refine error
        release = answer["bundle"]["id"]
        assert answer["deploy"]["ok"] and answer["deploy"]["hosts"][0]["outcome"] == "deployed"
        assert answer["refined"] is False and "refined.plan.json" in answer["refine"]["error"]
        assert answer["refine"]["exit_code"] == 1 and answer["running"] == release
        rc, out, err = _run(["status", *base, "--json"], capsys)
        (row,) = json.loads(out)["hosts"]
        assert rc == 0 and (row["current"], row["running"], row["alive"]) == (
            release, release, True)
        # the same in text: the deploy table on stdout, the refine error on stderr
        rc, out, err = _run(["push", *base], capsys)
        assert rc == 1 and "internal error" not in err
        assert release in out and f"{release} keeps running" in err
    finally:
        main(["stop", *base])


# --- push: the answer names the release running at the end -------------------------------------


def test_the_push_answer_names_the_release_running_after_refinement(tmp_path, home,
                                                                    capsys) -> None:
    from edgedeploy.cli.push_cmd import render_outcome

    manifest = _squeezenet_project(tmp_path, max_evals=3, frames_per_eval=8)
    try:
        outcome = api.push(manifest, "local")
        (row,) = api.status(manifest, "local")
        assert outcome.running == row["current"] == outcome.refine["release"]
        answer = outcome.to_dict()
        assert answer["running"] == row["current"]
        capsys.readouterr()
        render_outcome(outcome, as_json=False)
        shown = capsys.readouterr()
        assert f"running: {row['current']}" in shown.err
        if outcome.running != outcome.bundle.id:  # refinement pushed a faster plan
            assert outcome.refine_deploy is not None
            assert f"refine {outcome.refine_deploy.target}" in shown.out
            assert outcome.running in shown.out.split("refine", 1)[1]
    finally:
        main(["stop", "-m", str(manifest), "--target", "local"])


# --- rollback --to an unknown release ----------------------------------------------------------


def test_rollback_to_an_unknown_release_is_a_usage_error_listing_the_releases(
        tmp_path, home, capsys) -> None:
    board = tmp_path / "board"
    manifest = tmp_path / "edgedeploy.yaml"
    (tmp_path / "m.onnx").write_bytes(b"")  # the model is not what rollback reads
    manifest.write_text(f"name: demo\nmodel: m.onnx\ntargets:\n  local:\n    path: {board}\n")
    for name in ("alpha", "beta"):
        deploy.push_bundle(make_bundle(tmp_path, name), f"local:{board}")
    try:
        rc, out, err = _run(["rollback", "-m", str(manifest), "--to", "deadbeef"], capsys)
        assert rc == 2, err
        assert "deadbeef" in err and "beta-0001 (current)" in err and "alpha-0001" in err
        rc, out, err = _run(["rollback", "-m", str(manifest), "--to", "deadbeef", "--json"],
                            capsys)
        (host,) = json.loads(out)["hosts"]
        assert rc == 2 and (host["outcome"], host["exit_code"]) == ("refused", 2)
        assert host["current"] == "beta-0001"
        journal = [json.loads(line) for line in (board / "journal.jsonl").read_text()
                   .splitlines()]
        refused = [e for e in journal if e["outcome"] == "refused"]
        assert len(refused) == 2 and refused[-1]["op"] == "rollback"
        assert refused[-1]["detail"]["to"] == "deadbeef"
        assert refused[-1]["detail"]["releases"] == ["beta-0001", "alpha-0001"]
        (row,) = api.status(manifest, "local")  # nothing changed
        assert (row["current"], row["running"], row["alive"]) == ("beta-0001", "beta-0001",
                                                                 True)
        rc, out, err = _run(["rollback", "-m", str(manifest), "--to", "alpha-0001"], capsys)
        assert rc == 0, err
    finally:
        main(["stop", "-m", str(manifest)])


# --- a fleet exits with its worst host's code -----------------------------------------------------


def test_a_fleet_query_exits_with_its_worst_hosts_code(sshd, sshd_factory, home,
                                                       capsys) -> None:
    board = sshd
    other = sshd_factory("changed-key")
    down = free_port()  # nothing listens there
    (home / ".ssh" / "config").write_text(
        board.ssh_config_entry("board-ok") + other.ssh_config_entry("board-changed")
        + f"Host board-down\n  HostName 127.0.0.1\n  Port {down}\n  User {board.user}\n"
          f"  IdentityFile {board.identity_file}\n")
    # known_hosts holds another key for board-changed's address: its key "changed"
    key = board.known_hosts_line.split(" ", 1)[1]
    (home / ".ssh" / "known_hosts").write_text(
        board.known_hosts_line + f"[127.0.0.1]:{other.port} {key}")
    manifest = home / "edgedeploy.yaml"
    (home / "m.onnx").write_bytes(b"")
    manifest.write_text("name: fleet\nmodel: m.onnx\ntargets:\n  fleet:\n    hosts: "
                        "[board-ok, board-changed, board-down]\n    path: ~/fleet\n")
    base = ["-m", str(manifest), "--target", "fleet"]
    rc, out, err = _run(["status", *base, "--json"], capsys)
    assert rc == 4, err
    answer = json.loads(out)
    assert answer["exit_code"] == 4 and len(answer["hosts"]) == 3
    ok, changed, unreachable = answer["hosts"]
    assert "error" not in ok
    assert "HOST KEY CHANGED" in changed["error"] and changed["exit_code"] == 4
    assert "cannot connect" in unreachable["error"] and unreachable["exit_code"] == 4
    rc, out, err = _run(["status", *base], capsys)
    assert rc == 4 and "2 of 3 hosts could not answer" in err and "board-changed" in err
    for verb in ("releases", "logs"):
        rc, out, err = _run([verb, *base, "--json"], capsys)
        assert rc == 4 and len(json.loads(out)["hosts"]) == 3, (verb, err)
    rc, out, err = _run(["doctor", *base, "--json", "--python", sys.executable], capsys)
    assert rc == 4 and json.loads(out)["ok"] is False, err


# --- the operational commands need the target, not the model --------------------------------------


def test_operational_commands_run_when_the_model_file_has_moved(tmp_path, home,
                                                                capsys) -> None:
    board = tmp_path / "board"
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text("name: demo\nmodel: moved-away.onnx\nobjective: throughput\n"
                        f"targets:\n  local:\n    path: {board}\n")
    deploy.push_bundle(make_bundle(tmp_path, "alpha"), f"local:{board}")
    base = ["-m", str(manifest), "--target", "local"]
    try:
        rc, out, err = _run(["status", *base, "--json"], capsys)
        assert rc == 0, err
        assert json.loads(out)["hosts"][0]["current"] == "alpha-0001"
        for argv in (["releases", *base, "--json"], ["logs", *base],
                     ["doctor", *base, "--python", sys.executable], ["stop", *base]):
            rc, out, err = _run(argv, capsys)
            assert rc == 0, (argv, err)
    finally:
        main(["stop", *base])


def test_a_bad_target_entry_names_its_file_and_line(tmp_path, home, capsys) -> None:
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text("name: demo\nmodel: moved-away.onnx\ntargets:\n  edge:\n"
                        "    host: board.local\n    port: many\n")
    rc, _, err = _run(["status", "-m", str(manifest), "--target", "edge"], capsys)
    assert rc == 2
    assert f"{manifest}:6:11: targets.edge.port: expected an integer" in err
    rc, _, err = _run(["status", "-m", str(manifest), "--target", "egde"], capsys)
    assert rc == 2 and "no target 'egde' (did you mean 'edge'?)" in err
