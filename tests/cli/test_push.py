"""`edgedeploy push` end to end on the local directory transport: plan, build, deploy, a running
runner reporting measured throughput, stop; and a stale lockfile is re-planned first."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edgedeploy import zoo
from edgedeploy.benchmarks import decide
from edgedeploy.cli.main import main


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    zoo.export("squeezenet1_1", tmp_path / "net.onnx", size=64)
    # a second of measuring the plan and the baselines (shortlist 1, not their micro-batched
    # variants besides): these tests check the push, not the decision or its figures
    monkeypatch.setattr(decide, "BATCH_SIZES", ())
    (tmp_path / "edgedeploy.yaml").write_text(
        "name: sq\nmodel:\n  path: net.onnx\ntargets:\n  local:\n    path: board\n"
        "output:\n  plans_dir: plans\n  build_dir: build\n"
        "measure: {budget_s: 1, shortlist: 1, quick_profile_s: 0}\n")
    return tmp_path


def _status(manifest: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["status", "-m", str(manifest), "--target", "local", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["hosts"][0]


def test_push_plans_builds_deploys_and_the_runner_reports_throughput(project, capsys) -> None:
    manifest = project / "edgedeploy.yaml"
    try:
        assert main(["push", "-m", str(manifest), "--target", "local", "--no-refine",
                     "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["plan"]["replanned"] is True  # no lockfile yet
        assert (project / "plans" / "sq.local.plan.json").is_file()
        release = answer["bundle"]["id"]
        assert answer["deploy"]["hosts"][0]["outcome"] == "deployed"
        assert (project / "board" / "current").resolve().name == release
        deadline = time.monotonic() + 20
        row = _status(manifest, capsys)
        while not (row.get("runner") or {}).get("frames") and time.monotonic() < deadline:
            time.sleep(0.5)
            row = _status(manifest, capsys)
        assert row["current"] == release and row["alive"]
        assert row["runner"]["throughput_fps"] > 0
        # a second push of the same inputs keeps the lockfile (not stale) and the release
        assert main(["push", "-m", str(manifest), "--target", "local", "--no-refine",
                     "--json"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["plan"]["replanned"] is False and again["bundle"]["id"] == release
    finally:
        main(["stop", "-m", str(manifest), "--target", "local"])
    assert not _status(manifest, capsys)["alive"]


def test_push_without_a_manifest_is_a_clear_input_error(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["push", "--target", "local"]) == 2
    assert "edgedeploy init" in capsys.readouterr().err


def _counting(monkeypatch, module, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_push_refines_on_the_device_and_keeps_serving(project, capsys, monkeypatch) -> None:
    import edgedeploy.importers
    import edgedeploy.planner.solve
    import edgedeploy.schemas

    manifest = project / "edgedeploy.yaml"
    # planned from the cost model: the measured winner could be any (a stage run inline, often)
    manifest.write_text(manifest.read_text().replace(
        "measure: {budget_s: 1, shortlist: 1, quick_profile_s: 0}", "measure: {enabled: false}")
        + "refine:\n  max_evals: 3\n  frames_per_eval: 8\n")
    loads = _counting(monkeypatch, edgedeploy.schemas, "load_manifest")
    imports = _counting(monkeypatch, edgedeploy.importers, "load_model")
    solves = _counting(monkeypatch, edgedeploy.planner.solve, "solve")
    try:
        assert main(["push", "-m", str(manifest), "--target", "local", "--json"]) == 0
        # one pass: the manifest loaded, the model imported and the plan solved once each
        assert (len(loads), len(imports), len(solves)) == (1, 1, 1)
        answer = json.loads(capsys.readouterr().out)
        refine = answer["refine"]
        assert answer["refined"] and refine["evaluations"] >= 1
        assert refine["improvement"] >= 1.0 or refine["release"] == answer["bundle"]["id"]
        row = _status(manifest, capsys)
        assert row["alive"] and row["current"] == refine["release"]
    finally:
        main(["stop", "-m", str(manifest), "--target", "local"])


def test_a_dry_run_push_changes_neither_the_lockfile_nor_the_board(project, capsys) -> None:
    manifest = project / "edgedeploy.yaml"
    assert main(["push", "-m", str(manifest), "--target", "local", "--dry-run", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["deploy"]["hosts"][0]["dry_run"] is True
    assert not (project / "plans" / "sq.local.plan.json").exists()
    assert not (project / "board" / "current").exists()


def test_the_next_push_keeps_the_refined_plan_while_its_inputs_hold(project, capsys) -> None:
    manifest = project / "edgedeploy.yaml"
    lock = project / "plans" / "sq.local.plan.json"
    try:
        assert main(["push", "-m", str(manifest), "--target", "local", "--no-refine",
                     "--json"]) == 0
        first = json.loads(capsys.readouterr().out)
        # what refinement writes: the plan, changed (one replica fewer), with the same inputs
        doc = json.loads(lock.read_text())
        doc["stages"][-1]["replicas"] = 1
        doc["stages"][-1]["cpus"] = doc["stages"][-1]["cpus"][:1]
        refined = lock.with_name("sq.local.refined.plan.json")
        refined.write_text(json.dumps(doc))
        assert main(["push", "-m", str(manifest), "--target", "local", "--no-refine",
                     "--json"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["plan"]["file"] == str(refined) and not again["plan"]["replanned"]
        assert again["bundle"]["id"] != first["bundle"]["id"]
        # the manifest changes: the refined plan no longer holds, the plan is made again
        manifest.write_text(manifest.read_text().replace("name: sq", "name: sq  # edited"))
        assert main(["push", "-m", str(manifest), "--target", "local", "--no-refine",
                     "--json"]) == 0
        third = json.loads(capsys.readouterr().out)
        assert third["plan"]["file"] == str(lock) and third["plan"]["replanned"]
    finally:
        main(["stop", "-m", str(manifest), "--target", "local"])


def test_the_manifest_may_come_first_on_the_line_as_plan_takes_it(project, capsys) -> None:
    manifest = project / "edgedeploy.yaml"
    assert main(["push", str(manifest), "--target", "local", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deploy"]["hosts"][0]["dry_run"] is True
    assert main(["status", str(manifest), "--target", "local", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hosts"][0]["current"] is None
    other = project / "other.yaml"
    other.write_text(manifest.read_text())
    assert main(["push", str(manifest), "-m", str(other), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "two manifests given" in err and "Traceback" not in err
    assert main(["push", str(manifest), "-m", str(manifest), "--dry-run", "--json"]) == 0
