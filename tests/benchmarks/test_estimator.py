"""Every system in a comparison is scored by one estimator: frames over the wall time of the
timed window, after the same warm-up, on the same frames; median over alternated rounds."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from edgedeploy import api, execute, zoo
from edgedeploy.benchmarks import systems
from edgedeploy.benchmarks.compare import MAX_WINDOW_S, MIN_WINDOW_S, BenchRequest, bench
from edgedeploy.benchmarks.estimator import (
    PROBE_MIN_S,
    PROBE_ONCE_S,
    Window,
    pooled_fps,
    probe_rate,
    summarise,
    throughput_fps,
    timed_round,
    window_of,
)
from edgedeploy.boards.detect import detect_local
from edgedeploy.runtime.affinity import available_cpus


def test_throughput_is_frames_over_the_window():
    assert throughput_fps(50, 0.5) == 100.0 and throughput_fps(3, 0.0) == 0.0
    s = summarise([Window(10, 0.1), Window(10, 0.2), Window(10, 0.05)])
    assert (s.median_fps, s.min_fps, s.max_fps, s.frames) == (100.0, 50.0, 200.0, 30)
    assert s.spread == 1.5


def test_rounds_pool_their_frames_over_their_wall_time_so_a_burst_window_cannot_run_away():
    rounds = [Window(40, 0.4), Window(40, 0.4), Window(40, 0.4)]
    assert pooled_fps(rounds) == pytest.approx(100.0) and pooled_fps([]) == 0.0
    # a window whose frames were collected in one burst, after the reader was held off the
    # CPU, lasts microseconds: a mean of rates would read 10,000x, pooled reads 1.5x at most
    burst = [*rounds[:2], Window(40, 4e-6)]
    assert float(np.mean([w.throughput_fps for w in burst])) > 1e6
    assert 100.0 < pooled_fps(burst) <= 150.0
    # a slow round counts in full
    assert pooled_fps([Window(40, 0.4), Window(40, 0.8)]) == pytest.approx(80 / 1.2)


def test_warm_up_runs_before_the_window_and_is_not_counted():
    calls: list[int] = []

    def process(n, frame):
        calls.append(n)
        done = []
        for k in range(n):
            frame(k)
            time.sleep(0.02 if k < 4 else 0.002)  # slow warm-up frames stay outside the window
            done.append(time.perf_counter())
        return done

    w = timed_round(process, lambda k: [np.zeros(1)], frames=10, warmup=4, tail=3)
    assert calls == [17] and w.frames == 10  # one stream: warm-up, window, tail
    assert 1 / 0.004 < w.throughput_fps <= 1 / 0.002  # 2 ms frames only, tail not waited for


def test_the_window_excludes_a_pipeline_fill_and_drain():
    """A 2-deep pipeline completes a frame every 10 ms once full; its first output comes after
    20 ms. Timed from empty to drained, short windows would charge it the fill every round."""
    def pipeline(n, frame):
        return [0.020 + 0.010 * k for k in range(n)]  # completion times of a full pipeline

    w = timed_round(pipeline, lambda k: [np.zeros(1)], frames=5, warmup=2, tail=2)
    assert abs(w.throughput_fps - 100.0) < 1e-9


def test_in_process_and_pipelined_systems_are_scored_by_the_same_function(tmp_path):
    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    graph = api.load_model(path)
    frames = [[np.random.default_rng(k).standard_normal(graph.inputs[0].shape)
               .astype(np.float32)] for k in range(4)]
    both = [systems.ort_default(path), systems.ort_replicas(graph, path)]
    try:
        for r in range(3):
            for system in both if r % 2 == 0 else both[::-1]:
                system.measure_round(12, 3, lambda k: frames[k % 4])
    finally:
        for system in both:
            system.close()
    for system in both:
        got = system.summary()
        assert got["throughput_fps"] == float(np.median([w.frames / w.wall_s
                                                         for w in system.windows]))
        # whole completion groups: about the frames asked for, never a partial group
        assert len(got["rounds_fps"]) == 3 and got["frames"] >= 18
        assert got["throughput_fps_min"] <= got["throughput_fps"] <= got["throughput_fps_max"]


def test_bench_reports_medians_spread_and_the_estimator(tmp_path):
    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    answer = bench(path, BenchRequest(frames=30, rounds=3, measure_budget_s=0))
    names = [r["system"] for r in answer["results"]]
    assert names == ["edgedeploy", "ort_default", "ort_replicas"]
    # rounds come in pairs, one in each order: 3 asked, 4 run (the probe is no round) ...
    assert all(len(r["rounds_fps"]) == 4 for r in answer["results"])
    # ... of the same frames for every system, windows of at least MIN_WINDOW_S for the
    # fastest (so more frames than the 30 asked, at the rates of a 32 px model), unless the
    # slowest would then run for longer than MAX_WINDOW_S
    counts = [r["frames"] for r in answer["results"]]  # a window edge may end a group later
    assert max(counts) - min(counts) <= 0.01 * min(counts) and min(counts) > 30
    seconds = [r["frames"] / 4 / r["throughput_fps"] for r in answer["results"]]
    assert min(seconds) > 0.5 * MIN_WINDOW_S or max(seconds) > 0.5 * MAX_WINDOW_S
    assert "median over rounds" in answer["estimator"]
    host = detect_local()  # which machine measured, so a results file says so
    assert answer["host"]["fingerprint"] == host.fingerprint
    assert [c["simd"] for c in answer["host"]["clusters"]] == [c.simd for c in host.clusters]
    ours = answer["results"][0]["rounds_fps"]
    base = next(r for r in answer["results"] if r["system"] == answer["best_baseline"])
    ratios = [a / b for a, b in zip(ours, base["rounds_fps"], strict=True)]
    assert answer["ratio_vs_best_baseline_worst_round"] == min(ratios)
    pairs = [(ratios[0] * ratios[1]) ** 0.5, (ratios[2] * ratios[3]) ** 0.5]
    assert abs(answer["ratio_vs_best_baseline_worst_pair"] - min(pairs)) < 1e-12
    best = max(answer["results"][1:], key=lambda r: r["throughput_fps"])
    assert answer["best_baseline"] == best["system"]
    assert abs(answer["ratio_vs_best_baseline"]
               - answer["results"][0]["throughput_fps"] / best["throughput_fps"]) < 1e-12
    # the one-thread replicas (threads of the caller, as a user writes them) are the plan's
    # own configuration exactly when the plan is one inline stage of one-core replicas on
    # every core with every layer in onnxruntime
    (stage,) = answer["plan"]["stages"] if len(answer["plan"]["stages"]) == 1 else [None]
    replicas = next(r for r in answer["results"] if r["system"] == "ort_replicas")
    own = (stage is not None and stage["cores"] == 1 and stage["batch"] == 1
           and stage["replicas"] == len(stage["cpus"]) == len(available_cpus())
           and set(stage["engines"]) == {"onnxruntime"} and stage.get("inline", False))
    assert replicas["same_configuration_as_plan"] is own
    assert answer["plan_is_best_baseline"] is (own and best["system"] == "ort_replicas")


def test_a_model_with_an_input_no_node_reads_benches(tmp_path):
    """onnxruntime wants every declared input fed; the plan's first stage takes only those the
    model reads: each system gets its own from the same frames."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32))
    model.graph.input.append(helper.make_tensor_value_info("unused", TensorProto.INT64, [4]))
    path = tmp_path / "sq_unused.onnx"
    onnx.save(model, path)
    answer = bench(path, BenchRequest(frames=10, rounds=1, measure_budget_s=0))
    assert [r["system"] for r in answer["results"]] == ["edgedeploy", "ort_default",
                                                         "ort_replicas"]
    assert all(r["throughput_fps"] > 0 for r in answer["results"])


