"""Inline plans: measure-to-decide offers each whole-model baseline on every core (one threaded
session, or one-thread replicas as threads) run in the feeding process, and a lockfile that
chose one builds a bundle whose runner runs it there -- verified against onnxruntime, served
to a client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.runtime.serving import Reference, assert_close, frames, serving

from edgedeploy import api, zoo
from edgedeploy.benchmarks.decide import as_plan, inline_variants, shortlist
from edgedeploy.client import Client
from edgedeploy.execute import RunRequest
from edgedeploy.planner.lock import dumps
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.schemas.plan import Decision, load_plan

MANIFEST = """name: sq
model:
  path: sq.onnx
targets:
  local: {}
  pi: {board: rpi4, transport: sim}
measure: {enabled: false}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inline")
    zoo.export("squeezenet1_1", folder / "sq.onnx", size=32, num_classes=10)
    (folder / "m.yaml").write_text(MANIFEST)
    return folder / "m.yaml"


def _inline(project: Path):  # type: ignore[no-untyped-def]
    plan = load_plan(api.plan(project, "local")[0].plan_file)
    graph = api.load_model(project.parent / "sq.onnx")
    entries = shortlist(plan, graph=graph)
    return plan, graph, entries, [e for e in entries if any(s.inline for s in e.stages)]


def _inline_lockfile(folder: Path, max_evals: int) -> tuple[Path, Path]:
    """A manifest for the local target (refined with ``max_evals``) and its lockfile, written
    as measure-to-decide writes a winner that runs inline."""
    zoo.export("squeezenet1_1", folder / "sq.onnx", size=32, num_classes=10)
    manifest = folder / "edgedeploy.yaml"
    manifest.write_text("name: sq\nmodel: sq.onnx\ntargets:\n  local:\n    path: board\n"
                        "measure: {enabled: false}\n"
                        f"refine: {{max_evals: {max_evals}, frames_per_eval: 8}}\n")
    plan, graph, _, inline = _inline(manifest)
    lock = api.plan(manifest, "local")[0].plan_file
    chosen = as_plan(plan, graph, inline[0], Decision(measured=True, target="local"))
    lock.write_text(dumps(chosen.model_dump(mode="json")))
    return manifest, lock


def test_the_shortlist_runs_whole_model_baselines_inline_on_a_host_it_measures(project):
    plan, _, entries, inline = _inline(project)
    every = sorted(available_cpus())
    whole = [n for n, b in plan.baselines.items() if b.stages and len(b.stages) == 1
             and b.stages[0].batch == 1 and sorted(b.stages[0].cpus) == every]
    assert "onnxruntime_threads" in whole  # threaded on every core, at least
    if len(every) > 1:  # and one one-thread session per core, as threads of the caller
        assert "onnxruntime_replicas" in whole
    batched = [e for e in inline if e.stages[0].batch > 1]  # micro-batched: inline only
    assert sorted(e.name for e in inline if e.stages[0].batch == 1) == sorted(
        f"{n}_inline" for n in whole)
    assert all(not e.baseline and e.optional for e in batched)
    assert all(len(e.stages) == 1 and e.stages[0].inline for e in entries
               if e.stages[0].batch > 1 and sorted(e.stages[0].cpus) == every)
    for e in inline:  # the stock runtime as its user runs it: a baseline, measured if it runs
        if e.stages[0].batch > 1:
            continue
        assert e.optional and e.baseline and len(e.stages) == 1
        base = plan.baselines[e.name.removesuffix("_inline")].stages[0]
        assert e.stages[0].model_copy(update={"inline": False}) == base
    assert not any(s.inline for e in shortlist(plan) for s in e.stages)  # a twin: none
    # however slow the model is predicted: the user's own way to run it is always measured
    slow = {n: b.model_copy(update={"predicted": b.predicted.model_copy(
        update={"latency_ms": 1e4})}) for n, b in plan.baselines.items()}
    assert len(inline_variants(plan.model_copy(update={"baselines": slow}))) == len(
        inline) - len(batched)
    twin = load_plan(api.plan(project, "pi")[0].plan_file)
    assert not any(s.inline for s in twin.stages)


