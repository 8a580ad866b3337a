"""Micro-batching as a measured plan choice: segments with a free batch axis, batched variants
of the best whole-model baseline in measure-to-decide's shortlist, and a batched plan that the
runner builds, verifies and runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgedeploy import api, zoo
from edgedeploy.benchmarks.decide import Entry, as_plan, shortlist
from edgedeploy.errors import InputError
from edgedeploy.execute import RunRequest
from edgedeploy.generator import BuildInput, PlanConfig, StageConfig, build_bundle
from edgedeploy.importers.onnx_batch import frames_kept_apart, with_dynamic_batch
from edgedeploy.importers.segments import segment_provider
from edgedeploy.planner.lock import dumps
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.executor import segment_io
from edgedeploy.runtime.stages import BATCH_SIZES
from edgedeploy.schemas.plan import Decision, load_plan

MANIFEST = """name: sq
model:
  path: sq.onnx
objective: {objective}
constraints: {constraints}
targets:
  local: {{}}
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.export("squeezenet1_1", tmp_path_factory.mktemp("batch") / "sq.onnx", size=32,
                      num_classes=10)


def test_a_segment_with_a_free_batch_axis_runs_frames_together_as_apart(model: Path):
    graph = api.load_model(model)
    ins, outs = segment_io(graph, 3, len(graph.layers) - 2)  # a cut from the middle
    fixed = segment_provider(graph, model)("onnxruntime", ins, outs)
    free = segment_provider(graph, model, dynamic_batch=True)("onnxruntime", ins, outs)
    proto = onnx.load_from_string(free)
    assert all(v.type.tensor_type.shape.dim[0].dim_param == "batch"
               for v in [*proto.graph.input, *proto.graph.output])
    assert with_dynamic_batch(free) == free  # idempotent
    one = ort.InferenceSession(fixed, providers=["CPUExecutionProvider"])
    many = ort.InferenceSession(free, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    frames = [{t: rng.standard_normal(graph.shape(t)).astype(np.float32) for t in ins}
              for _ in range(3)]
    apart = [one.run(None, f) for f in frames]
    together = many.run(None, {t: np.concatenate([f[t] for f in frames]) for t in ins})
    for k, got in enumerate(apart):
        for a, b in zip(got, together, strict=True):
            np.testing.assert_allclose(b[k:k + 1], a, rtol=1e-5, atol=1e-5)


def test_a_batched_provider_cut_by_another_makes_the_same_segments_from_its_cuts(model: Path):
    """Cutting a large model takes seconds: the contenders that micro-batch get their segments
    from the cuts of those that do not, each cut once, and the same bytes as cut afresh."""
    graph = api.load_model(model)
    ins, outs = segment_io(graph, 3, len(graph.layers) - 2)
    cuts: list[tuple[str, ...]] = []
    static = segment_provider(graph, model)

    def counted(engine: str, i: list[str], o: list[str]) -> bytes:
        cuts.append((engine, *i, *o))
        return static(engine, i, o)

    free = segment_provider(graph, model, dynamic_batch=True, cut_by=counted)
    assert free("onnxruntime", ins, outs) == \
        segment_provider(graph, model, dynamic_batch=True)("onnxruntime", ins, outs)
    assert free("onnxruntime", ins, outs) == free("onnxruntime", ins, outs)
    assert len(cuts) == 1  # asked of the other once, kept
    whole_in, whole_out = segment_io(graph, 0, len(graph.layers))
    free("onnxruntime", whole_in, whole_out)
    assert len(cuts) == 2


def _plan(model: Path, objective: str, constraints: str = "{}"):
    manifest = model.parent / f"{objective}.yaml"
    manifest.write_text(MANIFEST.format(objective=objective, constraints=constraints))
    return load_plan(api.plan(manifest, "local", measure=False)[0].plan_file)


def test_the_shortlist_tries_micro_batches_of_every_whole_model_baseline(model: Path):
    """Every batch size of the baseline predicted fastest (with no batch speed-ups measured:
    fastest as it is), and the largest batch of the other one."""
    graph = api.load_model(model)
    plan = _plan(model, "throughput")
    entries = shortlist(plan, graph=graph)
    whole = sorted(n for n, b in plan.baselines.items() if b.stages)
    best = max(whole, key=lambda n: plan.baselines[n].predicted.throughput_fps or 0.0)
    (other,) = set(whole) - {best}
    batched = [e for e in entries if any(s.batch > 1 for s in e.stages)]
    # a whole-model stage on every core of this host runs its batches inline (no worker hop)
    assert [e.name.removesuffix("_inline") for e in batched] == [
        *(f"{best}_batch{b}" for b in BATCH_SIZES), f"{other}_batch{max(BATCH_SIZES)}"]
    for e in batched:
        base = plan.baselines[e.name.removesuffix("_inline").rsplit("_batch", 1)[0]]
        assert e.optional and not e.baseline
        assert [s.model_copy(update={"batch": 1, "inline": False})
                for s in e.stages] == base.stages
        every = len(e.stages) == 1 and e.stages[0].cpus == sorted(available_cpus())
        assert e.name.endswith("_inline") is every is e.stages[0].inline

    def batches(entries: list) -> list[str]:
        return [e.name.removesuffix("_inline") for e in entries
                if any(s.batch > 1 for s in e.stages)]

    assert not batches(shortlist(plan))  # no graph (a twin): none
    assert not batches(shortlist(_plan(model, "latency"), graph=graph))
    # a frame may wait for its whole batch: a bound of 3x the slower baseline's latency keeps
    # batch 2 of it, and batches of the faster-answering one up to the bound
    slow = max(whole, key=lambda n: plan.baselines[n].predicted.latency_ms)
    bound = 3 * plan.baselines[slow].predicted.latency_ms
    tight = batches(shortlist(_plan(model, "throughput", f"{{max_latency_ms: {bound}}}"),
                              graph=graph))
    assert f"{slow}_batch2" in tight and f"{slow}_batch4" not in tight
    for name in tight:
        base, b = name.rsplit("_batch", 1)
        assert plan.baselines[base].predicted.latency_ms * int(b) <= bound


def test_measure_to_decide_cuts_each_segment_once_for_batched_and_unbatched_contenders(
        model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedeploy.benchmarks.decide import LocalTrials
    from edgedeploy.importers import segments
    from edgedeploy.runtime.vocab import ONNX

    made: list[tuple[str, ...]] = []
    real = segments.CUTTERS[ONNX]

    def counting(graph: object, path: Path):  # type: ignore[no-untyped-def]
        cut = real(graph, path)

        def counted(ins: list[str], outs: list[str]) -> bytes:
            made.append((*ins, *outs))
            return cut(ins, outs)
        return counted

    monkeypatch.setitem(segments.CUTTERS, ONNX, counting)
    graph = api.load_model(model)
    whole = [e for e in shortlist(_plan(model, "throughput"), graph=graph)
             if len(e.stages) == 1 and all(c == "onnxruntime" for c in e.choices)]
    assert any(e.stages[0].batch > 1 for e in whole) and any(
        e.stages[0].batch == 1 for e in whole)
    trials = LocalTrials(graph, model)
    try:
        trials.open(whole)
        assert set(trials.systems) == {e.name for e in whole}  # every one started
    finally:
        trials.close()
    assert len(made) == len(set(made)) == 1  # the whole model, cut once for all of them


def test_a_batched_plan_is_built_verified_and_run_by_the_runner(model: Path, tmp_path: Path):
    graph = api.load_model(model)
    n = len(graph.layers)
    whole = {layer.name: "onnxruntime" for layer in graph.layers}
    batched = PlanConfig("plan", (StageConfig("stage0", 0, n, cpus=(0,), replicas=1, batch=4),),
                         whole, {})
    bundle = build_bundle(BuildInput("sq", "local", "linux", (batched,)), graph, model,
                          tmp_path / "bundle").root
    config = json.loads((bundle / "app/config.json").read_text())
    assert config["plans"]["plan"]["stages"][0]["batch"] == 4
    seg = next((bundle / "app/segments").glob("*.onnx"))
    assert onnx.load(str(seg)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EDGEDEPLOY_STATE_DIR": str(tmp_path)}

    def runner(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-I", "main.py", *args, "--json"], cwd=bundle,
                              env=env, capture_output=True, text=True, timeout=100)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert runner("health")["ok"] is True  # outputs equal the reference
    measured = runner("measure", "--frames", "24", "--warmup", "2")
    assert measured["frames"] == 24 and measured["throughput_fps"] > 0


def test_a_stage_that_cannot_batch_is_refused_at_build(model: Path, tmp_path: Path):
    graph = api.load_model(model)
    n = len(graph.layers)
    native = PlanConfig("plan", (StageConfig("stage0", 0, n, cpus=(0,), batch=2),), {}, {})
    with pytest.raises(InputError, match="batches 2 frames"):
        build_bundle(BuildInput("sq", "local", "linux", (native,)), graph, model,
                     tmp_path / "bundle")


def test_a_batched_lockfile_runs_with_verified_outputs(model: Path):
    plan = _plan(model, "throughput")
    best = max((n for n, b in plan.baselines.items() if b.stages),
               key=lambda n: plan.baselines[n].predicted.throughput_fps or 0.0)
    graph = api.load_model(model)
    base = plan.baselines[best]
    entry = Entry("b", [s.model_copy(update={"batch": 2}) for s in base.stages],
                  [c for s in base.stages for c in s.choices], base.predicted)
    batched = as_plan(plan, graph, entry, Decision(measured=True, target="local"))
    path = model.parent / "batched.plan.json"
    path.write_text(dumps(batched.model_dump(mode="json")))
    assert json.loads(path.read_text())["stages"][0]["batch"] == 2
    report = api.run_plan(path, RunRequest(frames=12, warmup=2, verify=True))
    assert report.max_rel_error is not None and report.max_rel_error < 1e-4


def test_a_measured_winner_of_one_stage_is_priced_shown_and_reported(model: Path, tmp_path,
                                                                     capsys):
    from types import SimpleNamespace

    from edgedeploy.cli import output
    from edgedeploy.planner.report import write_report

    pytest.importorskip("matplotlib")
    plan = _plan(model, "throughput")
    graph = api.load_model(model)
    name, base = next((n, b) for n, b in sorted(plan.baselines.items())
                      if b.stages and len(b.stages) == 1 and b.stages[0].replicas > 1)
    entry = Entry(name, base.stages, [c for s in base.stages for c in s.choices],
                  base.predicted, baseline=True)
    chosen = as_plan(plan, graph, entry, Decision(measured=True, target="local"))
    (stage,) = chosen.stages  # one replica's time a frame, as the planner prices a stage
    assert stage.predicted_ms == pytest.approx(base.predicted.period_ms * stage.replicas)
    doc = chosen.model_dump(mode="json")
    files = write_report(SimpleNamespace(doc=doc, plan_file=model), tmp_path / "one")
    assert {f.suffix for f in files} == {".png", ".svg", ".html"}
    # a winner whose stages are priced only together: the page, without charts
    doc["stages"] = [dict(s, predicted_ms=None) for s in doc["stages"]]
    (page,) = write_report(SimpleNamespace(doc=doc, plan_file=model), tmp_path / "two")
    assert "not price its" in page.read_text() and "<td>-</td>" in page.read_text()
    output.table(None, ["stage", "predicted ms"], [["stage0", None]])
    assert capsys.readouterr().out.splitlines()[-1] == "stage0\t-"


def test_a_bundle_for_refinement_on_a_device_ships_free_batch_segments_it_can_batch_over(
        model: Path, tmp_path: Path):
    """A throughput bundle for an SSH board carries segments free in the batch, says so in its
    config, and its runner measures a batched candidate the refiner proposes there (through
    the same RunnerBackend refinement uses, the command run locally here)."""
    from edgedeploy.refine.api import shipped_segments
    from edgedeploy.refine.candidate import Candidate, Space, StageConf
    from edgedeploy.refine.measure import RunnerBackend
    from edgedeploy.refine.operators import change_batch
    from edgedeploy.refine.runnable import check_for

    graph = api.load_model(model)
    n = len(graph.layers)
    whole = {layer.name: "onnxruntime" for layer in graph.layers}
    plain = PlanConfig("plan", (StageConfig("stage0", 0, n, cpus=(0,), replicas=1),), whole, {})
    roots = {free: build_bundle(BuildInput("sq", "edge", "linux", (plain,), free_batch=free),
                                graph, model, tmp_path / f"b{free}").root
             for free in (True, False)}

    def run_in(root: Path):
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EDGEDEPLOY_STATE_DIR":
               str(tmp_path)}

        def run(argv: list[str]) -> str:
            if argv[0] == "cat":
                return Path(argv[1]).read_text()
            proc = subprocess.run([sys.executable, "-I", *argv[1:]], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=100)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout
        return run

    names = [layer.name for layer in graph.layers]
    for free, root in roots.items():
        shipped, free_batch = shipped_segments(run_in(root), str(root))
        assert free_batch is free and len(shipped) == 1
        space = Space(names, [("onnxruntime",)] * n, {"cpu": (0,)}, batches=(1, 2, 4))
        space.runnable = check_for(graph, space, shipped, free_batch)
        seed = Candidate((StageConf(0, n, "cpu", 1),), ("onnxruntime",) * n)
        batched = seed.with_stages([StageConf(0, n, "cpu", 1, 1, 4)])
        assert space.is_valid(seed) and space.is_valid(batched) is free
        if not free:
            assert any("hold a batch of one" in v for v in space.violations(batched))
            assert change_batch(seed, space, np.random.default_rng(0)) is None
            continue
        moved = change_batch(seed, space, np.random.default_rng(0))
        assert moved is not None and moved.stages[0].batch in (2, 4)
        backend = RunnerBackend(space, run_in(root), python=sys.executable)
        m = backend.measure(batched, 16, 2)
        assert m.throughput_fps > 0


def _reshaping(path: Path, shape: list[int], dims: list[int | str] | None = None) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Reshape", ["r", "shape"], ["output"])], "head",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims or [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array(shape, np.int64), "shape")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(("shape", "free", "dims"), [
    ([2, -1], False, None),  # batch frames would be mixed into two rows
    ([4, 64], False, None),  # a batch would not fit
    # a leading 1 of a tensor that leads with 1: the segment copies the batch axis there
    ([1, -1], True, None), ([1, 256], True, None), ([1, 4, 64], True, None),
    # ... also where the file leaves the input's dimensions free (PP-OCR's classifier)
    ([1, 256], True, ["N", 3, "H", "W"]),
    ([-1, 256], True, None), ([0, -1], True, None), ([0, 4, 64], True, None)])
