"""Measure-to-decide's Winograd trial on this host: the winner's configuration runs on the model
with its faster 3x3 convolutions rewritten against the model as given, and the faster one is
written, built and deployed.

The model is a PyTorch-style ResNet block at 16 px (three 3x3, stride-1 convolutions). Which of
them run faster as Winograd in context, and which model runs faster whole, is this host's to say; to
exercise each branch, the tests take every convolution and stretch one model's windows (a board
where that model is slow, simulated), as the precision tests do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import onnx
import pytest

from edgedeploy import api
from edgedeploy.benchmarks import decide
from edgedeploy.benchmarks.estimator import Window
from edgedeploy.benchmarks.winograd_trial import WinogradTrial
from edgedeploy.errors import ModelError
from edgedeploy.importers.onnx_winograd import conv_sites
from edgedeploy.planner import winograd
from edgedeploy.planner.api import model_graph, planned_graph
from edgedeploy.schemas import load_manifest
from edgedeploy.schemas.plan import Plan, load_plan
from edgedeploy.testing.onnx_models import pytorch_style_resnet_block

MANIFEST = """name: block
model:
  path: block.onnx
targets:
  local: {board: local}
measure: {budget_s: 3, shortlist: 1, quick_profile_s: 0}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    onnx.save(pytorch_style_resnet_block(size=16), str(tmp_path / "block.onnx"))
    (tmp_path / "m.yaml").write_text(MANIFEST)
    return tmp_path / "m.yaml"


class Timed(decide.LocalTrials):
    """The real trials, recording the model file each was cut from; ``slow`` (``"given"`` or
    ``"rewritten"``) stretches that model's windows fourfold, and to 100 fps at most: the block
    runs at thousands of frames a second in either form, and a neighbour's burst on a shared
    host can be larger than fourfold."""

    models: ClassVar[list[Path]] = []
    slow: ClassVar[str | None] = None

    def __init__(self, graph: object, model_path: object, **kw: Any) -> None:
        self.rewritten = "winograd" in Path(str(model_path)).name
        self.models.append(Path(str(model_path)))
        super().__init__(graph, model_path, **kw)

    def __call__(self, e: decide.Entry, frames: int, warmup: int, latency: bool = True
                 ) -> tuple[Window, float | None, None]:
        window, alone, energy = super().__call__(e, frames, warmup, latency)
        if self.slow == ("rewritten" if self.rewritten else "given"):
            window = Window(window.frames, max(window.wall_s * 4, window.frames / 100))
        return window, alone, energy


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> type[Timed]:
    monkeypatch.setattr(decide, "LocalTrials", Timed)
    monkeypatch.setattr(winograd, "MIN_LAYER_GAIN", 0.0)  # every convolution taken,
    monkeypatch.setattr(winograd, "MIN_LAYER_MACS", 0)  # tiny as they are,
    monkeypatch.setattr(WinogradTrial, "saved", lambda *_: None)  # however little
    # the trial against the winner is checked, not which contenders raced for it: the plan and
    # the baselines, not their micro-batched variants besides (each a pipeline to start)
    monkeypatch.setattr(decide, "BATCH_SIZES", ())
    Timed.models, Timed.slow = [], None
    return Timed


def _plan(manifest: Path) -> Plan:
    summary = api.plan(manifest, "local")[0].summary()  # `plan --json`
    p = load_plan(manifest.parent / "block.local.plan.json")
    assert p.decision is not None and p.decision.measured and p.winograd is not None
    assert (summary["winograd"]["chosen"], summary["winograd"]["layers"]) == \
        (p.winograd.chosen, p.winograd.layers)
    # the plan's layers are those of the model it names
    m = load_manifest(manifest)
    graph = planned_graph(m, p.model_dump(mode="json"), model_graph(m))
    assert [layer.name for layer in graph.layers] == [layer.name for layer in p.layers]
    assert p.stages[-1].stop == len(graph.layers)
    return p


def _rewritten_nodes(bundle: Path) -> int:
    return sum("/winograd/" in n.name
               for seg in (bundle / "app" / "segments").glob("*.onnx")
               if not seg.name.endswith(".opt.onnx")
               for n in onnx.load(str(seg), load_external_data=False).graph.node)