def test_one_inline_session_is_predicted_without_the_frames_hand_over(project):
    """The planner prices a worker stage's frame hand-over from the caller into it; the same
    session inline takes no hand-over, and replicas keep the figure their measured speed-up
    (measured through it) gives them."""
    plan, graph, _, _ = _inline(project)
    feed = 0.2
    for e in shortlist(plan, graph=graph, feed_ms=feed):
        if not e.stages[0].inline or e.stages[0].batch > 1:
            continue
        base = plan.baselines[e.name.removesuffix("_inline")].predicted
        if e.stages[0].replicas > 1:
            assert e.predicted == base
            continue
        assert e.predicted.period_ms == pytest.approx(base.period_ms - feed)
        assert e.predicted.throughput_fps == pytest.approx(1000.0 / (base.period_ms - feed),
                                                           rel=1e-4)  # figures rounded
        assert e.predicted.latency_ms == pytest.approx(base.latency_ms - feed)


def test_inline_variants_cover_the_boards_cores_not_the_planning_hosts(project):
    """A 4-core board's plan, shortlisted on this host, gets its whole-model baselines inline
    over the board's four cores where it is told them (the board measures them), and none
    from this host's count when that differs."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.planner.adapter import plan_cpus

    plan = load_plan(api.plan(project, "pi")[0].plan_file)
    graph = api.load_model(project.parent / "sq.onnx")
    board = plan_cpus(load_target("rpi4"))
    whole = sorted(n for n, b in plan.baselines.items() if b.stages and len(b.stages) == 1
                   and sorted(b.stages[0].cpus) == board)
    assert "onnxruntime_replicas" in whole
    inline = [e for e in shortlist(plan, graph=graph, cpus=board)
              if any(s.inline for s in e.stages)]
    assert sorted(e.name for e in inline if e.stages[0].batch == 1) == [
        f"{n}_inline" for n in whole]
    assert all(sorted(e.stages[0].cpus) == board for e in inline)
    if sorted(available_cpus()) != board:
        assert not any(s.inline for e in shortlist(plan, graph=graph) for s in e.stages)


@pytest.mark.parametrize("which", ["onnxruntime_threads_inline", "onnxruntime_replicas_inline",
                                   "onnxruntime_replicas_batch4_inline"])
def test_an_inline_lockfile_runs_verified_and_serves_in_the_runner_process(project, tmp_path,
                                                                          which):
    plan, graph, _, inline = _inline(project)
    entry = next((e for e in inline if e.name == which), None)
    if entry is None:
        pytest.skip(f"{which}: not on this host (one core, no replicas)")
    chosen = as_plan(plan, graph, entry, Decision(measured=True, target="local"))
    path = project.parent / "inline.plan.json"
    path.write_text(dumps(chosen.model_dump(mode="json")))
    assert json.loads(path.read_text())["stages"][0]["inline"] is True
    plain = json.loads((project.parent / "sq.local.plan.json").read_text())
    assert all("inline" not in s for s in plain["stages"])  # other lockfiles: no key
    report = api.run_plan(path, RunRequest(frames=8, warmup=2, verify=True))
    assert report.max_rel_error is not None and report.max_rel_error < 1e-4
    assert report.result["mode"] == "inline"

    bundle = api.build(path, tmp_path / "bundle").root
    config = json.loads((Path(bundle) / "app" / "config.json").read_text())
    assert config["plans"]["plan"]["stages"][0]["inline"] is True
    measured = subprocess.run([sys.executable, "-I", "main.py", "measure", "--frames", "10",
                               "--json"], cwd=bundle, capture_output=True, text=True,
                              timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                "EDGEDEPLOY_STATE_DIR": str(tmp_path)})
    assert measured.returncode == 0, measured.stderr
    assert json.loads(measured.stdout)["mode"] == "inline"
    reference = Reference(project.parent / "sq.onnx")
    with serving(Path(bundle), tmp_path / "state", "--source", "client") as runner:
        with Client.unix(runner.socket) as client:
            for x in frames(4, seed=5, shape=(1, 3, 32, 32)):
                assert_close(client.infer(x), reference(x))
        status = runner.wait_for(lambda s: s.get("replicas"))
        replicas = chosen.stages[0].replicas  # threads of the runner's process, if several
        assert [r["pid"] for r in status["replicas"]] == [runner.proc.pid] * replicas


def test_push_refines_an_inline_plan_from_itself_as_it_runs(tmp_path, monkeypatch):
    """Refinement starts from the inline plan measured inline (in the measuring process, as
    the runner serves it), beside the baselines run the same way, so what it claims is against
    what runs."""
    monkeypatch.setenv("HOME", str(tmp_path))
    manifest, lock = _inline_lockfile(tmp_path, max_evals=4)
    try:
        outcome = api.push(manifest, "local")
        assert not outcome.replanned and outcome.deploy.ok
        refine = outcome.refine or {}
        assert "skipped" not in refine and refine["evaluations"] >= 1
        assert refine["plan_before"]["measured"]["mode"] == "inline"
        assert refine["plan_before"]["file"] == str(lock)
        assert any(n.endswith("_inline") for n in refine["baselines"])
        (row,) = api.status(manifest, "local")
        assert row["running"] == outcome.running == refine["release"] and row["alive"]
    finally:
        api.stop(manifest, "local")


def test_refine_starts_from_the_plan_push_deploys(tmp_path, monkeypatch):
    """`edgedeploy refine` without push starts where push would: from the up-to-date lockfile
    (here a measured winner run inline), then from its own refined plan while the inputs
    hold; from the plan the cost model makes only where the lockfile is stale."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    manifest, lock = _inline_lockfile(tmp_path, max_evals=2)
    first = api.refine(manifest, "local", feedback=False).summary()
    assert first["plan_before"]["file"] == str(lock)
    assert first["plan_before"]["measured"]["mode"] == "inline"  # the lockfile's winner, as run
    again = api.refine(manifest, "local", feedback=False).summary()
    assert again["plan_before"]["file"] == first["plan_file"] != str(lock)
    manifest.write_text(manifest.read_text().replace("max_evals: 2", "max_evals: 1"))
    stale = api.refine(manifest, "local", feedback=False).summary()
    assert stale["plan_before"]["file"] is None and stale["evaluations"] >= 1


