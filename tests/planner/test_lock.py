"""The lockfile: deterministic bytes, staleness when an input changes, `plan --check`, errors."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from edgedeploy import zoo
from edgedeploy.cli.main import app, main
from edgedeploy.errors import PlanError
from edgedeploy.planner import check, plan
from edgedeploy.schemas.plan import load_plan

MANIFEST = """name: tiny
model:
  path: tiny.onnx
objective: {objective}
pipeline:
  max_stages: 3
targets:
  local: {{board: local}}
  tx2: {{board: jetson-tx2}}
"""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    zoo.export("resnet18", path, size=32)
    return path


@pytest.fixture
def project(tmp_path, model_file):
    shutil.copy(model_file, tmp_path / "tiny.onnx")
    (tmp_path / "m.yaml").write_text(MANIFEST.format(objective="throughput"))
    return tmp_path


def test_same_inputs_give_a_byte_identical_lockfile(project):
    first = plan(project / "m.yaml", "tx2")[0]
    text = first.plan_file.read_text()
    again = plan(project / "m.yaml", "tx2")[0]
    assert again.plan_file.read_text() == text and not again.written
    assert first.plan_file == project / "tiny.tx2.plan.json"
    doc = json.loads(text)
    assert list(doc) == sorted(doc) and "timestamp" not in text
    assert {"model", "manifest", "target", "costmodel"} <= set(doc["inputs"])


def test_lockfile_loads_as_a_plan_the_executor_can_run(project):
    result = plan(project / "m.yaml", "local")[0]
    p = load_plan(result.plan_file)
    assert len(p.choices) == p.model["layers"]
    assert p.stages[0].start == 0 and p.stages[-1].stop == len(p.layers)
    cpus = [c for s in p.stages for c in s.cpus]
    assert len(cpus) == len(set(cpus))
    assert p.model_path(result.plan_file) == (project / "tiny.onnx").resolve()


@pytest.mark.parametrize("change", ["model", "manifest", "target"])
def test_check_reports_stale_when_an_input_changes(project, change, model_file):
    plan(project / "m.yaml", "tx2")
    assert not check(project / "m.yaml", "tx2")[0].stale
    if change == "model":
        zoo.export("resnet18", project / "tiny.onnx", size=32, seed=1)
    elif change == "manifest":
        (project / "m.yaml").write_text(MANIFEST.format(objective="latency"))
    else:
        board = project / "board.yaml"
        from edgedeploy.resources import targets_dir

        board.write_text((targets_dir() / "jetson-tx2.yaml").read_text()
                         .replace("memory_bw_gbps: 59.7", "memory_bw_gbps: 30"))
        text = (project / "m.yaml").read_text().replace("board: jetson-tx2", "board: board.yaml")
        (project / "m.yaml").write_text(text)
    stale = check(project / "m.yaml", "tx2")[0].stale
    assert stale and any(change in s for s in stale)


def test_plan_check_cli_exits_7_when_stale_and_0_when_fresh(project):
    runner = CliRunner()
    res = runner.invoke(app, ["plan", str(project / "m.yaml"), "--target", "tx2", "--check"])
    assert res.exit_code == 7 and "missing" in res.output
    res = runner.invoke(app, ["plan", str(project / "m.yaml"), "--target", "tx2", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {"plan_file", "predicted", "baselines", "stages"} <= set(data)
    assert {"throughput_fps", "latency_ms", "energy_mj"} <= set(data["predicted"])
    res = runner.invoke(app, ["plan", str(project / "m.yaml"), "--target", "tx2", "--check"])
    assert res.exit_code == 0, res.output


def test_infeasible_constraint_exits_3_naming_it(project, capsys):
    (project / "m.yaml").write_text(MANIFEST.format(objective="throughput")
                                    + "constraints:\n  min_throughput_fps: 1000000\n")
    assert main(["plan", str(project / "m.yaml"), "--target", "local"]) == 3
    err = capsys.readouterr().err
    assert "min_throughput_fps" in err and "best reachable" in err


def test_load_plan_gives_a_clean_error_for_bad_files(tmp_path):
    bad = tmp_path / "x.plan.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="not valid JSON"):
        load_plan(bad)
    bad.write_text(json.dumps({"kind": "edgedeploy-plan", "schema_version": 99}))
    with pytest.raises(PlanError, match="schema_version"):
        load_plan(bad)
    with pytest.raises(PlanError, match="not found"):
        load_plan(tmp_path / "missing.json")


def test_report_writes_charts_and_html(project, tmp_path):
    pytest.importorskip("matplotlib")
    res = CliRunner().invoke(app, ["plan", str(project / "m.yaml"), "--target", "tx2",
                                   "--report", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"tiny.tx2.balance.png", "tiny.tx2.balance.svg", "tiny.tx2.gantt.png",
            "tiny.tx2.gantt.svg", "tiny.tx2.html"} <= names


def test_a_local_plan_runs_through_the_pipeline_executor(project):
    from edgedeploy.execute import RunRequest, run_stages
    from edgedeploy.importers import load_model
    from edgedeploy.planner.api import stage_plans

    result = plan(project / "m.yaml", "local")[0]
    p = load_plan(result.plan_file)
    graph = load_model(p.model_path(result.plan_file))
    report = run_stages(graph, stage_plans(p, graph), p.choices,
                        RunRequest(frames=3, warmup=1, verify=True),
                        model_path=p.model_path(result.plan_file))
    assert report.max_rel_error is not None and report.max_rel_error < 1e-3


def test_refinement_feeding_the_profile_does_not_make_a_profiled_lockfile_stale(
        project, tmp_path, monkeypatch):
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel.configs import core_configs
    from edgedeploy.costmodel.profile import Sample, open_profile
    from edgedeploy.costmodel.profiler import LocalMeasure
    from edgedeploy.costmodel.shapes import space_filling
    from edgedeploy.refine.calibrate import feed_profile

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    target = load_target("local")
    measure, prof = LocalMeasure(target), open_profile(target)
    config = core_configs(target)[0]
    try:  # a small real profile of this host: tiny convs, two primitives each
        for d in space_filling(10, max_mflops=2.0):
            for primitive in ("im2col_gemm/nchw", "onnxruntime"):
                m = measure(d, primitive, config)
                prof.append([Sample(d, primitive, config, m.ms, m.reps, m.spread)])
    finally:
        measure.close()
    prof.save()
    first = plan(project / "m.yaml", "local")[0]
    assert first.doc["inputs"]["costmodel"]["source"].startswith("profile:")
    s = open_profile(target).samples[0]
    feed_profile(target, [Sample(s.descriptor, s.primitive, s.config, s.ms * 1.5,
                                 tag="refine")])  # what refinement does after every push
    again = check(project / "m.yaml", "local")[0]
    assert again.stale == []  # the profile's digest is information, not an input of staleness
    assert again.doc["inputs"]["costmodel"]["sha256"] != first.doc["inputs"]["costmodel"]["sha256"]