def test_where_the_rewrite_runs_faster_it_is_planned_built_and_pushed(project: Path,
                                                                       timed) -> None:
    timed.slow = "given"
    given = load_plan(api.plan(project, "local", measure=False, output=project.parent / "g.json"
                               )[0].plan_file)
    p = _plan(project)
    w = p.winograd
    sites = sorted(s.node for s in conv_sites(onnx.load(str(project.parent / "block.onnx"))))
    assert w.chosen and w.layers == sites and set(w.layer_gains) == set(sites)
    # the baselines are what a user runs instead: the model as given, as priced for it
    assert {n: b.predicted for n, b in p.baselines.items()} == \
        {n: b.predicted for n, b in given.baselines.items()}
    assert w.model == p.model["path"] and w.model.startswith("build/winograd/")
    assert w.rewritten_fps > w.as_given_fps > 0 and "rewritten" in (w.reason or "")
    assert p.measured is not None and p.measured["throughput_fps"] == w.rewritten_fps
    # the winner's configuration was run on both files, the rewritten one cut from its own
    rewritten = project.parent / w.model
    assert rewritten.resolve() in {m.resolve() for m in timed.models}
    # and the model as given opened once: the trial ran it on the winner's system, still warm
    assert sum("winograd" not in m.name for m in timed.models) == 1
    assert api.plan_check(project, "local")[0].stale == []
    # push builds the rewritten model, and rebuilds it from the lockfile's layers when gone
    rewritten.unlink()
    outcome = api.push(project, "local", dry_run=True, refine=False)
    assert not outcome.replanned and rewritten.is_file()
    assert _rewritten_nodes(Path(outcome.bundle.root)) > 0
    # a bare build of the lockfile cannot rebuild it (no manifest): it says what will
    rewritten.unlink()
    with pytest.raises(ModelError, match="Winograd is gone") as err:
        api.build(project.parent / "block.local.plan.json", project.parent / "out")
    assert "edgedeploy push" in (err.value.hint or "")


def test_where_the_rewrite_runs_no_faster_the_model_as_given_is_kept(project: Path,
                                                                      timed) -> None:
    timed.slow = "rewritten"
    p = _plan(project)
    w = p.winograd
    assert not w.chosen and w.layers and w.model is None and p.model["path"] == "block.onnx"
    assert w.as_given_fps > w.rewritten_fps > 0 and "as given is kept" in (w.reason or "")
    outcome = api.push(project, "local", dry_run=True, refine=False)
    assert _rewritten_nodes(Path(outcome.bundle.root)) == 0