def test_systems_with_the_same_stages_and_choices_have_one_configuration(tmp_path):
    from edgedeploy.benchmarks.systems import configuration
    from edgedeploy.runtime.stages import plan_stage_io

    graph = api.load_model(zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32))
    (io,) = plan_stage_io(graph, [])
    every = {layer.name: "onnxruntime" for layer in graph.layers}

    def key(name: str, replicas: int, choices: dict[str, str], batch: int = 1) -> str:
        stage = execute.stage_from_io(io=io, cpus=(0, 1), replicas=replicas, name=name)
        return configuration(graph, [replace(stage, batch=batch)], choices)

    assert key("plan", 2, every) == key("onnxruntime", 2, dict(every))  # names aside
    assert key("plan", 2, every) != key("plan", 1, every)
    assert key("plan", 2, every) != key("plan", 2, every, batch=4)
    first = graph.layers[0].name
    assert key("plan", 2, every) != key("plan", 2, {**every, first: "im2col_gemm/nchw"})


def test_a_system_completing_frames_in_groups_is_timed_over_whole_periods():
    """Two replicas batching four frames each hand back 8 frames every 175 ms (45.7 fps), in
    bursts a few milliseconds apart (as measured for a ResNet-50: 1 + 7, 4 + 4): a window edge
    inside one burst and the other in another would count frames that belong to no period."""
    period_s, split = 0.175, [0.0, 0.0046, 0.0046, 0.0046, 0.0046, 0.0046, 0.0046, 0.0046]
    for shift in range(8):  # where the pattern starts in the stream
        offsets = np.roll(np.array(split), shift)
        done = np.sort((np.arange(14)[:, None] * period_s + offsets[None, :]).ravel())
        for warmup in range(1, 9):
            for frames in (3, 15, 16, 20, 33):
                w = window_of(done, warmup, frames, period=8)
                assert w.frames % 8 == 0 and w.frames >= frames
                assert abs(w.throughput_fps - 8 / period_s) < 1e-6, (shift, warmup, frames, w)
    steady = np.arange(50) * 0.01  # one frame every 10 ms: the window is exactly as asked
    w = window_of(steady, 5, 20)
    assert w.frames == 20 and abs(w.throughput_fps - 100.0) < 1e-6


