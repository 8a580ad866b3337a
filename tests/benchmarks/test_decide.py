"""Measure to decide: `plan` times the plan, its next best predicted plans and the runnable
baselines on a reachable target and writes the measured winner; --no-measure says so."""

from __future__ import annotations

import hashlib
import itertools
import json
import statistics
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy import api, zoo
from edgedeploy.benchmarks.decide import (
    CONFIRM_MARGIN,
    CONFIRM_ROUNDS,
    MEASURE_SHARE,
    MIN_ROUNDS,
    RACE_MARGIN,
    WIN_MARGIN,
    WIN_PAIR_SHARE,
    pairs_won,
    shortlist,
)
from edgedeploy.cli.main import main
from edgedeploy.costmodel.segments import CALIBRATION_MODELS
from edgedeploy.schemas.plan import load_plan

MANIFEST = """name: sq
model:
  path: sq.onnx
targets:
  local: {{}}
  twin: {{board: rpi4, transport: sim}}
  pi: {{board: rpi4, host: 127.0.0.1, port: 9}}
measure: {{budget_s: {budget}, quick_profile_s: {profile}}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    # a second of measuring: the tests check what a decision holds, not its figures
    (tmp_path / "m.yaml").write_text(MANIFEST.format(budget=1, profile=0))
    return tmp_path / "m.yaml"


def _winner_checks(plan) -> None:
    d = plan.decision
    assert d.measured and d.winner in {c.name for c in d.contenders}
    running = raced(d.contenders)
    best = max(running, key=lambda c: c.measured_fps)
    base = max((c for c in running if c.baseline), key=lambda c: c.measured_fps)
    # the fastest wins, unless it is no baseline and beats the best baseline by less than the
    # margin or in fewer than WIN_PAIR_SHARE of the paired rounds: then the baseline is kept
    steady = _share(best.rounds_fps, base.rounds_fps) >= WIN_PAIR_SHARE
    clears = best.measured_fps > base.measured_fps * (1 + WIN_MARGIN)
    chosen = best.baseline
    # a contender faster on average than the best baseline by the margin was timed again
    # against it, and only those two were: where its pairs held too, it is kept if it stayed
    # faster by the confirmation's margin; where they split, only if the fresh rounds clear
    # the margin on average and in the pairs
    again = {c.name for c in d.contenders if c.confirm_fps}
    if not best.baseline and clears:
        assert again == {best.name, base.name}
        assert len(best.confirm_fps) == len(base.confirm_fps) == CONFIRM_ROUNDS
        mine, theirs = pooled(best.confirm_fps), pooled(base.confirm_fps)
        chosen = (mine > theirs * (1 + CONFIRM_MARGIN) if steady else
                  mine > theirs * (1 + WIN_MARGIN)
                  and _share(best.confirm_fps, base.confirm_fps) >= WIN_PAIR_SHARE)
    else:
        assert not again
    want = best if chosen else base
    assert d.winner == want.name and plan.measured["throughput_fps"] == want.measured_fps
    names = {c.name for c in d.contenders}
    assert "plan" in names


def pooled(rounds_fps: list[float]) -> float:
    """A contender's rate over rounds of equal frames, as decide scores them: frames over the
    rounds' wall time together, the harmonic mean of their rates, the slowest round left out
    of four or more."""
    if len(rounds_fps) >= 4:
        rounds_fps = sorted(rounds_fps)[1:]
    return statistics.harmonic_mean(rounds_fps)


def raced(contenders: list) -> list:  # type: ignore[type-arg]
    """The contenders that ran every round, checked: the same rounds for all, in pairs, one in
    each order, but for those that left the race after the first pair (the budget could not
    hold every one's rounds), each then over RACE_MARGIN behind the fastest, never the fastest
    baseline."""
    n = max(len(c.rounds_fps) for c in contenders)
    first = {c.name: pooled(c.rounds_fps[:2]) for c in contenders}
    fastest = max(first.values())
    running = [c for c in contenders if len(c.rounds_fps) == n]
    if n < MIN_ROUNDS:  # the first pair left one alone in the race: the fastest, a baseline
        assert n == 2
        running = [max(contenders, key=lambda c: first[c.name])]
        assert running[0].baseline or not any(c.baseline for c in contenders)
    assert n % 2 == 0
    left = [c for c in contenders if c not in running]
    base = max((first[c.name] for c in contenders if c.baseline), default=None)
    for c in left:
        assert len(c.rounds_fps) == 2 and first[c.name] < (1 - RACE_MARGIN) * fastest * 1.001
        assert not c.confirm_fps and first[c.name] != base
    return running


def _share(a: list[float], b: list[float]) -> float:
    """The share of paired rounds ``a`` won over ``b``."""
    won = [a[i] + a[i + 1] > b[i] + b[i + 1] for i in range(0, min(len(a), len(b)) // 2 * 2, 2)]
    return sum(won) / len(won)


def test_plan_on_this_host_measures_the_shortlist_and_writes_the_winner(project):
    result = api.plan(project, "local")[0]
    plan = load_plan(result.plan_file)
    _winner_checks(plan)
    assert not plan.decision.simulated and plan.planner["measured"] is True
    winner = next(c for c in plan.decision.contenders if c.name == plan.decision.winner)
    assert plan.predicted == winner.predicted  # the written plan is the winner
    assert api.plan_check(project, "local")[0].stale == []  # inputs unchanged: up to date


def test_plan_on_a_twin_measures_there_and_says_simulated(project):
    plan = load_plan(api.plan(project, "twin")[0].plan_file)
    _winner_checks(plan)
    assert plan.decision.simulated and plan.measured["simulated"] is True
    # every runnable baseline (whole model through one engine) was a contender
    runnable = {n for n, b in plan.baselines.items() if b.stages}
    own = {json.dumps([s.model_dump() for s in plan.baselines[n].stages]) for n in runnable}
    assert runnable and own  # onnxruntime threaded and replicated exist for an ONNX model


def test_no_measure_plans_from_the_model_and_the_lockfile_says_so(project, capsys):
    assert main(["plan", str(project), "--target", "local", "--no-measure"]) == 0
    plan = load_plan(project.parent / "sq.local.plan.json")
    assert plan.decision.measured is False and "cost model alone" in plan.decision.reason
    assert "not measured" in capsys.readouterr().err
    assert main(["plan", str(project), "--target", "local", "--check"]) == 0


def test_an_ssh_target_is_not_measured_from_here_and_says_where_it_will_be(project):
    plan = load_plan(api.plan(project, "pi")[0].plan_file)
    assert plan.decision.measured is False and "push" in plan.decision.reason


def test_the_shortlist_holds_the_plan_the_best_pareto_points_and_runnable_baselines(project):
    plan = load_plan(api.plan(project, "twin", measure=False)[0].plan_file)
    entries = shortlist(plan, k=2)
    names = [e.name for e in entries]
    assert names[0] == "plan" and len([n for n in names if n.startswith("pareto")]) <= 1
    stages = [json.dumps([s.model_dump() for s in e.stages], sort_keys=True) for e in entries]
    assert len(set(stages)) == len(stages)  # no configuration measured twice
    for e in entries:
        assert len(e.choices) == len(plan.layers)


@pytest.mark.parametrize("gain", [0.0, 0.01, 0.05])
def test_a_pareto_point_is_measured_where_its_choices_save_the_win_margin_over_its_baseline(
        project, gain):
    """A point that runs a baseline's stages with other layer choices only is shortlisted
    where it is predicted to save the margin a contender must beat a baseline by."""
    from edgedeploy.benchmarks.decide import WIN_MARGIN
    from edgedeploy.schemas.plan import ParetoPoint

    plan = load_plan(api.plan(project, "twin", measure=False)[0].plan_file)
    name, base = next((n, b) for n, b in sorted(plan.baselines.items()) if b.stages)
    other = "native" if base.stages[0].choices[0] != "native" else "onnxruntime"
    stages = [s.model_copy(update={"choices": [other, *s.choices[1:]]}) if i == 0 else s
              for i, s in enumerate(base.stages)]
    fps = base.predicted.throughput_fps * (1.0 + gain)
    point = ParetoPoint(stages=stages, predicted=base.predicted.model_copy(
        update={"throughput_fps": fps}))
    plan = plan.model_copy(update={"pareto": [point], "objective": "throughput"})
    keys = [json.dumps([s.model_dump() for s in e.stages], sort_keys=True)
            for e in shortlist(plan, k=4)]
    measured = json.dumps([s.model_dump() for s in stages], sort_keys=True) in keys
    assert measured is (gain >= WIN_MARGIN), (name, gain)
    # the baseline itself is measured either way
    assert json.dumps([s.model_dump() for s in base.stages], sort_keys=True) in keys


def test_a_host_or_model_never_calibrated_is_calibrated_before_its_first_measured_plan(
        project, tmp_path, monkeypatch):
    from edgedeploy.benchmarks import decide
    from edgedeploy.benchmarks.decide import QUICK_LAYER_MIN_SHARE
    from edgedeploy.costmodel import profiling, segments
    from edgedeploy.costmodel.segments import calibration_models

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh-cache"))  # no profile here yet
    # the calibration models at 32 px: which ones run, not their figures, is checked here
    monkeypatch.setattr(segments, "CALIBRATION_MODELS",
                        tuple((name, 32) for name, _ in CALIBRATION_MODELS))
    # the plan and the baselines measured, not their micro-batched variants besides (each a
    # pipeline to start): which contenders race is not what is checked here
    monkeypatch.setattr(decide, "BATCH_SIZES", ())
    monkeypatch.setattr(segments, "BATCH_SIZES", ())  # so nor is the model timed batched
    # the plan and the baselines only: what is checked is the calibration before measuring
    project.write_text(MANIFEST.format(budget=2, profile=2).replace(
        "quick_profile_s", "shortlist: 1, quick_profile_s"))
    taken: list[tuple[float, object, object]] = []
    real = profiling.profile_local

    def recorded(target, budget_s, *args, **kw):  # type: ignore[no-untyped-def]
        taken.append((budget_s, kw.get("calibration"), kw.get("total_s")))
        return real(target, budget_s, *args, **kw)

    monkeypatch.setattr(profiling, "profile_local", recorded)
    said: list[str] = []
    plan = load_plan(api.plan(project, "local", progress=said.append)[0].plan_file)
    assert any("no profile yet" in line for line in said)
    assert any(line.startswith("quick profile done in ") for line in said)  # what it took
    # the whole-model runs first, on the calibration models the budget pays for; the layers get
    # what the quick profile's budget leaves, their share at least
    assert taken == [(2 * QUICK_LAYER_MIN_SHARE, calibration_models(2), 2)]
    # a 2 s profile runs the model itself and one calibration model whole, not all (~14 s)
    ran = {line.split()[1] for line in said if line.startswith("segments:")}
    assert ran == {"sq", CALIBRATION_MODELS[0][0]}
    assert list((tmp_path / "fresh-cache").rglob("*.json"))  # the profile was stored
    # the model's own factors were kept apart, under its file's digest
    (segments,) = (tmp_path / "fresh-cache").rglob("*.segments.json")
    sha = hashlib.sha256((tmp_path / "sq.onnx").read_bytes()).hexdigest()
    assert sha in json.loads(segments.read_text())["factors"]["models"]
    assert plan.inputs["costmodel"]["source"].startswith("profile:")
    assert plan.decision.measured
    # the profile overran the 2 s budget; measuring still kept its share of it
    assert plan.decision.budget_s == pytest.approx(MEASURE_SHARE * 2)

    # a second model on the profiled host is timed whole before its first measured plan: its
    # own factors join the first's, and the profile's own factors stay as they were
    before = json.loads(segments.read_text())
    zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=48)
    said.clear()
    plan = load_plan(api.plan(project, "local", progress=said.append)[0].plan_file)
    assert not any("no profile yet" in line for line in said)
    assert any(line.startswith("first plan of sq.onnx") for line in said)
    assert any(line.startswith("sq.onnx timed whole in ") for line in said)
    assert {line.split()[1] for line in said if line.startswith("segments:")} == {"sq"}
    after = json.loads(segments.read_text())
    second = hashlib.sha256((tmp_path / "sq.onnx").read_bytes()).hexdigest()
    assert set(after["factors"]["models"]) == {sha, second}
    assert {k: v for k, v in after["factors"].items() if k != "models"} == {
        k: v for k, v in before["factors"].items() if k != "models"}
    assert after["runs"][:len(before["runs"])] == before["runs"]
    assert plan.decision.measured
    # ... once: the next plan of it finds them
    said.clear()
    api.plan(project, "local", progress=said.append)
    assert not any(line.startswith(("first plan of", "segments:")) for line in said)


def test_a_tie_goes_to_the_baseline_and_a_win_must_clear_the_margin():
    from edgedeploy.benchmarks.decide import Entry, _winner
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import Predicted

    def entry(name: str, fps: float, baseline: bool = False) -> Entry:
        e = Entry(name, [], [], Predicted(throughput_fps=None, latency_ms=None, energy_mj=None,
                                          power_w=None, period_ms=None), baseline)
        e.windows = [Window(int(fps * 10), 10.0)] * 3
        return e

    base = entry("onnxruntime_replicas", 100.0, baseline=True)
    slower = entry("onnxruntime_threads", 90.0, baseline=True)
    assert _winner([entry("plan", 102.0), base, slower], "throughput") is base
    winner = entry("plan", 100.0 * (1 + WIN_MARGIN) + 1.0)
    assert _winner([winner, base, slower], "throughput") is winner
    assert _winner([entry("plan", 50.0), slower, base], "throughput") is base
    only = entry("plan", 10.0)
    assert _winner([only, entry("pareto1", 9.0)], "throughput") is only  # no baseline measured


def test_contenders_start_together_only_as_far_as_memory_allows(project, monkeypatch):
    """Each start-up holds copies of the model's weights: with memory for two contenders'
    start-ups at a time, no more than two start at once, and every one starts."""
    import threading
    import time

    from edgedeploy.benchmarks import decide
    from edgedeploy.runtime.engines.base import is_segment_choice

    plan = load_plan(api.plan(project, "local", measure=False)[0].plan_file)
    graph = api.load_model(project.parent / "sq.onnx")
    entries = shortlist(plan, graph=graph)
    assert len(entries) >= 3
    weights = (project.parent / "sq.onnx").stat().st_size
    one = decide.start_bytes(entries[0], weights)
    assert one >= decide.SEGMENT_START_COPIES * weights  # every worker holds copies
    # a worker of native primitives holds the weights packed beside its spec's; one running
    # the model in its engine's session only holds that session
    for e in entries:
        engine_only = all(is_segment_choice(c) for s in e.stages for c in s.choices)
        copies = decide.SEGMENT_START_COPIES if engine_only else decide.START_MEMORY_COPIES
        assert decide.start_bytes(e, weights) == pytest.approx(
            copies * weights * sum(s.replicas for s in e.stages))
    assert decide.SEGMENT_START_COPIES < decide.START_MEMORY_COPIES
    monkeypatch.setattr(decide, "start_bytes", lambda e, w: one)  # all alike, for counting
    monkeypatch.setattr("edgedeploy.runtime.process_memory.available_bytes",
                        lambda: int(2 * one / decide.START_MEMORY_SHARE) + 1)
    trials = decide.LocalTrials(graph, project.parent / "sq.onnx")
    lock, now, peak, started = threading.Lock(), [0], [0], []

    def fake_system(e):  # a start-up that takes a while, counted
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05)
        with lock:
            now[0] -= 1
            started.append(e.name)

    monkeypatch.setattr(trials, "_system", fake_system)
    trials.open(entries)
    assert sorted(started) == sorted(e.name for e in entries)
    assert peak[0] == 2
    monkeypatch.setattr("edgedeploy.runtime.process_memory.available_bytes",
                        lambda: 1 << 50)  # plenty: all at once
    started.clear()
    peak[0] = 0
    trials.open(entries)
    assert peak[0] == len(entries)


def test_a_variant_that_does_not_fit_in_memory_is_dropped_not_started(project, monkeypatch):
    from edgedeploy.benchmarks import decide

    plan = load_plan(api.plan(project, "local", measure=False)[0].plan_file)
    graph = api.load_model(project.parent / "sq.onnx")
    entries = shortlist(plan, graph=graph)
    optional = [e for e in entries if e.optional]
    assert optional and not entries[0].optional
    monkeypatch.setattr("edgedeploy.runtime.process_memory.available_bytes", lambda: 1)
    trials = decide.LocalTrials(graph, project.parent / "sq.onnx")
    started: list[str] = []
    real = trials._system
    monkeypatch.setattr(trials, "_system", lambda e: started.append(e.name))
    trials.open(entries)
    # what must be measured starts however little memory is left; variants do not
    assert started == [e.name for e in entries if not e.optional]
    monkeypatch.setattr(trials, "_system", real)
    with pytest.raises(MemoryError):
        trials._system(optional[0])


def _measured(name: str, rounds: list[float], baseline: bool = False):  # type: ignore[no-untyped-def]
    from edgedeploy.benchmarks.decide import Entry
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import Predicted

    e = Entry(name, [], [], Predicted(throughput_fps=None, latency_ms=None, energy_mj=None,
                                      power_w=None, period_ms=None), baseline)
    e.windows = [Window(int(fps * 10), 10.0) for fps in rounds]
    return e


def test_a_mean_lifted_by_one_lucky_pair_is_no_win():
    from edgedeploy.benchmarks.decide import _winner

    base = _measured("onnxruntime_replicas", [100.0] * 8, baseline=True)
    lucky = _measured("plan", [98.0] * 6 + [140.0, 140.0])  # one pair of four lifts it
    assert lucky.measured_fps > base.measured_fps * (1 + WIN_MARGIN)
    assert pairs_won(lucky, base) == 0.25 < WIN_PAIR_SHARE
    assert _winner([lucky, base], "throughput") is base
    from edgedeploy.benchmarks.decide import _kept_baseline

    why = _kept_baseline([lucky, base], base, "throughput") or ""
    assert f"plan measured {lucky.measured_fps:.4g} fps" in why
    assert "faster in 25% of the paired rounds" in why
    steady = _measured("plan", [104.0, 110.0] * 4)  # every pair faster
    assert _winner([steady, base], "throughput") is steady


def test_one_round_under_a_burst_does_not_decide_but_a_slow_half_does() -> None:
    """Rounds of equal frames: a round at half speed weighs twice in a pool, and a neighbour's
    burst lands on one contender's round. The slowest of four or more is left out, for every
    contender alike; a configuration slow in half its rounds is still scored slow."""
    from edgedeploy.benchmarks.decide import Entry, _winner, scored_fps
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import Predicted

    def rounds(name: str, fps: list[float]) -> Entry:
        e = Entry(name, [], [], Predicted(throughput_fps=None, latency_ms=None, energy_mj=None,
                                          power_w=None, period_ms=None), baseline=True)
        e.windows = [Window(100, 100 / f) for f in fps]
        return e

    replicas = rounds("onnxruntime_replicas", [160.0, 77.5, 156.0, 161.0])
    threads = rounds("onnxruntime_threads", [110.0, 132.0, 143.0, 131.0])
    assert _winner([replicas, threads], "throughput") is replicas
    assert replicas.measured_fps == pytest.approx(300 / (100 / 160 + 100 / 156 + 100 / 161))
    slow_half = rounds("onnxruntime_replicas", [160.0, 80.0, 160.0, 80.0])
    steady = rounds("onnxruntime_threads", [125.0] * 4)
    assert _winner([slow_half, steady], "throughput") is steady
    # fewer rounds than TRIMMED_FROM: every one counts
    assert scored_fps([Window(100, 1.0), Window(100, 2.0)]) == pytest.approx(200 / 3.0)


@given(st.lists(st.floats(1.0, 1e4), min_size=0, max_size=10),
       st.lists(st.floats(1.0, 1e4), min_size=0, max_size=10))
def test_pairs_won_is_a_share_of_whole_pairs(a: list[float], b: list[float]) -> None:
    x, y = _measured("a", a), _measured("b", b)
    share, back = pairs_won(x, y), pairs_won(y, x)
    pairs = min(len(a), len(b)) // 2
    assert 0.0 <= share <= 1.0
    if pairs == 0:
        assert share == back == 1.0
    else:
        assert round(share * pairs, 6) == round(share * pairs)  # whole pairs
        assert share + back <= 1.0 + 1e-9  # a pair is won by one side at most


def test_a_winner_over_the_baselines_is_kept_only_if_it_stays_faster_when_timed_again():
    """The fastest of several noisy contenders reads high (the winner's curse): one that beat
    the baseline in the shortlist's rounds by luck, running as fast as it in truth, is timed
    again against it alone and the baseline is kept; one faster in truth stays the winner."""
    from edgedeploy.benchmarks.decide import Entry, decide
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import Predicted

    def run(true_fps: dict[str, float], lucky: dict[str, float]):  # type: ignore[no-untyped-def]
        none = Predicted(throughput_fps=None, latency_ms=None, energy_mj=None, power_w=None,
                         period_ms=None)
        entries = [Entry(n, [], [], none, baseline=n == "onnxruntime_replicas")
                   for n in true_fps]
        timed: list[str] = []

        def measure(e: Entry, frames: int, warmup: int, latency: bool
                    ) -> tuple[Window, float, None]:
            # the shortlist's rounds (and the probe) read the lucky rate; fresh rounds the true
            fps = lucky.get(e.name, true_fps[e.name]) if len(e.windows) < MIN_ROUNDS \
                else true_fps[e.name]
            timed.append(e.name)
            return Window(frames, frames / fps), 1.0, None

        winner, decision = decide(entries, measure, objective="throughput", budget_s=0.0,
                                  target="local", simulated=False)
        return winner, decision, entries, timed

    rates = {"plan": 100.0, "onnxruntime_replicas": 100.0, "onnxruntime_threads": 80.0}
    winner, decision, entries, timed = run(rates, {"plan": 110.0})
    assert winner.name == "onnxruntime_replicas" == decision.winner
    assert "in 4 fresh rounds of the two alone" in (decision.reason or "")
    lucky = next(e for e in entries if e.name == "plan")
    assert lucky.measured_fps == pytest.approx(110.0)  # it did win the shortlist's rounds
    assert lucky.confirmed_fps == pytest.approx(100.0)
    # the confirmation timed the two alone, in pairs of rounds in each order
    again = timed[-CONFIRM_ROUNDS * 2:]
    assert set(again) == {"plan", "onnxruntime_replicas"}
    assert again[:2] == again[3:1:-1]
    by_name = {c.name: c for c in decision.contenders}
    assert by_name["onnxruntime_threads"].confirm_fps is None
    assert by_name["plan"].confirm_fps == pytest.approx([100.0] * CONFIRM_ROUNDS)

    winner, decision, *_ = run({**rates, "plan": 110.0}, {})
    assert winner.name == "plan" == decision.winner and decision.reason is None
    assert decision.contenders[0].confirm_fps == pytest.approx([110.0] * CONFIRM_ROUNDS)
    # a baseline that wins is not timed again
    winner, decision, *_ = run({**rates, "plan": 90.0}, {})
    assert winner.name == "onnxruntime_replicas"
    assert all(c.confirm_fps is None for c in decision.contenders)


def test_a_contender_whose_rounds_split_is_timed_again_alone_before_it_is_dropped():
    """Faster than the best baseline by the margin on average, but in only half the pairs (a
    neighbour's load on one pair): timed again alone against that baseline, and kept only
    where the fresh rounds clear the margin on average and in their pairs too."""
    from edgedeploy.benchmarks.decide import Entry, decide
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import Predicted

    def run(shortlist: list[float], fresh: float):  # type: ignore[no-untyped-def]
        none = Predicted(throughput_fps=None, latency_ms=None, energy_mj=None, power_w=None,
                         period_ms=None)
        entries = [Entry(n, [], [], none, baseline=n != "plan")
                   for n in ("plan", "onnxruntime_replicas", "onnxruntime_threads")]
        rates = {"onnxruntime_replicas": 100.0, "onnxruntime_threads": 80.0}

        def measure(e: Entry, frames: int, warmup: int, latency: bool
                    ) -> tuple[Window, float, None]:
            k = len(e.windows)  # the shortlist's rounds read the script, fresh rounds ``fresh``
            fps = rates.get(e.name) or (shortlist[k] if k < len(shortlist) else fresh)
            return Window(frames, frames / fps), 1.0, None

        return decide(entries, measure, objective="throughput", budget_s=0.0, target="local",
                      simulated=False)

    split = [120.0, 120.0, 95.0, 95.0]  # 107.5 on average, one pair of two faster
    assert len(split) == MIN_ROUNDS
    winner, decision = run(split, fresh=110.0)  # faster in truth: kept
    assert winner.name == "plan" == decision.winner
    assert "faster in only 50% of the paired rounds" in (decision.reason or "")
    assert "in 4 fresh rounds of the two alone, faster in 100% of their pairs: it is kept" in (
        decision.reason or "")
    by_name = {c.name: c for c in decision.contenders}
    assert by_name["plan"].confirm_fps == pytest.approx([110.0] * CONFIRM_ROUNDS)
    assert by_name["onnxruntime_replicas"].confirm_fps == pytest.approx([100.0] * CONFIRM_ROUNDS)
    assert by_name["onnxruntime_threads"].confirm_fps is None
    winner, decision = run(split, fresh=101.0)  # as fast in truth: the baseline stays
    assert winner.name == "onnxruntime_replicas" == decision.winner
    assert "faster in 50% of the paired rounds" in (decision.reason or "")
    assert "timed again alone, 101 against 100 in 4 fresh rounds" in (decision.reason or "")
    # slower on average: nothing to time again
    winner, decision = run([102.0, 102.0, 90.0, 90.0], fresh=110.0)
    assert winner.name == "onnxruntime_replicas"
    assert all(c.confirm_fps is None for c in decision.contenders)


@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_latency_is_sampled_in_every_round_only_where_it_decides(objective: str) -> None:
    """Frames one at a time cost a heavy model seconds a decision: the latency objective takes
    them after every window; the others report them from the first pair of rounds only, and
    no probe takes them."""
    from edgedeploy.benchmarks.decide import REPORTED_LATENCY_ROUNDS, Entry, decide
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import Predicted

    none = Predicted(throughput_fps=None, latency_ms=None, energy_mj=None, power_w=None,
                     period_ms=None)
    fps = {"plan": 100.0, "onnxruntime_replicas": 90.0}
    ms = {"plan": 12.0, "onnxruntime_replicas": 10.0}
    entries = [Entry(n, [], [], none, baseline=n == "onnxruntime_replicas") for n in fps]
    asked: dict[str, list[bool]] = {n: [] for n in fps}

    def measure(e: Entry, frames: int, warmup: int, latency: bool
                ) -> tuple[Window, float | None, None]:
        asked[e.name].append(latency)
        return Window(frames, frames / fps[e.name]), ms[e.name] if latency else None, None

    winner, decision = decide(entries, measure, objective=objective, budget_s=0.0,
                              target="local", simulated=False)
    for e in entries:
        rounds = len(e.windows)
        probes = len(asked[e.name]) - rounds - len(e.confirm)
        assert probes >= 1 and not any(asked[e.name][:probes])
        in_rounds = asked[e.name][probes:probes + rounds]
        expected = rounds if objective == "latency" else REPORTED_LATENCY_ROUNDS
        assert sum(in_rounds) == len(e.latency_ms) == expected
        assert not any(asked[e.name][probes + rounds:])  # a confirmation takes none
    by_name = {c.name: c for c in decision.contenders}
    assert by_name["plan"].latency_ms == 12.0
    assert winner.name == ("onnxruntime_replicas" if objective == "latency" else "plan")


def test_a_reported_latency_of_long_frames_is_sampled_in_the_first_round_alone() -> None:
    """Four of a heavy model's frames one at a time take a second and more a contender: where
    the first round's samples took longer than REPORTED_LATENCY_SPAN_S, the reported latency
    is that round's; a latency objective still samples every round."""
    from edgedeploy.benchmarks.decide import REPORTED_LATENCY_SPAN_S, Entry, decide
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import Predicted

    none = Predicted(throughput_fps=None, latency_ms=None, energy_mj=None, power_w=None,
                     period_ms=None)
    slow_ms = 1e3 * REPORTED_LATENCY_SPAN_S  # four samples of it span four times as long
    ms = {"plan": slow_ms, "onnxruntime_replicas": 10.0}
    for objective in ("throughput", "latency"):
        entries = [Entry(n, [], [], none, baseline=n == "onnxruntime_replicas") for n in ms]

        def measure(e: Entry, frames: int, warmup: int, latency: bool
                    ) -> tuple[Window, float | None, None]:
            return Window(frames, frames / 10.0), ms[e.name] if latency else None, None

        decide(entries, measure, objective=objective, budget_s=0.0, target="local",
               simulated=False)
        slow, fast = entries
        assert len(fast.latency_ms) == (len(fast.windows) if objective == "latency" else 2)
        assert len(slow.latency_ms) == (len(slow.windows) if objective == "latency" else 1)


def test_contenders_far_behind_leave_the_race_only_where_the_budget_cannot_hold_them():
    """Where the budget cannot hold MIN_ROUNDS rounds of every contender, those over
    RACE_MARGIN behind the fastest after the first pair of rounds are measured no more; the
    fastest baseline stays whatever it reads, and with time enough every contender runs
    every round."""
    from edgedeploy.benchmarks.decide import Entry, decide
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import Predicted

    none = Predicted(throughput_fps=None, latency_ms=None, energy_mj=None, power_w=None,
                     period_ms=None)

    def run_with(rate_of, names: list[str], budget_s: float):  # type: ignore[no-untyped-def]
        entries = [Entry(n, [], [], none, baseline=n.startswith("onnxruntime"))
                   for n in names]
        said: list[str] = []

        def measure(e: Entry, frames: int, warmup: int, latency: bool
                    ) -> tuple[Window, float, None]:
            if warmup < 2:  # a probe (one warm-up frame) reads the steady rate
                return Window(frames, frames / 100.0), 1.0, None
            return Window(frames, frames / rate_of(e.name)), 1.0, None

        winner, decision = decide(entries, measure, objective="throughput", budget_s=budget_s,
                                  target="local", simulated=False, progress=said.append)
        return winner, decision, {c.name: len(c.rounds_fps) for c in decision.contenders}, said

    def run(rates: dict[str, float], budget_s: float):  # type: ignore[no-untyped-def]
        return run_with(lambda name: rates[name], list(rates), budget_s)

    behind = (1 - RACE_MARGIN) * 100.0 * 0.9
    rates = {"plan": 100.0, "onnxruntime_replicas": 95.0, "onnxruntime_threads": behind,
             "pareto1": behind}
    winner, decision, rounds, said = run(rates, budget_s=0.0)
    assert winner.name == "plan" == decision.winner
    assert rounds["onnxruntime_threads"] == rounds["pareto1"] == 2  # one pair, then out
    assert rounds["plan"] == rounds["onnxruntime_replicas"] == MIN_ROUNDS
    assert sum("leaves the race after 2 rounds" in line for line in said) == 2
    raced(decision.contenders)
    # the fastest baseline stays in, however far behind: it is what the plan must beat
    winner, decision, rounds, _ = run({**rates, "onnxruntime_replicas": behind}, budget_s=0.0)
    assert rounds["onnxruntime_replicas"] == MIN_ROUNDS and rounds["pareto1"] == 2
    # one round under a burst is no reason to leave: the best round of a pair counts
    bursts = {"onnxruntime_threads": itertools.chain([0.5 * behind], itertools.repeat(100.0))}

    def burst_once(name: str) -> float:
        return next(bursts[name]) if name in bursts else rates[name]

    winner, decision, rounds, said = run_with(burst_once, list(rates), budget_s=0.0)
    assert rounds["onnxruntime_threads"] == MIN_ROUNDS and rounds["pareto1"] == 2
    # within RACE_MARGIN: every one runs every round
    close = {n: max(r, 0.9 * 100.0) for n, r in rates.items()}
    assert set(run(close, budget_s=0.0)[2].values()) == {MIN_ROUNDS}
    # time enough for every one's rounds: none leaves
    _, _, rounds, said = run(rates, budget_s=3600.0)
    assert len(set(rounds.values())) == 1 and not any("race" in line for line in said)
    # every other far behind: the one left is measured no more, against nothing
    winner, decision, rounds, _ = run({"onnxruntime_replicas": 100.0, "pareto1": behind,
                                       "plan": behind}, budget_s=0.0)
    assert winner.name == "onnxruntime_replicas" and set(rounds.values()) == {2}
    raced(decision.contenders)


def test_a_contender_probed_before_goes_straight_to_its_rounds():
    """A contender whose system a decision already probed (the Winograd trial's model as
    given, the winner's own system still running) is sized by that probe, not probed again."""
    from edgedeploy.benchmarks.decide import Entry, decide
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import Predicted

    none = Predicted(throughput_fps=None, latency_ms=None, energy_mj=None, power_w=None,
                     period_ms=None)
    entries = [Entry("as_given", [], [], none, baseline=True, probe_fps=100.0),
               Entry("winograd:plan", [], [], none)]
    calls: dict[str, list[int]] = {e.name: [] for e in entries}

    def measure(e: Entry, frames: int, warmup: int, latency: bool
                ) -> tuple[Window, float, None]:
        calls[e.name].append(frames)
        return Window(frames, frames / 100.0), 1.0, None

    decide(entries, measure, objective="throughput", budget_s=0.0, target="local",
           simulated=False)
    given, rewritten = entries
    assert len(calls["as_given"]) == len(given.windows) + len(given.confirm)
    assert calls["winograd:plan"][0] == 2  # probed: two frames first
    assert len(calls["winograd:plan"]) > len(rewritten.windows) + len(rewritten.confirm)
    assert rewritten.probe_fps == pytest.approx(100.0)


def test_the_first_rounds_eta_counts_the_frames_a_batched_round_streams() -> None:
    """Before a round has been timed, the ETA counts what each contender's round streams at
    its probe's rate: for two replicas of four frames a call, the warm-up, three whole periods
    of eight and two batches a replica fed behind; not the window's frames alone."""
    from edgedeploy.benchmarks.decide import Entry, decide, streamed_frames
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import ParetoStage, Predicted

    none = Predicted(throughput_fps=None, latency_ms=None, energy_mj=None, power_w=None,
                     period_ms=None)

    def stage(replicas: int, batch: int, inline: bool = False) -> ParetoStage:
        return ParetoStage(start=0, stop=1, cluster="cpu", cores=2 // replicas,
                           replicas=replicas, cpus=[0, 1], choices=["onnxruntime"],
                           engine="onnxruntime", batch=batch, inline=inline)

    batched = Entry("onnxruntime_replicas_batch4", [stage(2, 4)], ["onnxruntime"], none,
                    optional=True)
    plain = Entry("onnxruntime_replicas", [stage(2, 1)], ["onnxruntime"], none, baseline=True)
    inline = Entry("onnxruntime_threads_inline", [stage(1, 1, inline=True)], ["onnxruntime"],
                   none, baseline=True)
    assert streamed_frames(batched, 5) == 2 + 24 + 16
    assert streamed_frames(plain, 5) == 2 + 6 + 4  # three periods of two, two frames a replica
    assert streamed_frames(inline, 5) == 2 + 5
    said: list[str] = []

    def measure(e: Entry, frames: int, warmup: int, latency: bool
                ) -> tuple[Window, None, None]:
        return Window(frames, frames / 5.0), None, None  # 5 fps: a VGG-16 on two cores

    decide([plain, batched, inline], measure, objective="throughput", budget_s=1.0,
           target="local", simulated=False, progress=said.append)
    first = next(line for line in said if line.startswith("measure round 1/"))
    eta = float(first.split("ETA ")[1].split(" s")[0])
    rounds = int(first.split("/")[1].split(":")[0])
    frames = 4  # the floor of a window: a 1 s budget holds no more of three contenders
    streamed = sum(streamed_frames(e, frames) for e in (plain, batched, inline))
    assert eta >= rounds * streamed / 5.0
    # and the overrun is said before the rounds start, where a budget that holds them is not
    over = [line for line in said if "over the 1 s budget" in line]
    assert len(over) == 1 and said.index(over[0]) < said.index(first)
    for e in (plain, batched, inline):
        e.windows.clear()
    said.clear()
    decide([plain, batched, inline], measure, objective="throughput", budget_s=3600.0,
           target="local", simulated=False, progress=said.append)
    assert not [line for line in said if "budget" in line]


@pytest.mark.parametrize(("worker_fps", "winner"), [
    (102.0, "onnxruntime_replicas_inline"),  # within the margin: a tie goes to inline
    (110.0, "onnxruntime_replicas"),  # faster on average and in every pair: the workers
])
def test_a_tie_between_worker_replicas_and_their_inline_twin_goes_inline(
        worker_fps: float, winner: str) -> None:
    """The same sessions in the feeding process are the stock runtime as its user runs them
    and pay no hop: worker processes must beat them as a contender beats a baseline."""
    from edgedeploy.benchmarks.decide import Entry, decide
    from edgedeploy.benchmarks.estimator import Window
    from edgedeploy.schemas.plan import ParetoStage, Predicted

    none = Predicted(throughput_fps=None, latency_ms=None, energy_mj=None, power_w=None,
                     period_ms=None)

    def stage(inline: bool) -> ParetoStage:
        return ParetoStage(start=0, stop=1, cluster="cpu", cores=1, replicas=2, cpus=[0, 1],
                           choices=["onnxruntime"], engine="onnxruntime", inline=inline)

    worker = Entry("onnxruntime_replicas", [stage(False)], ["onnxruntime"], none,
                   baseline=True)
    twin = Entry("onnxruntime_replicas_inline", [stage(True)], ["onnxruntime"], none,
                 baseline=True, optional=True)
    threads = Entry("onnxruntime_threads", [stage(False).model_copy(
        update={"replicas": 1, "cores": 2})], ["onnxruntime"], none, baseline=True)
    rates = {worker.name: worker_fps, twin.name: 100.0, threads.name: 60.0}

    def measure(e: Entry, frames: int, warmup: int, latency: bool
                ) -> tuple[Window, None, None]:
        return Window(frames, frames / rates[e.name]), None, None

    chosen, decision = decide([worker, twin, threads], measure, objective="throughput",
                              budget_s=3600.0, target="local", simulated=False)
    assert chosen.name == winner and decision.winner == winner
    if winner == twin.name:
        assert decision.reason is not None and "inline twin" in decision.reason
