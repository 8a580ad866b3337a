"""``model.precision: auto`` on a target this host measures: the int8 model the guard accepted
and the model as given are planned and timed side by side, and the faster one is written,
built and deployed.

The model is SqueezeNet 1.1 at 32 px, quantized for real by onnxruntime.quantization.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
from tests.benchmarks.test_decide import raced

from edgedeploy import api, zoo
from edgedeploy.benchmarks import decide
from edgedeploy.benchmarks.estimator import Window
from edgedeploy.errors import ModelError
from edgedeploy.planner.api import model_graph, planned_graph
from edgedeploy.schemas import load_manifest
from edgedeploy.schemas.plan import Plan, load_plan

SIZE = 32
MANIFEST = """name: sq
model:
  path: sq.onnx
  precision: auto
  calibration: frames.npz
  max_output_error: 0.5
targets:
  local: {board: local}
measure: {budget_s: 3, shortlist: 1, quick_profile_s: 0}
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    zoo.export("squeezenet1_1", folder / "sq.onnx", size=SIZE)
    rng = np.random.default_rng(7)
    np.savez(folder / "frames.npz", input=rng.random((10, 1, 3, SIZE, SIZE), dtype=np.float32))
    return folder


@pytest.fixture
def project(tmp_path: Path, source: Path) -> Path:
    for name in ("sq.onnx", "frames.npz"):
        shutil.copy(source / name, tmp_path / name)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    return tmp_path / "m.yaml"


class Timed(decide.LocalTrials):
    """The real trials, recording which model file each precision's contenders were cut from;
    ``slow`` stretches one precision's windows tenfold: a board where that precision's
    kernels are slow (simulated, so each branch of the decision is exercised on this host).
    Tenfold, since a decision of two pairs must win both: fourfold once lost a pair to the load
    of the suite's other worker on a 2-core host."""

    models: ClassVar[list[Path]] = []
    slow: ClassVar[str | None] = None

    def __init__(self, graph: object, model_path: object, **kw: Any) -> None:
        self.models.append(Path(str(model_path)))
        super().__init__(graph, model_path, **kw)

    def __call__(self, e: decide.Entry, frames: int, warmup: int, latency: bool = True
                 ) -> tuple[Window, float | None, None]:
        window, alone, energy = super().__call__(e, frames, warmup, latency)
        if e.precision == self.slow:
            window = Window(window.frames, window.wall_s * 10)
        return window, alone, energy


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> type[Timed]:
    monkeypatch.setattr(decide, "LocalTrials", Timed)
    # which precision wins is checked, not which of its contenders: the plan and the baselines
    # of each precision, not their micro-batched variants besides (each a pipeline to start)
    monkeypatch.setattr(decide, "BATCH_SIZES", ())
    Timed.models, Timed.slow = [], None
    return Timed


def _checks(manifest: Path) -> Plan:
    path = manifest.parent / "sq.local.plan.json"
    p = load_plan(path)
    d = p.decision
    assert d is not None and d.measured and p.precision is not None
    precisions = {c.precision for c in d.contenders}
    assert precisions == {"int8", "fp32"}  # both precisions were timed, side by side
    raced(d.contenders)  # the same rounds for all, but those left behind after a pair
    # what a user would run by hand is their own model: int8 contenders are no baselines
    assert not any(c.baseline for c in d.contenders if c.precision == "int8")
    assert any(c.baseline for c in d.contenders if c.precision == "fp32")
    winner = next(c for c in d.contenders if c.name == d.winner)
    assert p.precision.chosen == winner.precision
    assert "measured on the board" in (p.precision.reason or "")
    assert p.measured is not None and p.measured["throughput_fps"] == winner.measured_fps
    if winner.precision == "int8":
        assert "build/precision" in p.model["path"] and p.precision.model is not None
    else:
        assert p.model["path"] == "sq.onnx" and p.precision.model is None
    # the written plan's layers are those of the model it names
    m = load_manifest(manifest)
    graph = planned_graph(m, p.model_dump(mode="json"), model_graph(m))
    assert [layer.name for layer in graph.layers] == [layer.name for layer in p.layers]
    return p


def _quantized_ops(bundle: Path) -> set[str]:
    ops = set()
    for seg in (bundle / "app" / "segments").glob("*.onnx"):
        if not seg.name.endswith(".opt.onnx"):
            ops |= {n.op_type for n in onnx.load(str(seg), load_external_data=False).graph.node}
    return ops & {"QuantizeLinear", "DequantizeLinear"}