def test_a_reshape_that_spells_another_batch_out_is_not_batched(
        tmp_path: Path, shape: list[int], free: bool, dims: list[int | str] | None) -> None:
    """PP-OCR's classifier reshapes to [1, 200], YOLOv8n's head to [1, 82, -1] and Caffe2's
    AlexNet to [1, 9216]: batched as written, the first failed in onnxruntime and the second
    would have run, mixing frames. Their leading 1 is the batch of one they read, so a segment
    with a free batch axis copies the axis there (0) and each frame keeps its own answer; a
    leading literal other than 1 still keeps the stage from batching."""
    from edgedeploy.runtime.stages import batchable

    graph = api.load_model(_reshaping(tmp_path / "head.onnx", shape, dims),
                           input_shape=(1, 3, 8, 8) if dims else None)
    whole = {layer.name: "onnxruntime" for layer in graph.layers}
    assert batchable(graph, 0, len(graph.layers), whole) is free
    if free:  # and where it is, a batch of frames gives each frame its own answer
        model = tmp_path / "head.onnx"
        ins, outs = segment_io(graph, 0, len(graph.layers))
        many = ort.InferenceSession(segment_provider(graph, model, dynamic_batch=True)(
            "onnxruntime", ins, outs), providers=["CPUExecutionProvider"])
        one = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        assert frames_kept_apart(graph, model)
        frames = np.random.default_rng(1).standard_normal((3, 1, 3, 8, 8)).astype(np.float32)
        together = many.run(None, {"input": frames.reshape(3, 3, 8, 8)})[0]
        for k in range(3):
            np.testing.assert_allclose(together[k:k + 1], one.run(None, {"input": frames[k]})[0],
                                       rtol=1e-5, atol=1e-5)


