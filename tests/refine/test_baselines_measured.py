"""Refinement measures what a user would run instead (the lockfile's runnable baselines) right
after the plan, whatever the budget, and never ends on a configuration measured slower than
them; confirming a winner re-measures the fastest baseline beside it and the plan."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy.refine.api import confirm
from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.candidate import Candidate, Space, StageConf, baselines_from_plan
from edgedeploy.refine.measure import Measurement
from edgedeploy.refine.search import Budget, SearchResult, guided_search
from edgedeploy.runtime.vocab import ONNXRUNTIME

NAMES = [f"l{i}" for i in range(4)]
SPACE = Space(NAMES, [(ONNXRUNTIME, "native")] * 4, {"cpu": (0, 1)})
SLOW_PLAN = Candidate((StageConf(0, 2, "cpu", 1), StageConf(2, 4, "cpu", 1)),
                      (ONNXRUNTIME, "native", "native", ONNXRUNTIME))
REPLICAS = Candidate((StageConf(0, 4, "cpu", 1, 2),), (ONNXRUNTIME,) * 4)
THREADS = Candidate((StageConf(0, 4, "cpu", 2),), (ONNXRUNTIME,) * 4)
BASELINES = [("onnxruntime_replicas", REPLICAS), ("onnxruntime_threads", THREADS)]


class Scripted:
    """A board whose configurations answer given rates, in turn where a list is given (the
    decision rule under test, not a measurement of speed)."""

    label, simulated = "scripted", True

    def __init__(self, rates: dict[str, float | list[float]], default: float = 10.0) -> None:
        self.rates, self.default, self.calls = rates, default, []

    def measure(self, cand: Candidate, frames: int, warmup: int) -> Measurement:
        self.calls.append(cand.key)
        rate = self.rates.get(cand.key, self.default)
        fps = rate.pop(0) if isinstance(rate, list) else rate
        return Measurement(fps, 1000.0 / fps, [1000.0 / fps], seconds=0.001, simulated=True,
                           runs=[fps])


def test_baselines_are_measured_after_the_plan_even_with_no_budget_left():
    board = Scripted({REPLICAS.key: 20.0, THREADS.key: 15.0, SLOW_PLAN.key: 5.0})
    res = guided_search([SLOW_PLAN], SPACE, MeasureCache(board, 8, 1), budget=Budget(1, 1e9),
                        baselines=BASELINES)
    origins = [r.origin for r in res.records]
    assert origins[:3] == ["seed", "baseline:onnxruntime_replicas", "baseline:onnxruntime_threads"]
    assert res.best[0].key == REPLICAS.key and res.start[0].key == SLOW_PLAN.key
    assert {n: m.throughput_fps for n, _, m in res.baselines} == {
        "onnxruntime_replicas": 20.0, "onnxruntime_threads": 15.0}


@settings(max_examples=40, deadline=None)
@given(rates=st.lists(st.floats(1.0, 100.0), min_size=64, max_size=64),
       evals=st.integers(1, 12), seed=st.integers(0, 3))
def test_the_result_never_measured_slower_than_a_baseline_or_the_plan(rates, evals, seed):
    class Drawn(Scripted):  # each new configuration takes the next drawn rate
        def measure(self, cand, frames, warmup):  # type: ignore[no-untyped-def]
            self.rates.setdefault(cand.key, rates[len(self.rates) % len(rates)])
            return super().measure(cand, frames, warmup)

    board = Drawn({})
    res = guided_search([SLOW_PLAN], SPACE, MeasureCache(board, 8, 1),
                        budget=Budget(evals, 1e9), seed=seed, baselines=BASELINES)
    floor = max(board.rates[c.key] for c in (SLOW_PLAN, *(c for _, c in BASELINES)))
    assert res.best[1].throughput_fps >= floor


def test_confirming_a_lucky_winner_falls_back_to_the_faster_baseline():
    mutant = Candidate((StageConf(0, 4, "cpu", 1),), (ONNXRUNTIME,) * 4)
    board = Scripted({SLOW_PLAN.key: 5.0, REPLICAS.key: 20.0, THREADS.key: 15.0,
                      mutant.key: [30.0, 12.0, 12.0, 12.0]})  # lucky once, then slower
    cache = MeasureCache(board, 8, 1)
    m = {c.key: cache.measure(c)[0] for c in (SLOW_PLAN, REPLICAS, THREADS, mutant)}
    res = SearchResult((SLOW_PLAN, m[SLOW_PLAN.key]), (mutant, m[mutant.key]),
                       baselines=tuple((n, c, m[c.key]) for n, c in BASELINES))
    confirmed = confirm(res, cache)
    assert confirmed.best[0].key == REPLICAS.key
    assert board.calls.count(REPLICAS.key) == 1 + 3  # re-measured beside it, alternately
    assert board.calls.count(THREADS.key) == 1  # only the fastest baseline


def test_a_baseline_far_behind_the_winner_is_not_measured_again():
    board = Scripted({SLOW_PLAN.key: 50.0, REPLICAS.key: 20.0, THREADS.key: 15.0})
    cache = MeasureCache(board, 8, 1)
    res = guided_search([SLOW_PLAN], SPACE, cache, budget=Budget(3, 1e9), baselines=BASELINES)
    assert confirm(res, cache).best[0].key == SLOW_PLAN.key
    assert board.calls.count(REPLICAS.key) == 1


def test_baselines_the_board_cannot_run_are_named_with_why():
    doc = {"baselines": {
        "onnxruntime_replicas": {"stages": [{"start": 0, "stop": 4, "cluster": "cpu",
                                             "cores": 1, "replicas": 2,
                                             "choices": [ONNXRUNTIME] * 4}]},
        "onnxruntime_threads": {"stages": [{"start": 0, "stop": 4, "cluster": "cpu",
                                            "cores": 2, "replicas": 1,
                                            "choices": [ONNXRUNTIME] * 4}]},
        "all_cores": {"stages": None}}}
    space = Space(NAMES, SPACE.options, SPACE.clusters)
    space.runnable = lambda c: (["the segment is not in the deployed bundle"]
                                if c.stages[0].cores == 2 else [])
    ran, skipped = baselines_from_plan(space, json.loads(json.dumps(doc)))
    assert [(n, c.key) for n, c in ran] == [("onnxruntime_replicas", REPLICAS.key)]
    assert skipped == {"onnxruntime_threads": "the segment is not in the deployed bundle"}


def test_refining_on_this_host_measures_the_baselines_and_says_so(tmp_path, monkeypatch, capsys):
    from edgedeploy import zoo
    from edgedeploy.cli.main import main
    from edgedeploy.schemas.plan import load_plan

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    zoo.export("squeezenet1_1", tmp_path / "m.onnx", size=32)
    (tmp_path / "m.yaml").write_text("name: m\nmodel: m.onnx\n"
                                     "refine: {max_evals: 3, frames_per_eval: 8}\n")
    assert main(["refine", "-m", str(tmp_path / "m.yaml"), "--target", "local"]) == 0
    out = capsys.readouterr().out
    assert "baselines on the board: onnxruntime_replicas" in out, out
    plan_file = out.strip().splitlines()[-1].removeprefix("wrote ")
    record = load_plan(plan_file).refinement or {}
    # each also inline, in the process that feeds it, as a user runs the stock runtime
    assert sorted(record["baselines"]) == ["onnxruntime_replicas", "onnxruntime_replicas_inline",
                                           "onnxruntime_threads", "onnxruntime_threads_inline"]
    rates = [b["measured"]["throughput_fps"] for b in record["baselines"].values()]
    assert min(rates) > 0
    # the refined plan is the fastest measured configuration, baselines included
    assert record["vs_best_baseline"] == pytest.approx(
        load_plan(plan_file).measured["throughput_fps"] / max(rates), rel=1e-4)
    assert record["trace"][0]["origin"] == "seed"  # the plan first, then the baselines


def test_a_winner_that_is_a_baseline_is_confirmed_against_the_next_fastest():
    """Reported against the baselines, a winner that is one must have been timed in the same
    minutes as the next: the search's figure of a baseline left alone is from another time."""
    board = Scripted({SLOW_PLAN.key: [5.0, 5.0, 5.0, 5.0],
                      REPLICAS.key: [20.0, 12.0, 12.0, 12.0],  # lucky once, then the host slows
                      THREADS.key: [15.0, 13.0, 13.0, 13.0]})
    cache = MeasureCache(board, 8, 1)
    m = {c.key: cache.measure(c)[0] for c in (SLOW_PLAN, REPLICAS, THREADS)}
    res = SearchResult((SLOW_PLAN, m[SLOW_PLAN.key]), (REPLICAS, m[REPLICAS.key]),
                       baselines=tuple((n, c, m[c.key]) for n, c in BASELINES))
    confirmed = confirm(res, cache)
    assert board.calls.count(THREADS.key) == 1 + 3  # the runner-up, re-measured beside it
    assert confirmed.best[0].key == THREADS.key  # faster in the same minutes
    latest = {n: mm.throughput_fps for n, _, mm in confirmed.baselines}
    assert confirmed.best[1].throughput_fps >= max(latest.values())