def test_no_layer_faster_alone_measures_nothing_more(project: Path, timed,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(winograd, "MIN_LAYER_GAIN", float("inf"))
    p = _plan(project)
    w = p.winograd
    assert not w.chosen and w.layers == [] and w.layer_gains and "no 3x3" in (w.reason or "")
    assert {m.name for m in timed.models} == {"block.onnx"}  # no rewritten model was run
    # the setting off: no convolution is timed and the lockfile says nothing of it
    project.write_text(MANIFEST.replace("quick_profile_s: 0}", "quick_profile_s: 0, "
                                        "winograd: false}"))
    assert load_plan(api.plan(project, "local")[0].plan_file).winograd is None


def test_layers_too_few_to_save_the_margin_are_not_measured(project: Path, timed,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setattr(WinogradTrial, "saved", lambda *_: 1e-6)
    p = _plan(project)
    w = p.winograd
    sites = sorted(s.node for s in conv_sites(onnx.load(str(project.parent / "block.onnx"))))
    assert not w.chosen and w.layers == sites and w.model is None
    assert "(0.0%), under the " in (w.reason or "") and "not measured" in (w.reason or "")
    assert "it would need to run 3% faster than" in (w.reason or "")
    assert {m.name for m in timed.models} == {"block.onnx"}  # no rewritten model was run


def test_the_layers_worth_rewriting_are_tried_only_where_they_lift_their_contender_past_the_winner(
        ) -> None:
    trial = WinogradTrial(None, {1: {"a": 1.14, "b": 1.2, "c": 0.9}, 2: {"a": 0.9}},
                          {1: {"a": 1.2, "b": 0.4, "c": -3.0}, 2: {"a": -0.5}})
    # a layer slower rewritten is no part of it: a and b save 1.6 ms of a 55 ms frame
    assert trial.saved(1) == pytest.approx(1.6)
    assert trial.saving(1, 55.0) == pytest.approx(1.6 / 55.0)
    assert not trial.worth_trying(1, 55.0)  # 2.9 %: under the 3 % a rewritten model must win by
    assert trial.worth_trying(1, 50.0)  # 3.2 % of a shorter frame
    assert trial.saving(1, None) is None and trial.worth_trying(1, None)  # frame time unknown
    assert not trial.worth_trying(2, 1.0)  # nothing ran faster on 2 cores
    # the contender that would run them measured 1 % under the winner: 3 % of its own frame
    # is not enough, the rewrite must lift it 3 % past the winner
    assert trial.worth_trying(1, 50.0, beat_fps=20.0)
    assert not trial.worth_trying(1, 50.0, beat_fps=20.2)
    assert trial.needed_ms(50.0, 1, 20.2) == pytest.approx(50.0 - 0.97 * 1e3 / 20.2)
    # two replicas at 100 ms a frame each run 20 fps: 1.6 ms is 1.6 % of a replica's frame
    assert not trial.worth_trying(1, 100.0, replicas=2, beat_fps=20.0)
    # a contender already faster than the winner (kept by the margin rules) needs less
    assert trial.worth_trying(1, 55.0, beat_fps=17.5)
    assert trial.promising  # a layer ran faster: a share of the budget is kept for the trial
    assert WinogradTrial(None, {1: {"a": 1.06}}).saving(1, 55.0) is None  # no saving known


def test_a_rewritten_contender_is_predicted_from_what_its_layers_saved_in_context() -> None:
    from edgedeploy.benchmarks.winograd_trial import rewritten_prediction
    from edgedeploy.schemas.plan import Predicted

    given = Predicted(throughput_fps=10.0, latency_ms=100.0, energy_mj=50.0, power_w=5.0,
                      period_ms=100.0)
    # two replicas at 10 fps: 200 ms a frame each; 40 ms saved -> 160 ms, 12.5 fps
    got = rewritten_prediction(given, 2, 40.0)
    assert got.throughput_fps == pytest.approx(12.5)
    assert (got.latency_ms, got.period_ms, got.energy_mj) == pytest.approx((80.0, 80.0, 40.0))
    assert got.power_w == given.power_w
    assert rewritten_prediction(given, 2, -20.0).throughput_fps == pytest.approx(200 / 22)
    assert rewritten_prediction(given, 2, 0.0) == given


def test_bench_of_a_rewritten_plan_scores_it_against_the_users_own_model(project: Path
                                                                          ) -> None:
    from edgedeploy.benchmarks.compare import WINOGRAD_SUFFIX, _given_model

    doc = {"winograd": {"chosen": True, "layers": ["a"]}}
    assert _given_model(project, doc) == ((project.parent / "block.onnx").resolve(),
                                          WINOGRAD_SUFFIX)
    assert _given_model(project, {"winograd": {"chosen": False}}) == (None, "")
    bare = project.parent / "block.onnx"
    assert _given_model(bare, doc) == (bare.resolve(), WINOGRAD_SUFFIX)


def _opset9_cnn(path: Path) -> None:
    """Two 3x3 convolutions and a classifier at opset 9, its nodes unnamed: as the ONNX model
    zoo's Caffe2 exports are, whose Pad and Slice take no inputs yet."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32),
                                       name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [init("w1", 16, 8, 3, 3), init("b1", 16), init("w2", 16, 16, 3, 3), init("b2", 16),
         init("wf", 10, 16), init("bf", 10)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    onnx.save(model, str(path))


def test_a_model_older_than_the_rewrites_operators_is_converted_and_rewritten(project: Path,
                                                                              timed) -> None:
    _opset9_cnn(project.parent / "block.onnx")
    timed.slow = "given"
    p = _plan(project)
    assert p.winograd.chosen and len(p.winograd.layers) == 2
    rewritten = onnx.load(str(project.parent / p.winograd.model))
    assert max(o.version for o in rewritten.opset_import if o.domain in ("", "ai.onnx")) >= 11
    outcome = api.push(project, "local", dry_run=True, refine=False)
    assert _rewritten_nodes(Path(outcome.bundle.root)) > 0


def test_a_rewritten_model_that_cannot_be_built_keeps_the_model_as_given(
        project: Path, timed, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(manifest: object, record: object) -> None:
        raise ModelError("the version converter has no adapter for this model")

    monkeypatch.setattr(winograd, "variant_graph", broken)
    p = _plan(project)
    w = p.winograd
    assert not w.chosen and w.layers and p.model["path"] == "block.onnx"
    assert "could not be built" in (w.reason or "") and "no adapter" in (w.reason or "")
    assert p.decision.measured and {m.name for m in timed.models} == {"block.onnx"}


def test_only_contenders_running_one_frame_a_call_take_the_layers_timed_so() -> None:
    """The layers are timed one frame a call; what they save there is no guide to a batched
    session's frame, so a micro-batched contender is never the trial's source, however fast."""
    from edgedeploy.benchmarks.decide import Entry
    from edgedeploy.benchmarks.winograd_trial import fits_rewrite
    from edgedeploy.importers.onnx import import_onnx
    from edgedeploy.schemas.plan import ParetoStage, Predicted

    graph = import_onnx(pytorch_style_resnet_block(size=16))
    n = len(graph.layers)
    none = Predicted(throughput_fps=None, latency_ms=None, energy_mj=None, power_w=None,
                     period_ms=None)

    def entry(batch: int, precision: str | None = None, engine: str = "onnxruntime") -> Entry:
        stage = ParetoStage(start=0, stop=n, cluster="cpu", cores=2, replicas=1, cpus=[0, 1],
                            choices=[engine] * n, batch=batch)
        e = Entry("e", [stage], [engine] * n, none)
        e.precision = precision
        return e

    assert fits_rewrite(entry(1), graph) and fits_rewrite(entry(1, "fp32"), graph)
    assert not fits_rewrite(entry(4), graph) and not fits_rewrite(entry(2), graph)
    assert not fits_rewrite(entry(1, "int8"), graph)
    assert not fits_rewrite(entry(1, engine="winograd_f4x3/nchw"), graph)
