"""The runtime manager's guards against flapping, driven closed-loop on synthetic chunks (a
decision switches the plan from the next chunk, as the runner does; one chunk per second):

* no switch between identical plans (a board flapped 24 times in 152 s between ``plan`` and a
  byte-identical ``pareto0``);
* the default (relative) target is learned from the home plan's measured rate, never from an
  optimistic prediction;
* a switch that did not help is reverted once and held for a growing time;
* at most ``max_switches_per_min`` switches a minute;
* every switch, suppression, verdict and learned target is in the timeline with its reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy.runtime.manager import (
    ManagerPolicy,
    ManagerSettings,
    Observation,
    PlanView,
    RuntimeManager,
    plan_views,
    settings_from_config,
)
from edgedeploy.runtime.runner_config import BundleConfigError, parse_plan

#: (plan, chunk index) -> (throughput fps, per-core foreign load)
World = Callable[[str, int], tuple[float, Mapping[int, float]]]


def drive(m: RuntimeManager, world: World, chunks: int, start: str | None = None
          ) -> list[tuple[int, str, str, str]]:
    """Run ``chunks`` one-second chunks, following every decision; the switches made as
    (chunk, from, to, trigger)."""
    plan, out = start or m.home, []
    for i in range(chunks):
        fps, load = world(plan, i)
        d = m.observe(Observation(plan, fps, 10.0, load, t=float(i)))
        if d is not None:
            assert d["to"] != plan and d["reason"]
            out.append((i, plan, d["to"], d["trigger"]))
            plan = d["to"]
    return out


def events(m: RuntimeManager, kind: str) -> list[dict[str, Any]]:
    return [e for e in m.report()["timeline"] if e["kind"] == kind]


def mgr(plans: list[PlanView], **kw: Any) -> RuntimeManager:
    return RuntimeManager(ManagerSettings(enabled=True, **kw), plans, plans[0].name)


# --- identical plans ------------------------------------------------------------------------------
SAME = ("stages", "choices")  # any equal key: the same pipeline
TWINS = [PlanView("plan", frozenset({0, 1}), 400.0, key=SAME),
         PlanView("pareto0", frozenset({0, 1}), 400.0, key=SAME)]


def test_no_switch_between_identical_plans_the_board_flap() -> None:
    # the board: the prediction (400 fps) is far off, a core always busy, the target never met
    m = mgr(TWINS, min_throughput_fps=300.0, miss_chunks=2, cooldown_chunks=1)
    world: World = lambda plan, i: (100.0, {0: 0.0, 1: 0.5})  # noqa: E731
    assert drive(m, world, 152) == []
    assert m.same("plan", "pareto0") and m.best({0: 0.0, 1: 0.5}, exclude="plan") is None
    assert m.miss_streak > 100  # the target is missed all along: only the twin looked better


def test_running_a_twin_of_home_is_never_left_to_go_home() -> None:
    m = mgr(TWINS, min_throughput_fps=50.0, recover_chunks=1, cooldown_chunks=1)
    # started on pareto0 (a request file): home is expected to do better, but it is the same
    assert drive(m, lambda plan, i: (100.0, {0: 0.0, 1: 0.0}), 20, start="pareto0") == []


def test_a_distinct_plan_is_still_chosen_past_the_twin() -> None:
    plans = [*TWINS, PlanView("pareto1", frozenset({0}), 300.0, key=("other",))]
    m = mgr(plans, min_throughput_fps=300.0, miss_chunks=2, cooldown_chunks=1)
    assert m.best({0: 0.0, 1: 0.5}, exclude="plan") == "pareto1"


def test_plan_views_key_plans_by_stages_and_choices_not_names() -> None:
    stage = {"start": 0, "stop": 2, "cpus": [0, 1], "replicas": 2}

    class Cfg:
        plans: ClassVar = {"plan": parse_plan("plan", {"stages": [{**stage, "name": "s0"}],
                                             "choices": {"a": "direct", "b": "direct"}}),
                 "pareto0": parse_plan("pareto0", {"stages": [{**stage, "name": "stage0"}],
                                                   "choices": {"b": "direct", "a": "direct"}}),
                 "pareto1": parse_plan("pareto1", {"stages": [stage],
                                                   "choices": {"a": "winograd", "b": "direct"}})}

    m = RuntimeManager(ManagerSettings(enabled=True), plan_views(Cfg(), [0, 1]),  # type: ignore[arg-type]
                       "plan")
    assert m.same("plan", "pareto0") and not m.same("plan", "pareto1")


# --- the learned default target -------------------------------------------------------------------
OPTIMISTIC = [PlanView("A", frozenset({0, 1}), 400.0), PlanView("B", frozenset({0}), 200.0)]


def test_the_default_target_is_a_share_of_the_measured_rate_not_the_prediction() -> None:
    m = mgr(OPTIMISTIC, min_throughput_ratio=0.75, miss_chunks=2, cooldown_chunks=1)
    first = iter([500.0, 90.0, 140.0, 100.0])  # start-up chunk (ignored), then 3 learned

    def world(plan: str, i: int) -> tuple[float, Mapping[int, float]]:
        return (next(first, 100.0), {0: 0.0, 1: 0.5})  # core 1 never free: A never "free"

    drive(m, world, 3)
    assert m.min_fps() is None  # still learning: no relative target yet (not the prediction)
    assert drive(m, world, 100) == []  # 0.75 x 400 predicted would be missed for good
    assert m.learned_fps == 100.0 and m.min_fps() == pytest.approx(75.0)
    report = m.report()
    assert report["learned_fps"] == 100.0 and report["targets"]["effective_min_fps"] == 75.0
    (learned,) = events(m, "target")
    assert "median 100.0 fps over its first 3 chunks: guarding 0.75x = 75.0 fps" in learned[
        "reason"]


def test_the_learned_target_still_catches_a_real_drop() -> None:
    m = mgr(OPTIMISTIC, min_throughput_ratio=0.75, miss_chunks=2, cooldown_chunks=1)
    world: World = lambda plan, i: ((100.0 if i < 10 else 40.0) if plan == "A" else 150.0,  # noqa: E731
                                    {0: 0.0, 1: 0.5 if i < 10 else 0.9})
    assert drive(m, world, 13) == [(11, "A", "B", "targets_missed")]
    (switch,) = events(m, "switch")
    assert "throughput 40.0 < 75 fps" in switch["reason"]


def test_an_absolute_target_still_wins_over_the_learned_share() -> None:
    m = mgr(OPTIMISTIC, min_throughput_ratio=0.5, min_throughput_fps=80.0, cooldown_chunks=1)
    drive(m, lambda plan, i: (100.0, {0: 0.0, 1: 0.0}), 5)
    assert m.min_fps() == 80.0


# --- back-off ------------------------------------------------------------------------------------
BOTH = {0: 0.4, 1: 0.4}  # both cores loaded: no plan is ever measured "free", B's 400 stays a hope
HOPE = [PlanView("A", frozenset({0, 1}), 200.0), PlanView("B", frozenset({0}), 400.0)]


def no_better(plan: str, i: int) -> tuple[float, Mapping[int, float]]:
    return (100.0 if plan == "A" else 95.0), BOTH


def test_a_switch_that_did_not_help_is_reverted_once_and_held_for_a_growing_time() -> None:
    m = mgr(HOPE, min_throughput_fps=150.0, miss_chunks=2, cooldown_chunks=1, backoff_s=30.0,
            max_switches_per_min=100)
    switches = drive(m, no_better, 160)
    # A misses, B is hoped for: tried at 3, judged on chunks 6-7 (95 vs 100 fps), back at 7;
    # held 30 s: tried again at 37 (back at 41), then held 60 s: at 101 (back at 105), then 120 s
    assert switches == [(3, "A", "B", "targets_missed"), (7, "B", "A", "revert"),
                        (37, "A", "B", "targets_missed"), (41, "B", "A", "revert"),
                        (101, "A", "B", "targets_missed"), (105, "B", "A", "revert")]
    verdicts = events(m, "verdict")
    assert [v["helped"] for v in verdicts] == [False, False, False]
    assert "held 30 s (failure 1)" in verdicts[0]["reason"]
    assert "held 60 s (failure 2)" in verdicts[1]["reason"]
    assert "held 120 s (failure 3)" in verdicts[2]["reason"]
    assert "B 95.0 fps, p99 10.0 ms vs A 100.0 fps" in verdicts[0]["reason"]
    held = [e for e in events(m, "suppressed") if e["suppressed"] == "held"]
    assert len(held) == 3 and held[0]["count"] == 37 - 11 and "did not help" in held[0]["reason"]
    assert "wanted: targets missed" in held[0]["reason"]
    (hold,) = m.report()["held"]
    assert (hold["from"], hold["to"], hold["loaded_cores"], hold["failures"]) == (
        "A", "B", [0, 1], 3)


def test_the_old_manager_flapped_here_the_new_one_switches_back_only_once() -> None:
    m = mgr(HOPE, min_throughput_fps=150.0, miss_chunks=2, cooldown_chunks=1)
    switches = drive(m, no_better, 30)
    assert [s[1:] for s in switches] == [("A", "B", "targets_missed"), ("B", "A", "revert")]


def test_a_helpful_switch_stays_and_clears_nothing_to_hold() -> None:
    m = mgr(HOPE, min_throughput_fps=150.0, miss_chunks=2, cooldown_chunks=1)
    helps: World = lambda plan, i: (100.0 if plan == "A" else 160.0, BOTH)  # noqa: E731
    assert drive(m, helps, 30) == [(3, "A", "B", "targets_missed")]
    (verdict,) = events(m, "verdict")
    assert verdict["helped"] is True and m.report()["held"] == []


def test_a_load_change_makes_the_verdict_inconclusive_no_revert_no_hold() -> None:
    m = mgr(HOPE, min_throughput_fps=150.0, miss_chunks=2, cooldown_chunks=1,
            recover_chunks=1)

    def world(plan: str, i: int) -> tuple[float, Mapping[int, float]]:
        load = BOTH if i < 5 else {0: 0.4, 1: 0.0}  # core 1 freed while B runs
        return (100.0 if plan == "A" else 95.0), load

    switches = drive(m, world, 8)  # B judged on chunks 6-7; A then goes home as load eased
    assert switches == [(3, "A", "B", "targets_missed"), (7, "B", "A", "load_gone")]
    (verdict,) = events(m, "verdict")
    assert verdict["helped"] is None and "inconclusive: loaded cores 0,1 -> 0" in verdict[
        "reason"]
    assert m.report()["held"] == []


def test_a_hold_is_per_load_a_different_load_may_try_again() -> None:
    m = mgr(HOPE, min_throughput_fps=150.0, miss_chunks=2, cooldown_chunks=1, recover_chunks=1,
            backoff_s=1000.0)

    def world(plan: str, i: int) -> tuple[float, Mapping[int, float]]:
        load = BOTH if i < 12 else {0: 0.0, 1: 0.9}
        return (100.0 if plan == "A" else 95.0), load

    switches = drive(m, world, 20)
    assert [s[1:] for s in switches] == [("A", "B", "targets_missed"), ("B", "A", "revert"),
                                         ("A", "B", "targets_missed"), ("B", "A", "revert")]
    assert switches[2][0] >= 12  # only once core 1 alone is loaded
    held = {(h["from"], h["to"], tuple(h["loaded_cores"])) for h in m.report()["held"]}
    assert held == {("A", "B", (0, 1)), ("A", "B", (1,))}


# --- the per-minute cap ---------------------------------------------------------------------------
SPLIT = [PlanView("A", frozenset({0, 1}), 200.0), PlanView("B", frozenset({0}), 100.0)]


def hog_comes_and_goes(plan: str, i: int) -> tuple[float, Mapping[int, float]]:
    """A hog on core 1 during chunks 4-7 and from 16 on: A drops to 70 fps, B keeps 100."""
    hog = 4 <= i < 8 or i >= 16
    if plan == "A":
        return (70.0 if hog else 200.0), {0: 0.0, 1: 0.7 if hog else 0.0}
    return 100.0, {0: 0.0, 1: 0.7 if hog else 0.0}


def test_at_most_n_switches_a_minute_the_rest_suppressed_and_recorded() -> None:
    m = mgr(SPLIT, min_throughput_fps=150.0, miss_chunks=1, cooldown_chunks=1, recover_chunks=2,
            max_switches_per_min=2)
    switches = drive(m, hog_comes_and_goes, 70)
    assert switches == [(4, "A", "B", "targets_missed"), (9, "B", "A", "load_gone"),
                        (64, "A", "B", "targets_missed")]  # 16..63: 2 switches in the minute
    (capped,) = events(m, "suppressed")
    assert capped["suppressed"] == "cap" and capped["count"] == 64 - 16
    assert "2 switches in the last minute (cap 2)" in capped["reason"]
    assert capped["t"] == 16.0 and capped["t_last"] == 63.0


def test_the_default_cap_is_four_a_minute() -> None:
    assert ManagerSettings().max_switches_per_min == 4
    s = settings_from_config({"plans": {"a": {}, "b": {}}, "manager": {
        "max_switches_per_min": 2, "backoff_s": 5, "learn_chunks": 4}})
    assert (s.max_switches_per_min, s.backoff_s, s.learn_chunks) == (2, 5.0, 4)
    with pytest.raises(BundleConfigError):
        settings_from_config({"plans": {}, "manager": {"max_switches_per_min": 0}})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 300), st.floats(0, 300), st.floats(0, 300),
                          st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=120),
       st.integers(1, 3), st.integers(1, 5))
def test_closed_loop_never_over_the_cap_nor_between_twins(chunks: list, k: int, cap: int
                                                          ) -> None:
    plans = [PlanView("plan", frozenset({0, 1}), 200.0, key=SAME),
             PlanView("pareto0", frozenset({0, 1}), 200.0, key=SAME),
             PlanView("pareto1", frozenset({0}), 100.0), PlanView("pareto2", frozenset({1}), 100.0)]
    m = mgr(plans, min_throughput_ratio=0.75, max_latency_ms=50.0, miss_chunks=k,
            recover_chunks=k, cooldown_chunks=1, max_switches_per_min=cap, backoff_s=10.0)
    fps_of = {"plan": 0, "pareto0": 0, "pareto1": 1, "pareto2": 2}
    world: World = lambda plan, i: (  # noqa: E731
        chunks[i][fps_of[plan]], {0: chunks[i][3], 1: chunks[i][4]})
    switches = drive(m, world, len(chunks))
    for i, old, new, _ in switches:
        assert not m.same(old, new)
        assert sum(1 for j, *_ in switches if i - 60 < j <= i) <= cap
    assert len(events(m, "switch")) == len(switches)


# --- the policy's timeline on the wall clock ------------------------------------------------------
class _Load:
    def __init__(self, sample: dict[int, float]) -> None:
        self.value = sample

    def reset(self) -> None:
        pass

    def sample(self, pids: object) -> dict[int, float]:
        return self.value


def test_the_policy_reports_the_timeline_with_wall_clock_times() -> None:
    one = {"start": 0, "stop": 1, "replicas": 1}

    class Cfg:
        active = "A"
        plans: ClassVar = {"A": parse_plan("A", {"stages": [{**one, "cpus": [0, 1]}],
                                       "predicted": {"throughput_fps": 400.0}}),
                 "B": parse_plan("B", {"stages": [{**one, "cpus": [0]}],
                                       "predicted": {"throughput_fps": 300.0}})}

    load = _Load({0: 0.0, 1: 0.0})
    policy = ManagerPolicy(Cfg(), ManagerSettings(  # type: ignore[arg-type]
        enabled=True, min_throughput_ratio=0.75, miss_chunks=1, cooldown_chunks=1,
        learn_chunks=2), allowed=[0, 1], load=load)  # type: ignore[arg-type]
    snap = {"active": "A", "throughput_fps": 100.0, "latency_ms_p99": 10.0}
    decisions = [policy(snap, Cfg()) for _ in range(4)]  # type: ignore[arg-type]
    assert decisions == [None] * 4
    load.value = {0: 0.0, 1: 0.8}
    d = policy({**snap, "throughput_fps": 30.0}, Cfg())  # type: ignore[arg-type]
    assert d is not None and d["to"] == "B" and d["trigger"] == "targets_missed"
    assert "throughput 30.0 < 75 fps" in d["reason"]  # what the status `switches` records
    timeline = policy.report()["timeline"]
    assert [e["kind"] for e in timeline] == ["target", "switch"]
    assert all(abs(e["t"] - time.time()) < 5.0 for e in timeline)


# --- the hog demo (tests/runtime/manager_demo.py), synthetic ------------------------------------
def test_the_demo_sequence_still_goes_away_and_back_with_the_learned_target() -> None:
    """The demo's settings: relative target 0.75, miss 2, recover 3, cooldown 1; the hog on core
    1 arrives while the target is still being learned (chunk 3) and leaves at chunk 12."""
    plans = [PlanView("A", frozenset({0, 1}), 200.0), PlanView("B", frozenset({0}), 100.0)]
    m = mgr(plans, min_throughput_ratio=0.75, miss_chunks=2, recover_chunks=3, cooldown_chunks=1)

    def world(plan: str, i: int) -> tuple[float, Mapping[int, float]]:
        hog = 3 <= i < 12
        load = {0: 0.02, 1: 0.66 if hog else 0.0}
        return (70.0 if hog else 200.0) if plan == "A" else 100.0, load

    assert drive(m, world, 40) == [(4, "A", "B", "targets_missed"), (14, "B", "A", "load_gone")]
    assert m.learned_fps == 200.0  # the median shrugs off the first hogged chunk
    assert [v["helped"] for v in events(m, "verdict")] == [True, True]