def test_timed_round_streams_whole_periods_and_the_tail():
    calls: list[int] = []

    def process(n, frame):
        calls.append(n)
        return np.repeat(np.arange(n // 4 + 1) * 0.1, 4)[:n]  # 4 frames at once every 100 ms

    w = timed_round(process, lambda k: [np.zeros(1)], frames=10, warmup=3, tail=8, period=4)
    assert calls == [3 + 12 + 8] and w.frames == 12 and abs(w.throughput_fps - 40.0) < 1e-9


def test_a_pipelined_system_knows_its_period(tmp_path):
    """The replicas x micro-batch of its stages (their least common multiple)."""
    from edgedeploy import execute
    from edgedeploy.runtime.stages import plan_stage_io

    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    graph = api.load_model(path)
    io = plan_stage_io(graph, [])[0]
    stage = execute.stage_from_io(io, (0,), 2, "s", engine="onnxruntime", batch=2)
    system = systems.pipelined("x", "x", graph, [stage], {layer.name: "onnxruntime"
                                                          for layer in graph.layers}, path)
    try:
        assert system.period == 4
        frames = [np.zeros(graph.inputs[0].shape, np.float32)]
        w = system.measure_round(5, 2, lambda k: frames)
        assert w.frames == 12  # whole periods, three at least
    finally:
        system.close()


def test_a_probe_keeps_the_faster_of_two_long_enough_windows():
    """The first window long enough to size by may carry start-up costs or a burst from
    elsewhere; the probe times it again and keeps the faster."""
    calls: list[int] = []

    def run(n: int) -> Window:  # 1 ms a frame, but the first long window pays 0.2 s more
        calls.append(n)
        slow = 0.2 if n * 0.001 >= PROBE_MIN_S and calls.count(n) == 1 else 0.0
        return Window(n, n * 0.001 + slow)

    assert probe_rate(run, 2) == 1000.0
    assert calls == [2, 8, 32, 128, 128]  # grown fourfold until long enough, then once more


def test_a_probe_window_long_enough_to_be_warm_is_not_timed_again():
    """A model slow enough that its first window lasts PROBE_ONCE_S is timed once: a second
    window of a ResNet-50's batched replicas costs seconds and sizes nothing better."""
    calls: list[int] = []

    def run(n: int) -> Window:  # 0.2 s a frame: the first window is long
        calls.append(n)
        return Window(n, n * 0.2)

    assert PROBE_ONCE_S <= 0.4
    assert abs(probe_rate(run, 2) - 5.0) < 1e-9
    assert calls == [2]


def test_a_latency_plan_is_compared_by_latency_too(tmp_path, capsys):
    """A manifest that asks for latency is told how one frame's time compares, beside the
    throughput every bench reports."""
    import json

    from edgedeploy.cli.main import main

    zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    (tmp_path / "m.yaml").write_text("name: sq\nmodel: sq.onnx\nobjective: latency\n"
                                     "targets:\n  local: {}\n")
    out = tmp_path / "bench.json"
    assert main(["bench", str(tmp_path / "m.yaml"), "--frames", "20", "--rounds", "1",
                 "--measure-budget-s", "0", "-o", str(out)]) == 0
    answer = json.loads(out.read_text())
    assert answer["objective"] == "latency"
    baselines = [r for r in answer["results"] if r["system"] != "edgedeploy"]
    quickest = min(baselines, key=lambda r: r["latency_ms_p50"])
    assert answer["best_latency_baseline"] == quickest["system"]
    ours = answer["results"][0]["latency_ms_p50"]
    assert abs(answer["latency_ratio_vs_best_baseline"] * ours
               - quickest["latency_ms_p50"]) < 1e-9
    assert f"best baseline by latency ({quickest['system']})" in capsys.readouterr().out