def _mixing(path: Path) -> Path:
    """A conv whose scores are normalised over the batch axis: it runs batched without error."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Softmax", ["c"], ["output"], axis=0)], "mixing",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_batch_must_answer_each_frame_as_alone(model: Path, tmp_path: Path) -> None:
    from edgedeploy.importers.onnx_batch import frames_kept_apart
    from edgedeploy.runtime.stages import batchable

    assert frames_kept_apart(api.load_model(model), model)
    mixing = _mixing(tmp_path / "mixing.onnx")
    graph = api.load_model(mixing)
    whole = {layer.name: "onnxruntime" for layer in graph.layers}
    assert batchable(graph, 0, len(graph.layers), whole)  # nothing static gives it away
    assert not frames_kept_apart(graph, mixing)


def test_measure_to_decide_drops_batches_that_mix_frames(tmp_path: Path) -> None:
    _mixing(tmp_path / "mixing.onnx")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: mix\nmodel: mixing.onnx\nobjective: throughput\ntargets:\n"
                        "  local: {}\nmeasure: {budget_s: 2, quick_profile_s: 0}\n")
    said: list[str] = []
    plan = load_plan(api.plan(manifest, "local", progress=said.append)[0].plan_file)
    assert any(re.search(r"_batch2(_inline)?: a batch of two frames is not answered", line)
               for line in said)
    assert plan.decision is not None and plan.decision.measured
    assert all(s.batch == 1 for s in plan.stages)
    assert not any("_batch" in c.name for c in plan.decision.contenders)


def test_a_push_ships_segments_free_in_the_batch_only_where_frames_stay_apart(
        model: Path, tmp_path: Path) -> None:
    """An SSH board refines a throughput plan with the bundle's own segments: free in the batch
    they let it batch, which it must not where the model mixes a batch's frames."""
    from edgedeploy.api import _batch_on_device
    from edgedeploy.schemas.loader import load_manifest

    for path, free in ((model, True), (_mixing(tmp_path / "mixing.onnx"), False)):
        manifest = tmp_path / f"{path.stem}.yaml"
        manifest.write_text(f"name: b\nmodel: {path}\nobjective: throughput\ntargets:\n"
                            "  edge: {board: rpi4, host: 127.0.0.1}\n")
        m = load_manifest(manifest)
        assert _batch_on_device(m, "edge", api.load_model(path)) is free