def test_auto_times_int8_against_fp32_and_writes_the_faster(project: Path, timed) -> None:
    api.plan(project, "local")
    _checks(project)
    # each precision's contenders were cut from its own file
    int8 = next((project.parent / "build" / "precision").glob("*.onnx"))
    assert sorted(timed.models) == sorted([project.parent / "sq.onnx", int8])
    assert api.plan_check(project, "local")[0].stale == []  # inputs unchanged: up to date


def test_where_int8_runs_slower_fp32_is_planned_built_and_pushed(project: Path, timed) -> None:
    timed.slow = "int8"
    api.plan(project, "local")
    p = _checks(project)
    assert p.precision.chosen == "fp32" and p.precision.measured_error is not None
    # push builds what the lockfile names, not the int8 model `auto` would take unmeasured
    outcome = api.push(project, "local", dry_run=True, refine=False)
    assert not outcome.replanned
    assert _quantized_ops(Path(outcome.bundle.root)) == set()


@pytest.mark.serial  # see below
def test_where_int8_wins_the_bundle_runs_the_int8_model(project: Path, timed) -> None:
    """int8 is no baseline, so it must win its rounds and then rounds timed again. Under the
    parallel suite's load (four test processes on two cores) it was once not chosen though its
    best read 905 fps against fp32's 69, when a pipeline's completion times were stamped as its
    collecting thread read them and a reader held off the cores read a burst of them at once
    (since stamped by the last stage, ``runtime.shm.Ring.published_s``). It runs alone, as a
    plan does: what it checks is the branch where int8 wins."""
    timed.slow = "fp32"
    api.plan(project, "local")
    p = _checks(project)
    assert p.precision.chosen == "int8", (p.precision.reason, p.decision.reason, [
        (c.name, c.precision, c.measured_fps, c.rounds_fps, c.confirm_fps)
        for c in p.decision.contenders])  # say why, if not
    outcome = api.push(project, "local", dry_run=True, refine=False)
    assert _quantized_ops(Path(outcome.bundle.root)) == {"QuantizeLinear", "DequantizeLinear"}
    # the int8 file lives in the build folder: a bare build without it says what will make it
    (project.parent / p.model["path"]).unlink()
    with pytest.raises(ModelError, match="quantized to int8 is gone") as err:
        api.build(project.parent / "sq.local.plan.json", project.parent / "out")
    assert "edgedeploy push" in (err.value.hint or "")


def test_an_unmeasured_auto_plan_takes_int8_when_the_guard_accepts(project: Path) -> None:
    p = load_plan(api.plan(project, "local", measure=False)[0].plan_file)
    assert p.precision is not None and p.precision.chosen == "int8"
    assert p.decision is not None and not p.decision.measured


def test_bench_of_an_int8_plan_measures_the_users_model_beside_the_int8_one(
        project: Path) -> None:
    from edgedeploy.benchmarks.compare import BenchRequest, bench

    project.write_text(MANIFEST.replace("precision: auto", "precision: int8"))
    answer = bench(project, BenchRequest(frames=30, rounds=2, measure_budget_s=0))
    names = [r["system"] for r in answer["results"]]
    assert names == ["edgedeploy", "ort_default_int8", "ort_replicas_int8", "ort_default",
                     "ort_replicas"]
    # the best baseline is the best way to run the model the user has (fp32) ...
    fp32 = [r for r in answer["results"] if r["system"] in ("ort_default", "ort_replicas")]
    best = max(fp32, key=lambda r: r["throughput_fps"])
    ours = answer["results"][0]["throughput_fps"]
    assert answer["best_baseline"] == best["system"]
    assert answer["ratio_vs_best_baseline"] == pytest.approx(ours / best["throughput_fps"])
    # ... and the int8 file run the same ways is reported beside it
    int8 = max(answer["results"][1:3], key=lambda r: r["throughput_fps"])
    assert answer["best_int8_baseline"] == int8["system"]
    assert answer["ratio_vs_best_int8_baseline"] == pytest.approx(ours / int8["throughput_fps"])
    assert answer["precision"]["chosen"] == "int8"
    # every system was timed over the same rounds
    assert len({len(r["rounds_fps"]) for r in answer["results"]}) == 1
