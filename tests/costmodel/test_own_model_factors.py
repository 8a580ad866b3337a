"""A profile taken for a model measures that model's layer shapes first and runs it whole, so
its plan is priced by its own segment factors and replica speed-ups, not only the zoo's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedeploy import zoo
from edgedeploy.boards.catalog import load_target
from edgedeploy.costmodel import CoreConfig, CostModel
from edgedeploy.costmodel.profile import open_profile
from edgedeploy.costmodel.profiling import profile_local, with_model_shapes
from edgedeploy.costmodel.segments import (
    MODELS,
    NATIVE,
    ONNXRUNTIME,
    OWN_RULE,
    REPLICAS,
    RULE,
    OwnModel,
    _Loaded,
    factor,
    for_model,
    load_factors,
    save_factors,
)
from edgedeploy.costmodel.shapes import designed_sample, model_shapes, shape_key
from edgedeploy.importers.onnx import import_onnx
from edgedeploy.planner.adapter import build_problem
from edgedeploy.runtime import ir
from edgedeploy.schemas.target import Target

#: The zoo model these profiles run whole beside the model they are taken for: which one does
#: not matter here, and SqueezeNet's int8 variant quantizes in a fifth of MobileNetV2's time.
CALIBRATION = [("squeezenet1_1", 32)]
BOARD = {ONNXRUNTIME: {"cpu:1": 0.6, "cpu:2": 0.5}, NATIVE: {"cpu:1": 1.5},
         REPLICAS: {"cpu": {"2": 1.4}, "big": {"4": 3.0}}}


def test_a_models_own_factors_replace_the_boards_where_measured_and_only_there():
    own = {ONNXRUNTIME: {"cpu:1": 0.9}, REPLICAS: {"cpu": {"2": 1.8}}}
    factors = {**BOARD, MODELS: {"abc": own}}
    mine = for_model(factors, "abc")
    assert mine[ONNXRUNTIME] == {"cpu:1": 0.9, "cpu:2": 0.5}
    assert mine[NATIVE] == BOARD[NATIVE]
    assert mine[REPLICAS] == {"cpu": {"2": 1.8}, "big": {"4": 3.0}}
    assert factor(mine, ONNXRUNTIME, CoreConfig("cpu", 1)) == 0.9
    for other in ("def", None, ""):
        assert for_model(factors, other) is factors  # another model: the board's
    assert factors[ONNXRUNTIME] == BOARD[ONNXRUNTIME]  # nothing changed in place


def test_own_factors_round_trip_beside_the_profile(tmp_path: Path):
    factors = {**BOARD, MODELS: {"abc": {ONNXRUNTIME: {"cpu:1": 0.9},
                                         REPLICAS: {"cpu": {"2": 1.8}}}}}
    save_factors(tmp_path / "p.json", {**factors, MODELS: {
        "abc": {RULE: OWN_RULE, **factors[MODELS]["abc"]}}}, [])
    assert load_factors(tmp_path / "p.json") == factors  # the rule read, not handed on


def test_the_planner_prices_a_model_by_its_own_factors(tmp_path: Path):
    target = load_target("local")
    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    graph = import_onnx(path)
    sha = graph.source["sha256"]
    model = CostModel(target)
    model.segment_factors = {ONNXRUNTIME: {"cpu:1": 0.5},
                             MODELS: {sha: {ONNXRUNTIME: {"cpu:1": 2.0}}}}
    own = build_problem(graph, target, model)
    model.segment_factors = {ONNXRUNTIME: {"cpu:1": 0.5}}
    board = build_problem(graph, target, model)
    col = [c.cores for c in own.configs].index(1)
    for a, b in zip(own.layers, board.layers, strict=True):
        k = a.options.index(ONNXRUNTIME)
        assert a.ms[k, col] == pytest.approx(b.ms[k, col] * 4.0)


def test_a_models_shapes_come_first_once_each():
    graph = import_onnx(zoo.build("squeezenet1_1", size=32))
    sample = designed_sample()
    order = [shape_key(d) for d in with_model_shapes(sample, graph)]
    own = [shape_key(d) for d in model_shapes(graph) if d.op == ir.CONV2D]
    assert order[:len(own)] == own
    assert len(order) == len(set(order))
    assert set(order) == set(own) | {shape_key(d) for d in sample}
    assert with_model_shapes(sample, None) == sample


def test_a_profile_for_a_model_measures_it_first_and_runs_it_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from edgedeploy.costmodel.segments import BATCH
    from edgedeploy.runtime.stages import BATCH_SIZES

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # its own profile
    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=48)
    graph = import_onnx(path)
    own = OwnModel.of(path, graph)
    assert own is not None
    target = load_target("local")
    said: list[str] = []

    def layers(*_args: object) -> None:
        said.append("layer sample")

    # a quick profile's total budget, which its models' whole runs alone overrun
    out = profile_local(target, 0.5, info=said.append, progress=layers, calibration=CALIBRATION,
                        own=own, total_s=0.6)
    prof = open_profile(target)
    first_seen = list(dict.fromkeys(shape_key(s.descriptor) for s in prof.samples))
    mine = [shape_key(d) for d in model_shapes(graph) if d.op == ir.CONV2D]
    n = min(len(first_seen), len(mine))
    assert n > 0 and first_seen[:n] == mine[:n]
    assert any("sq on cpu:1" in m for m in said)
    # the models ran whole first, then the layers had what was left: here their least
    whole = [i for i, m in enumerate(said) if m.startswith(("segments:", "replicas:"))]
    assert whole and max(whole) < said.index("layer sample")
    assert out["layer_budget_s"] == 0.5
    assert any(m.startswith("profile: models run whole in ") for m in said)
    # its own factors: measured whole over its per-layer sum, on every configuration
    stored = load_factors(Path(prof.path))
    assert stored[MODELS] == {sha: {k: v for k, v in d.items() if k != RULE}
                              for sha, d in out["segment_factors"][MODELS].items()}
    own_factors = stored[MODELS][own.sha256]
    cm = CostModel.for_target(target)
    configs = [c for c in cm.configs if not c.is_gpu]
    assert set(own_factors[ONNXRUNTIME]) == {c.key for c in configs}
    assert all(np.isfinite(v) and v > 0 for v in own_factors[ONNXRUNTIME].values())
    if any(c.cores > 1 for c in configs):
        assert own_factors[REPLICAS]
    # timed batched too, its frames being kept apart: one model's table, never the board's
    assert set(own_factors[BATCH]) == {c.key for c in configs}
    assert all(set(t) == {str(b) for b in BATCH_SIZES} and all(v > 0 for v in t.values())
               for t in own_factors[BATCH].values())
    assert BATCH not in out["segment_factors"]
    priced = cm.for_model(own.sha256)
    for c in configs:
        assert priced.segment_factor(ONNXRUNTIME, c) == own_factors[ONNXRUNTIME][c.key]
    # every run is priced by the cost model its layers fitted, though it ran before them
    import json

    from edgedeploy.costmodel.segments import LAYERS, _predicted_sum, factors_path

    runs = json.loads(factors_path(Path(prof.path)).read_text())["runs"]
    graphs = {"sq": graph, CALIBRATION[0][0]: import_onnx(
        zoo.export(CALIBRATION[0][0], tmp_path / "c.onnx", size=CALIBRATION[0][1]))}
    assert {r["model"] for r in runs} == set(graphs)
    for r in runs:
        g = graphs[r["model"]]
        assert r[ONNXRUNTIME][1] == pytest.approx(_predicted_sum(
            cm, g, CoreConfig.parse(r["config"]), {layer.name: ONNXRUNTIME for layer in g.layers},
            r.get(LAYERS)))
    # its stage's own cost a frame: streamed inline on its most cores, where a call is short
    from edgedeploy.costmodel.segments import FRAME, whole_ms
    from edgedeploy.runtime.model_timing import FRAME_MAX_CALL_MS

    most = max(configs, key=lambda c: c.cores)
    (run,) = [r for r in runs if r["model"] == "sq" and r["config"] == most.key]
    assert (FRAME in own_factors) == (whole_ms(run) < FRAME_MAX_CALL_MS)
    if FRAME in own_factors:
        assert list(own_factors[FRAME]) == [most.key] and own_factors[FRAME][most.key] >= 0
        assert priced.frame_ms() == own_factors[FRAME][most.key]
    assert cm.frame_ms() == 0.0  # not the board's: measured on one model, it prices that one
    # a later profile without the model keeps what was measured on it
    profile_local(target, 0.2, calibration=CALIBRATION)
    assert load_factors(Path(prof.path))[MODELS][own.sha256] == own_factors


def test_a_tflite_model_runs_whole_through_litert_for_its_own_factors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """LiteRT is otherwise priced by onnxruntime's factors: a TFLite model's own profile
    measures LiteRT itself, for the model and for the board."""
    from edgedeploy.importers import load_model
    from edgedeploy.runtime.vocab import LITERT
    from edgedeploy.testing.tflite_builder import TFLiteBuilder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    b = TFLiteBuilder("tiny")
    x = b.input("image", (1, 32, 32, 3))
    y = b.conv2d(x, rng.standard_normal((8, 3, 3, 3)).astype(np.float32), padding="SAME",
                 activation="relu")
    y = b.conv2d(y, rng.standard_normal((8, 3, 3, 8)).astype(np.float32), padding="SAME")
    b.output(b.mean(y, (1, 2)))
    path = tmp_path / "tiny.tflite"
    b.save(path)
    graph = load_model(path)
    own = OwnModel.of(path, graph)
    assert own is not None and own.engine == LITERT
    target = load_target("local")
    out = profile_local(target, 0.2, calibration=CALIBRATION, own=own)
    mine = out["segment_factors"][MODELS][own.sha256]
    configs = {c.key for c in CostModel.for_target(target).configs if not c.is_gpu}
    assert set(mine[LITERT]) == configs and ONNXRUNTIME not in mine
    assert set(out["segment_factors"][LITERT]) == configs  # the board's LiteRT, measured
    priced = CostModel.for_target(target).for_model(own.sha256)
    for key, value in mine[LITERT].items():
        assert priced.segment_factor(LITERT, CoreConfig.parse(key)) == value
    # timed on inputs in the file's layout, as a stage is fed them
    import json

    from edgedeploy.costmodel.segments import factors_path

    stored = json.loads(factors_path(Path(out["profile"])).read_text())["runs"]
    runs = [r for r in stored if r.get("sha256") == own.sha256]
    assert len(runs) == len(configs)
    assert all(r[LITERT][0] > 0 for r in runs)
    # where the cores compute fp16, the model is timed computing fp16 too, over its fp32 time,
    # and an fp16 plan's LiteRT layers are priced by that; elsewhere by the prior
    from edgedeploy.costmodel.model import HALF_PRIOR
    from edgedeploy.runtime.vocab import FP16

    if any(c.fp16_arithmetic for c in target.clusters):
        assert set(mine[FP16]) == configs
        assert all(r[FP16][0] > 0 and r[FP16][1] == r[LITERT][0] for r in runs)
        for key, value in mine[FP16].items():
            assert priced.half_factor(CoreConfig.parse(key)) == value
    else:
        assert FP16 not in mine and all(FP16 not in r for r in runs)
        assert priced.half_factor(next(iter(priced.configs))) == HALF_PRIOR


def test_a_model_without_a_recorded_digest_or_format_is_no_own_model(tmp_path: Path):
    graph = import_onnx(zoo.build("squeezenet1_1", size=32))
    graph.source["format"] = "caffe"
    assert OwnModel.of(tmp_path / "m.caffemodel", graph) is None
    graph.source.update(format="onnx", sha256="")
    assert OwnModel.of(tmp_path / "m.onnx", graph) is None


def test_profile_with_a_model_on_this_host_runs_it_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_batches: None):
    """``edgedeploy profile --target local --model M`` (it took the model's shapes on a twin
    only, and ignored it here)."""
    from edgedeploy import api

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    out = api.profile("local", budget_s=0.2, model=path, calibration=CALIBRATION)
    sha = import_onnx(path).source["sha256"]
    assert set(out["segment_factors"][MODELS]) == {sha}


def test_batch_speed_ups_are_the_whole_models_time_over_its_per_frame_time_batched():
    from edgedeploy.costmodel.segments import BATCH, batch_speedup, batch_speedups

    runs = [{"config": "cpu:1", ONNXRUNTIME: [10.0, 9.0], BATCH: {"2": 8.0, "4": 5.0}},
            {"config": "cpu:2", ONNXRUNTIME: [6.0, 5.0]}]  # not timed batched
    table = batch_speedups(runs)
    assert table == {BATCH: {"cpu:1": {"2": 1.25, "4": 2.0}}}
    assert batch_speedups(runs[1:]) == {}
    assert batch_speedup(table, CoreConfig("cpu", 1), 4) == 2.0
    assert batch_speedup(table, CoreConfig("cpu", 2), 4) is None


def test_a_batched_variant_is_priced_by_the_measured_speed_up_of_its_stage():
    from edgedeploy.benchmarks.decide import _batched_prediction
    from edgedeploy.costmodel.segments import BATCH, REPLICA_BATCH
    from edgedeploy.schemas.plan import ParetoStage, Predicted

    base = Predicted(throughput_fps=100.0, latency_ms=20.0, energy_mj=50.0, power_w=5.0,
                     period_ms=10.0)
    stage = ParetoStage(start=0, stop=3, cluster="cpu", cores=1, replicas=1, cpus=[0],
                        choices=[ONNXRUNTIME] * 3, batch=4)
    got = _batched_prediction(base, [stage], 4, {BATCH: {"cpu:1": {"4": 1.6}}})
    assert got.throughput_fps == pytest.approx(160.0)
    assert got.period_ms == pytest.approx(10.0 / 1.6)
    assert got.energy_mj == pytest.approx(50.0 / 1.6)
    assert got.latency_ms == pytest.approx(20.0 * 4 / 1.6)  # a frame waits for its call
    assert got.power_w == base.power_w
    # unmeasured: per frame as unbatched, but a frame still waits for its call
    unmeasured = base.model_copy(update={"latency_ms": 20.0 * 4})
    assert _batched_prediction(base, [stage], 4, {BATCH: {"cpu:1": {"2": 1.6}}}) == unmeasured
    assert _batched_prediction(base, [stage], 4, {}) == unmeasured
    # measured on one session alone: replicas of it take its slow-down, not its gain
    replicated = stage.model_copy(update={"replicas": 2, "cpus": [0, 1]})
    assert _batched_prediction(base, [replicated], 4,
                               {BATCH: {"cpu:1": {"4": 1.6}}}) == unmeasured
    slower = _batched_prediction(base, [replicated], 4, {BATCH: {"cpu:1": {"4": 0.8}}})
    assert slower.throughput_fps == pytest.approx(base.throughput_fps * 0.8)
    assert slower.latency_ms == pytest.approx(base.latency_ms * 4 / 0.8)
    # ... unless the replicas' own gain at that batch was measured: then that, either way
    for gain in (1.3, 0.9):
        own = {BATCH: {"cpu:1": {"4": 1.6}}, REPLICA_BATCH: {"cpu": {"4": gain}}}
        got = _batched_prediction(base, [replicated], 4, own)
        assert got.throughput_fps == pytest.approx(base.throughput_fps * gain)
        assert got.latency_ms == pytest.approx(base.latency_ms * 4 / gain)
    assert _batched_prediction(base, [replicated], 2, {REPLICA_BATCH: {"cpu": {"4": 1.3}}}
                               ) == base.model_copy(update={"latency_ms": 20.0 * 2})


def _own_squeezenet(tmp_path: Path) -> tuple[_Loaded, Target, list[CoreConfig]]:
    """A 32 px SqueezeNet as the model a profile is taken for, this host, and its CPU
    configurations; skips where no cluster has two cores (no replicas to time)."""
    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    graph = import_onnx(path)
    target = load_target("local")
    configs = [c for c in CostModel(target).configs if not c.is_gpu]
    if not any(c.cores > 1 for c in configs):
        pytest.skip("needs a cluster of two cores")
    return _Loaded("sq", None, path, graph, str(graph.source["sha256"])), target, configs


def test_replicas_are_timed_batched_against_unbatched_where_one_core_gained_from_a_batch(
        tmp_path: Path):
    """The own model's replicas at each batch over the same replicas at one frame a call (their
    measured speed-up), on every cluster of more than one core, where (and only where) one
    session on one of its cores ran that batch 5 % faster per frame, or at every batch where
    the replicas' windows are short; the gain is stored with the model's factors."""
    from edgedeploy.costmodel.segments import (
        BATCH,
        REPLICA_BATCH,
        batched_file,
        for_model,
        measure_replica_batches,
        replica_batch_gain,
    )
    from edgedeploy.runtime.stages import BATCH_SIZES

    m, target, configs = _own_squeezenet(tmp_path)
    b, small = str(max(BATCH_SIZES)), str(min(BATCH_SIZES))

    def runs(per_frame_ms: float) -> list[dict]:  # the smaller batch gained within noise
        return [{"config": c.key, "sha256": m.sha256, ONNXRUNTIME: [1.0, 1.0],
                 BATCH: {b: per_frame_ms, small: 0.99}} for c in configs if c.cores == 1]

    clusters = {c.cluster for c in configs if c.cores > 1}
    speedups = {cl: {str(c.cores): 1.8 for c in configs if c.cluster == cl} for cl in clusters}
    cpus = lambda c: c.cpus(target)  # noqa: E731
    batched = batched_file(m, tmp_path)
    assert batched is not None
    gained = measure_replica_batches(configs, cpus, m, runs(0.5), speedups, batched,
                                     every_short=False)
    assert set(gained) == clusters
    assert all(set(t) == {b} and 0.05 < t[b] < 20.0 for t in gained.values())
    assert measure_replica_batches(configs, cpus, m, runs(1.0), speedups, batched,
                                   every_short=False) == {}
    # a frame of 1 ms, whose replicas' windows are short: every batch, gained or not
    every = measure_replica_batches(configs, cpus, m, runs(1.0), speedups, batched)
    assert {cl: set(t) for cl, t in every.items()} == {cl: {b, small} for cl in clusters}
    assert measure_replica_batches(configs, cpus, m, runs(0.5), {}, batched) == {}  # none
    assert measure_replica_batches(configs, cpus, m, runs(0.5), speedups, None) == {}
    profile_file = tmp_path / "p.json"
    save_factors(profile_file, {MODELS: {m.sha256: {RULE: OWN_RULE, REPLICA_BATCH: gained}}}, [])
    mine = for_model(load_factors(profile_file), m.sha256)
    for cluster in clusters:
        assert replica_batch_gain(mine, cluster, int(b)) == pytest.approx(gained[cluster][b])
        assert replica_batch_gain(mine, cluster, 2) is None


def test_a_model_that_mixes_its_frames_is_not_timed_batched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from onnx import TensorProto, helper, numpy_helper, save

    from edgedeploy.costmodel.segments import BATCH

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    graph = helper.make_graph(  # scores normalised over the batch axis
        [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Softmax", ["c"], ["output"], axis=0)], "mixing",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")])
    path = tmp_path / "mixing.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    own = OwnModel.of(path, import_onnx(path))
    assert own is not None
    out = profile_local(load_target("local"), 0.2, calibration=CALIBRATION,
                        own=own)
    mine = out["segment_factors"][MODELS][own.sha256]
    assert mine[ONNXRUNTIME] and BATCH not in mine


def test_a_replica_run_lasts_long_enough_to_read_a_fast_models_speed_up():
    from edgedeploy.runtime.model_timing import (
        REPLICA_FRAMES,
        REPLICA_MAX_FRAMES,
        REPLICA_MIN_FRAMES_EACH,
        REPLICA_WINDOW_S,
        replica_frames,
        short_replica_windows,
    )

    fast = replica_frames(1.0, 2)  # 1 ms a frame on one core: 2,000 fps on two
    assert fast / 2000.0 == pytest.approx(REPLICA_WINDOW_S, rel=0.01)
    assert short_replica_windows(1.0, 2)
    # a ResNet-50 (100 ms a frame): about the window's length, not 40 frames' 2 s
    r50 = replica_frames(100.0, 2)
    assert r50 < REPLICA_FRAMES and r50 / 20.0 == pytest.approx(REPLICA_WINDOW_S, rel=0.25)
    assert not short_replica_windows(100.0, 2)
    # a slow model: a few frames a replica, however long they take
    assert replica_frames(500.0, 2) == replica_frames(5000.0, 2) == 2 * REPLICA_MIN_FRAMES_EACH
    assert replica_frames(0.01, 16) == REPLICA_MAX_FRAMES
    assert replica_frames(0.0, 2) == REPLICA_FRAMES  # never measured alone
    assert not short_replica_windows(0.0, 2)


def test_replica_windows_are_one_stream_each_window_scored_apart():
    """A profile's replica windows run one after another in one stream, one warm-up before the
    first and one tail behind the last (not a warm-up and a tail a window), each window scored
    over its own whole periods, and the median of them is the answer."""
    import numpy as np

    from edgedeploy.runtime.model_timing import median_window_fps

    class Stream:  # two replicas, four frames a call: completions in bursts of eight
        period, tail = 8, 16

        def __init__(self) -> None:
            self.fed: list[int] = []

        def stream(self, frames, n):  # type: ignore[no-untyped-def]
            self.fed.append(n)
            # 10 ms a period for the warm-up and the first window, then 40 ms, then 20 ms
            per = [0.01] * 4 + [0.04] * 3 + [0.02] * (n // 8 - 7)
            return np.repeat(np.cumsum(per), 8)[:n] + np.tile(np.arange(8) * 1e-5, n // 8)

    pipe = Stream()
    fps = median_window_fps(pipe, [np.zeros(1)], frames=20, warmup=8, windows=3)
    assert pipe.fed == [8 + 3 * 24 + 16]  # one stream; 20 frames are three whole periods
    assert fps == pytest.approx(8 / 0.02, rel=0.01)  # windows of 800, 200 and 400 fps


def _lrn_model(path: Path, channels: int = 16, size: int = 24) -> Path:
    """Conv -> LRN -> LRN (the same kind twice) -> Conv: LRN is an operator the IR has no
    descriptor for, so the planner's prior guesses its time."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1]),
         helper.make_node("LRN", ["a"], ["b"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
         helper.make_node("LRN", ["b"], ["c"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
         helper.make_node("Conv", ["c", "w2"], ["output"], pads=[1, 1, 1, 1])], "lrn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                       [1, channels, size, size])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_models_opaque_layers_are_timed_alone_and_priced_as_they_ran(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_batches: None):
    from edgedeploy.costmodel.segments import LAYERS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = _lrn_model(tmp_path / "lrn.onnx")
    graph = import_onnx(path)
    opaque = [layer.name for layer in graph.layers if layer.op == ir.OPAQUE]
    assert len(opaque) == 2
    own = OwnModel.of(path, graph)
    assert own is not None
    target = load_target("local")
    out = profile_local(target, 0.2, calibration=CALIBRATION, own=own)
    timed = out["segment_factors"][MODELS][own.sha256][LAYERS]
    cm = CostModel.for_target(target)
    configs = [c for c in cm.configs if not c.is_gpu]
    assert set(timed) == set(opaque)  # both LRNs, of one kind: timed once
    assert timed[opaque[0]] == timed[opaque[1]]
    assert all(set(t) == {c.key for c in configs} and all(v > 0 for v in t.values())
               for t in timed.values())
    assert LAYERS not in out["segment_factors"]  # one model's, never the board's
    # the planner prices the opaque layers at their timed ms, times the model's factor
    priced = cm.for_model(own.sha256)

    def lrn_ms(problem) -> dict[str, float]:  # type: ignore[no-untyped-def]
        spec = next(s for s in problem.layers if s.name == opaque[0])
        k = spec.options.index(ONNXRUNTIME)
        return {f"{c.cluster}:{c.cores}": float(spec.ms[k, j])
                for j, c in enumerate(problem.configs)}

    got = lrn_ms(build_problem(graph, target, cm))
    assert got == pytest.approx({c.key: timed[opaque[0]][c.key]
                                 * priced.segment_factor(ONNXRUNTIME, c) for c in configs})
    # without the model's profile the prior prices it
    cm.segment_factors = {k: v for k, v in cm.segment_factors.items() if k != MODELS}
    assert lrn_ms(build_problem(graph, target, cm)) != pytest.approx(got)


def test_where_a_model_has_more_opaque_kinds_than_are_timed_the_heaviest_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from onnx import TensorProto, helper, numpy_helper, save

    from edgedeploy.costmodel import segments

    rng = np.random.default_rng(0)
    w = {f"w{i}": numpy_helper.from_array(
        rng.standard_normal(s).astype(np.float32) * 0.1, f"w{i}")
         for i, s in enumerate([(4, 3, 3, 3), (32, 4, 3, 3), (4, 32, 3, 3)])}
    # a light LRN (4 channels), a heavy one (32 channels), then the light kind again
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w0"], ["a"], pads=[1, 1, 1, 1]),
         helper.make_node("LRN", ["a"], ["b"], size=3),
         helper.make_node("Conv", ["b", "w1"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("LRN", ["c"], ["d"], size=3),
         helper.make_node("Conv", ["d", "w2"], ["e"], pads=[1, 1, 1, 1]),
         helper.make_node("LRN", ["e"], ["output"], size=3)], "lrns",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 16, 16])],
        list(w.values()))
    path = tmp_path / "lrns.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    g = import_onnx(path)
    lrn = [layer for layer in g.layers if layer.op == ir.OPAQUE]
    work = [segments.opaque_work(g, layer) for layer in lrn]
    assert work == [4 * 16 * 16, 32 * 16 * 16, 4 * 16 * 16]  # no weights: its outputs
    loaded = segments._Loaded("lrns", None, path, g, "0" * 64)
    monkeypatch.setattr(segments, "MAX_TIMED_LAYERS", 1)
    (only,) = segments.opaque_layers(loaded)
    assert only.names == (lrn[1].name,)  # the heavy one, though it comes second
    monkeypatch.setattr(segments, "MAX_TIMED_LAYERS", 2)
    assert [o.names for o in segments.opaque_layers(loaded)] == [  # in the model's order
        (lrn[0].name, lrn[2].name), (lrn[1].name,)]