def test_a_batch_is_checked_with_the_constants_the_importer_folded(tmp_path: Path) -> None:
    """PP-OCRv2's recognizer computes an LSTM's initial state from its input's Shape: the file
    batches, but the importer folds that state at batch 1 and every segment cut from the file
    holds it so, and the batched contenders failed in measure-to-decide. Here zeros made from
    a Shape are concatenated to the conv's output."""
    from onnx import TensorProto, helper, numpy_helper

    from edgedeploy.importers.onnx_batch import frames_kept_apart

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Shape", ["c"], ["s"]),
         helper.make_node("ConstantOfShape", ["s"], ["zeros"]),
         helper.make_node("Concat", ["c", "zeros"], ["output"], axis=1)], "state",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")])
    model = tmp_path / "state.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    graph_ir = api.load_model(model)
    assert "zeros" in graph_ir.source["onnx_folded"]  # the premise: folded at batch 1
    ins, outs = segment_io(graph_ir, 0, len(graph_ir.layers))
    batched = ort.InferenceSession(segment_provider(graph_ir, model, dynamic_batch=True)(
        "onnxruntime", ins, outs), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="Concat"):  # what a batched contender would run
        batched.run(None, {"input": np.zeros((2, 3, 8, 8), np.float32)})
    assert not frames_kept_apart(graph_ir, model)