def test_plan_says_a_stage_runs_inline_and_why_its_prediction_is_a_workers(project, capsys):
    from types import SimpleNamespace

    from edgedeploy.cli.output import INLINE_NOTE, stage_config
    from edgedeploy.cli.plan_cmd import _render

    plan, graph, _, inline = _inline(project)
    chosen = as_plan(plan, graph, inline[0], Decision(measured=True, target="local"))
    doc = chosen.model_dump(mode="json")
    _render(SimpleNamespace(doc=doc, written=True, plan_file="p"))
    said = capsys.readouterr()
    config = stage_config(doc["stages"][0])  # "cpu:1 batch 4 inline", batched or not
    assert config.startswith(f"cpu:{chosen.stages[0].cores}") and config.endswith(" inline")
    assert config in said.out
    assert INLINE_NOTE in said.out + said.err
    _render(SimpleNamespace(doc=plan.model_dump(mode="json"), written=True, plan_file="p"))
    said = capsys.readouterr()
    assert "inline" not in said.out + said.err


def test_the_replicas_baseline_is_the_inline_replicas_plan_measured_twice(project):
    """The bench's one-thread replicas run as a user writes them, a thread and a session per
    core in one process: a plan that chose exactly that is the same configuration."""
    from edgedeploy.benchmarks.compare import _systems

    plan, graph, _, inline = _inline(project)
    entry = next((e for e in inline if e.name == "onnxruntime_replicas_inline"), None)
    if entry is None:
        pytest.skip("one core, no replicas")
    path = project.parent / "sq.onnx"
    for name, same in (("onnxruntime_replicas_inline", True), ("onnxruntime_threads_inline",
                                                               False)):
        e = next(e for e in inline if e.name == name)
        doc = as_plan(plan, graph, e, Decision(measured=True, target="local"))
        ours, *baselines = _systems(graph, path, doc.model_dump(mode="json"))
        try:
            replicas = next(s for s in baselines if s.name == "ort_replicas")
            assert (ours.configuration == replicas.configuration) is same
            assert replicas.period == len(available_cpus()) and replicas.tail > 0
        finally:
            for s in (ours, *baselines):
                s.close()


def test_refine_prints_how_each_refined_stage_runs(tmp_path, monkeypatch, capsys):
    """The refined plan's table says what the lockfile says: batch and inline beside the unit,
    and the plan refinement started from."""
    from edgedeploy.cli.main import main
    from edgedeploy.cli.output import stage_config

    assert stage_config({"cluster": "cpu", "cores": 1, "batch": 4, "inline": True}) == (
        "cpu:1 batch 4 inline")
    assert stage_config({"cluster": "big", "cores": 2}) == "big:2"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    manifest, lock = _inline_lockfile(tmp_path, max_evals=1)
    assert main(["refine", "-m", str(manifest), "--target", "local", "--no-feedback"]) == 0
    out = capsys.readouterr().out
    assert f"started from {lock}: layers 0.." in out and ", inline" in out
    refined = json.loads(lock.with_name("sq.local.refined.plan.json").read_text())
    assert all(stage_config(s) in out for s in refined["stages"])