def test_the_whole_models_factor_counts_a_timed_layer_at_its_time():
    from edgedeploy.costmodel.segments import _predicted_sum

    graph = import_onnx(zoo.build("squeezenet1_1", size=32))
    cm = CostModel(load_target("local"))
    whole = {layer.name: ONNXRUNTIME for layer in graph.layers}
    config = CoreConfig("cpu", 1)
    first = graph.layers[0].name
    base = _predicted_sum(cm, graph, config, whole)
    alone = _predicted_sum(cm, graph, config, {first: ONNXRUNTIME}
                           | {n: "none" for n in list(whole)[1:]})
    assert _predicted_sum(cm, graph, config, whole, {first: 1000.0}) == pytest.approx(
        base - alone + 1000.0)


def test_a_model_calibrated_while_a_profile_measures_keeps_its_factors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_batches: None):
    """A plan times its model whole (``own_model_factors``) while a profile of the same host is
    still measuring: the profile writes its factors back with that model's, not over them."""
    from edgedeploy.costmodel import segments
    from edgedeploy.costmodel.profile import profile_path
    from edgedeploy.costmodel.profiling import own_model_factors, segment_factors

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    target = load_target("local")
    # the host's profile (its layers: the whole-model runs that matter are the two below)
    profile_local(target, 0.2, calibration=[])
    path = profile_path(target)
    other = zoo.export("squeezenet1_1", tmp_path / "other.onnx", size=40)
    own = OwnModel.of(other, import_onnx(other))
    assert own is not None
    measure, meanwhile = segments.measure_runs, []

    def measuring(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = measure(*args, **kwargs)
        if not meanwhile:  # another plan finishes while this profile still measures
            meanwhile.append(own.sha256)
            own_model_factors(target, path, own)
        return out

    monkeypatch.setattr(segments, "measure_runs", measuring)
    segment_factors(target, path, models=[("squeezenet1_1", 32)])
    assert meanwhile and own.sha256 in load_factors(path)[MODELS]


def test_the_own_models_replica_speed_up_is_its_median_window(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    """One fast window does not price the model's replicas, nor one slow one: its speed-up is
    the median of its windows, the typical window that measure-to-decide's mean reads (the
    fastest of two priced a model's replicas 17-30 % above what they measured on a noisy
    host). The windows here are given, in the order a host's noise might give them."""

    from edgedeploy.costmodel.segments import measure_replicas
    from edgedeploy.runtime import pipeline
    from edgedeploy.runtime.model_timing import OWN_REPLICA_WINDOWS, REPLICA_WARMUP

    assert OWN_REPLICA_WINDOWS == 3
    m, target, configs = _own_squeezenet(tmp_path)
    windows = iter([400.0, 100.0, 250.0] * len(configs))

    class Windows:
        """The pipeline executor reduced to a stream whose windows after the warm-up complete
        frames at the rates given, one window after another."""

        period, tail = 1, 0

        def __init__(self, specs: object) -> None:
            pass

        def __enter__(self) -> Windows:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def stream(self, frames: object, n: int) -> np.ndarray:
            span = (n - REPLICA_WARMUP) // OWN_REPLICA_WINDOWS
            rates = [next(windows) for _ in range(OWN_REPLICA_WINDOWS)]
            return np.cumsum([1e-3] * REPLICA_WARMUP + [1.0 / r for r in rates
                                                         for _ in range(span)])

    monkeypatch.setattr(pipeline, "Pipeline", Windows)
    runs = [{"model": "sq", "size": None, "config": c.key, ONNXRUNTIME: [2.0, 2.0]}
            for c in configs if c.cores == 1]
    _, own = measure_replicas(configs, lambda c: c.cpus(target), [m], runs)
    clusters = {c.cluster for c in configs if c.cores > 1}
    assert set(own) == clusters
    for table in own.values():  # 250 fps at 2 ms a frame on one core
        assert table and all(s == pytest.approx(0.5) for s in table.values())


def test_a_long_whole_model_call_is_timed_once_on_each_configuration(monkeypatch):
    """The second pass in the other order outvotes a neighbour's burst over a short timing; a
    call of LONG_CALL_MS or more is not timed again (VGG-16's second pass took 14.5 s)."""
    from edgedeploy.costmodel import segments

    timed: list[list[int]] = []

    def session_ms(path, feeds, cpus, engine="onnxruntime", **_kw):  # type: ignore[no-untyped-def]
        timed.append(list(cpus))
        return 1.0

    monkeypatch.setattr(segments, "session_ms", session_ms)
    monkeypatch.setattr(segments, "_file_feeds", lambda m, feeds: feeds)
    runs = [{"config": "cpu:1", "onnxruntime": [segments.LONG_CALL_MS, 0.0]},
            {"config": "cpu:2", "onnxruntime": [segments.LONG_CALL_MS / 2, 0.0]}]
    m = type("Loaded", (), {"path": "m.onnx", "engine": "onnxruntime"})()
    segments._second_pass(m, {}, runs, lambda c: list(range(c.cores)))
    assert timed == [[0, 1]]  # the short one only, timed again
    assert runs[1]["onnxruntime"][0] == 1.0 and runs[0]["onnxruntime"][0] == segments.LONG_CALL_MS


def test_a_total_budgets_layers_get_what_its_whole_runs_left_and_never_under_their_least():
    from edgedeploy.costmodel.profiling import _layer_budget

    said: list[str] = []
    assert _layer_budget(10.0, 30.0, 14.0, said.append) == 16.0
    assert _layer_budget(10.0, 30.0, 25.0, None) == 10.0  # a large model's runs took the rest
    assert said == ["profile: models run whole in 14 s; 16 s of layer samples"]


def test_an_int8_models_whole_run_is_priced_as_the_planner_prices_its_layers():
    """The planner prices an int8 layer at its float prediction times the board's int8 / float
    time; the sum a whole int8 model's factor is measured against scales the same, so the
    factor does not take the int8 speed-up in a second time."""
    import dataclasses

    from edgedeploy.costmodel.segments import _predicted_sum

    graph = import_onnx(zoo.build("squeezenet1_1", size=32))
    quantized = dataclasses.replace(graph, layers=[
        dataclasses.replace(layer, descriptor=dataclasses.replace(layer.descriptor,
                                                                  precision="int8"))
        for layer in graph.layers])
    cm = CostModel(load_target("local"))
    whole = {layer.name: ONNXRUNTIME for layer in graph.layers}
    config = CoreConfig("cpu", 1)
    fp32 = _predicted_sum(cm, graph, config, whole)
    assert _predicted_sum(cm, graph, config, whole, int8=0.4) == pytest.approx(fp32)
    assert _predicted_sum(cm, quantized, config, whole, int8=0.4) == pytest.approx(0.4 * fp32)
