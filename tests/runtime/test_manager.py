"""The runtime manager: decisions on synthetic chunk sequences, the /proc load reader on a fake
/proc tree and on the real one, config defaults, the status renderer, and (slow) the demo on this
host: a CPU hog on core 1 mid-run makes the runner leave core 1 and come back after."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy.deploy.status import StatusError, read_status, render_status, timeline_rows
from edgedeploy.runtime.cpuload import CoreLoad
from edgedeploy.runtime.manager import (
    ManagerSettings,
    Observation,
    PlanView,
    RuntimeManager,
    settings_from_config,
)
from edgedeploy.runtime.runner_config import BundleConfigError

PLANS = [PlanView("A", frozenset({0, 1}), 200.0, 20.0), PlanView("B", frozenset({0}), 100.0, 10.0),
         PlanView("C", frozenset({1}), 100.0, 10.0)]
FREE = {0: 0.0, 1: 0.0}
HOG1 = {0: 0.02, 1: 0.66}


def manager(**kw: object) -> RuntimeManager:
    s = ManagerSettings(enabled=True, **{"min_throughput_fps": 150.0, **kw})  # type: ignore[arg-type]
    return RuntimeManager(s, PLANS, "A")


def feed(m: RuntimeManager, chunks: list[tuple[str, float, dict[int, float] | None]]
         ) -> list[dict | None]:
    """Feed (plan, fps, foreign load) chunks; the caller follows decisions by naming the plan."""
    return [m.observe(Observation(plan, fps, 10.0, load)) for plan, fps, load in chunks]


def test_the_first_chunk_of_a_plan_is_ignored_and_cooldown_counts_nothing() -> None:
    m = manager(miss_chunks=2, cooldown_chunks=2)
    out = feed(m, [("A", 50.0, HOG1)] * 4)
    assert out == [None, None, None, None]  # start-up chunk, 2 cooldown chunks, then 1 miss
    assert m.miss_streak == 1
    assert feed(m, [("A", 50.0, HOG1)])[0]["to"] == "B"


def test_a_single_missed_chunk_does_not_switch_hysteresis() -> None:
    m = manager(miss_chunks=3, cooldown_chunks=1)
    seq = [("A", 200.0, FREE)] * 2 + [("A", 60.0, HOG1), ("A", 60.0, HOG1), ("A", 190.0, FREE),
                                      ("A", 60.0, HOG1), ("A", 60.0, HOG1)]
    assert all(d is None for d in feed(m, seq))
    decision = feed(m, [("A", 60.0, HOG1)])[0]
    assert decision is not None and decision["to"] == "B"


def test_switches_to_the_plan_that_avoids_the_loaded_core_with_reason_and_figures() -> None:
    m = manager(miss_chunks=2, cooldown_chunks=1)
    out = feed(m, [("A", 210.0, FREE), ("A", 210.0, FREE), ("A", 210.0, FREE),
                   ("A", 70.0, HOG1), ("A", 70.0, HOG1)])
    d = out[-1]
    assert d is not None and d["to"] == "B" and d["trigger"] == "targets_missed"
    assert "throughput 70.0 < 150 fps" in d["reason"] and "loaded cores 1" in d["reason"]
    assert d["measured"]["throughput_fps"] == 70.0
    assert d["measured"]["core_foreign_load"] == {"0": 0.02, "1": 0.66}
    # B's nominal comes from its prediction calibrated by A's measured/predicted ratio (210/200)
    assert d["expected"]["throughput_fps"] == pytest.approx(100.0 * 210 / 200 * 0.98, rel=1e-3)


def test_the_best_plan_follows_which_core_is_loaded() -> None:
    m = manager()
    assert m.best({0: 0.0, 1: 0.9}, exclude="A") == "B"
    assert m.best({0: 0.9, 1: 0.0}, exclude="A") == "C"
    assert m.best(FREE) == "A"


def test_ranking_by_latency_prefers_the_lowest_expected_latency() -> None:
    plans = [PlanView("A", frozenset({0, 1}), 200.0, 20.0),
             PlanView("fast", frozenset({0}), 150.0, 30.0),
             PlanView("short", frozenset({0}), 90.0, 8.0)]
    m = RuntimeManager(ManagerSettings(enabled=True, max_latency_ms=10.0), plans, "A")
    assert m.best(HOG1, exclude="A", by="latency") == "short"
    assert m.best(HOG1, exclude="A", by="fps") == "short"  # the only feasible one wins
    m2 = RuntimeManager(ManagerSettings(enabled=True, max_latency_ms=1.0), plans, "A")
    assert m2.best(HOG1, exclude="A", by="fps") == "fast"  # none feasible: best figure


def test_no_switch_when_no_plan_is_expected_to_do_better() -> None:
    m = manager(miss_chunks=1, cooldown_chunks=1)
    both = {0: 0.7, 1: 0.7}  # every plan shares a loaded core: nothing beats what A measures
    assert all(d is None for d in feed(m, [("A", 200.0, FREE)] * 2 + [("A", 70.0, both)] * 5))


def test_targets_met_means_no_switch_even_under_load() -> None:
    m = manager(miss_chunks=1, cooldown_chunks=1, min_throughput_fps=50.0)
    assert all(d is None for d in feed(m, [("A", 200.0, FREE)] * 2 + [("A", 70.0, HOG1)] * 6))


def test_a_latency_target_picks_the_lower_latency_plan() -> None:
    m = RuntimeManager(ManagerSettings(enabled=True, max_latency_ms=15.0, miss_chunks=1,
                                       cooldown_chunks=1), PLANS, "A")
    feed(m, [("A", 200.0, FREE)] * 2)
    d = m.observe(Observation("A", 190.0, 40.0, HOG1))
    assert d is not None and d["to"] == "B" and "latency p99 40.0 > 15 ms" in d["reason"]


def test_switches_back_home_once_the_load_is_gone_for_k_chunks() -> None:
    m = manager(miss_chunks=2, recover_chunks=3, cooldown_chunks=1)
    feed(m, [("A", 200.0, FREE)] * 3 + [("A", 70.0, HOG1)] * 2)
    on_b = [("B", 100.0, {0: 0.0, 1: 1.0})] * 4  # B runs; core 1 still hogged: stay
    assert all(d is None for d in feed(m, on_b))
    flicker = [("B", 100.0, FREE), ("B", 100.0, FREE), ("B", 100.0, {0: 0.0, 1: 0.5})]
    assert all(d is None for d in feed(m, flicker))  # a free spell shorter than K: stay
    out = feed(m, [("B", 100.0, FREE)] * 3)
    assert out[:2] == [None, None]
    d = out[2]
    assert d is not None and d["to"] == "A" and d["trigger"] == "load_gone"
    assert "load gone from cores 0,1 over the last 3 chunks" in d["reason"]
    assert d["expected"]["throughput_fps"] == pytest.approx(200.0)  # A's measured figure


def test_switches_back_when_the_target_is_met_on_the_fallback_too() -> None:
    m = manager(miss_chunks=1, recover_chunks=2, cooldown_chunks=1, min_throughput_fps=90.0)
    feed(m, [("A", 200.0, FREE)] * 3)
    assert feed(m, [("A", 70.0, HOG1)])[0]["to"] == "B"
    assert feed(m, [("B", 100.0, HOG1)] * 3) == [None] * 3  # B meets 90 fps; core 1 loaded
    assert feed(m, [("B", 100.0, FREE)] * 2)[1]["to"] == "A"


def test_an_even_background_load_does_not_keep_the_fallback_forever() -> None:
    m = manager(miss_chunks=1, recover_chunks=2, cooldown_chunks=1)
    feed(m, [("A", 200.0, FREE)] * 3)
    assert feed(m, [("A", 40.0, {0: 0.0, 1: 0.8})])[0]["to"] == "B"
    even = {0: 0.4, 1: 0.4}  # the hog left, others load both cores: A still does better
    out = feed(m, [("B", 60.0, even)] * 4)
    assert any(d is not None and d["to"] == "A" and "load eased" in d["reason"] for d in out)


def test_back_home_the_manager_settles_before_deciding_again() -> None:
    m = manager(miss_chunks=1, recover_chunks=1, cooldown_chunks=2)
    feed(m, [("A", 200.0, FREE)] * 3)
    assert feed(m, [("A", 70.0, HOG1)])[0]["to"] == "B"
    out = feed(m, [("B", 100.0, FREE)] * 4)
    assert out == [None, None, None, out[3]] and out[3]["to"] == "A"
    assert all(d is None for d in feed(m, [("A", 200.0, FREE)] * 6))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.floats(0, 400),
                          st.one_of(st.none(), st.fixed_dictionaries(
                              {0: st.floats(0, 1), 1: st.floats(0, 1)}))), max_size=40),
       st.integers(1, 4), st.integers(1, 4))
def test_decisions_always_name_another_runnable_plan_and_respect_hysteresis(
        chunks: list, k: int, cool: int) -> None:
    m = manager(miss_chunks=k, recover_chunks=k, cooldown_chunks=cool)
    since_change, last = 0, None
    for plan, fps, load in chunks:
        since_change = since_change + 1 if plan == last else 0
        last = plan
        d = m.observe(Observation(plan, fps, 10.0, load))
        if d is not None:
            assert d["to"] in {"A", "B", "C"} and d["to"] != plan
            assert since_change >= cool + k  # start-up chunk + cooldown + K chunks in a row
            assert d["reason"]


def test_plans_on_cores_this_process_may_not_use_are_never_candidates() -> None:
    from edgedeploy.runtime.manager import plan_views
    from edgedeploy.runtime.runner_config import parse_plan

    class Cfg:
        def __init__(self) -> None:
            self.plans = {
                "wide": parse_plan("wide", {"stages": [{"start": 0, "stop": 1, "cpus": [0, 7]}]}),
                "any": parse_plan("any", {"stages": [{"start": 0, "stop": 1}]})}

    views = plan_views(Cfg(), [0, 1])  # type: ignore[arg-type]
    assert [(v.name, sorted(v.cores)) for v in views] == [("any", [0, 1])]


# --- config --------------------------------------------------------------------------------------
def test_manager_is_on_by_default_only_with_two_plans_and_a_target() -> None:
    two = {"plans": {"a": {}, "b": {}}}
    assert settings_from_config({**two, "targets": {"min_throughput_fps": 10}}).enabled
    assert not settings_from_config(two).enabled
    assert not settings_from_config({"plans": {"a": {}}, "targets": {"max_latency_ms": 5}}).enabled
    off = settings_from_config({**two, "targets": {"min_throughput_fps": 10}, "manager": False})
    assert not off.enabled
    s = settings_from_config({**two, "manager": {"enabled": True, "miss_chunks": 5,
                                                 "targets": {"max_latency_ms": 9}}})
    assert s.enabled and s.miss_chunks == 5 and s.max_latency_ms == 9.0


@pytest.mark.parametrize("block", [{"miss_chunk": 3}, {"miss_chunks": 0}, {"margin": "x"}])
def test_bad_manager_settings_are_clean_bundle_errors(block: dict) -> None:
    with pytest.raises(BundleConfigError):
        settings_from_config({"plans": {}, "manager": block})


# --- /proc ---------------------------------------------------------------------------------------
def _fake_proc(root: Path, cores: list[tuple[int, int]], threads: dict[int, tuple[int, int]]
               ) -> None:
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{c} {busy} 0 0 {idle} 0 0 0 0 0 0" for c, (busy, idle) in enumerate(cores)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text("\n".join(lines) + "\n")
    for tid, (ticks, core) in threads.items():
        d = root / "42" / "task" / str(tid)
        d.mkdir(parents=True, exist_ok=True)
        rest = ["S"] + ["0"] * 10 + [str(ticks), "0"] + ["0"] * 23 + [str(core)] + ["0"] * 10
        (d / "stat").write_text(f"{tid} (py (x) thread) " + " ".join(rest) + "\n")


def test_foreign_load_is_busy_time_minus_our_threads_time_per_core(tmp_path: Path) -> None:
    load = CoreLoad(tmp_path)
    _fake_proc(tmp_path, [(1000, 1000), (1000, 1000)], {1: (500, 0), 2: (300, 1)})
    assert load.sample([42]) is None  # first call: no interval yet
    # 100 ticks pass on each core; ours: 90 on core 0, 45 on core 1; core 1 fully busy
    _fake_proc(tmp_path, [(1090, 1010), (1100, 1000)], {1: (590, 0), 2: (345, 1)})
    got = load.sample([42])
    assert got == pytest.approx({0: 0.0, 1: 0.55})


def test_the_real_proc_sees_a_busy_loop_pinned_to_a_core() -> None:
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux and 2 cores")
    import subprocess
    import time

    core = max(os.sched_getaffinity(0))
    load = CoreLoad()
    load.sample([os.getpid()])
    hog = subprocess.Popen([sys.executable, "-c", "import os, time\n"
                            f"os.sched_setaffinity(0, {{{core}}})\n"
                            "t = time.time() + 1.5\nwhile time.time() < t: pass"])
    try:
        time.sleep(1.0)
        got = load.sample([os.getpid()])
    finally:
        hog.wait(10)
    assert got is not None and got[core] > 0.5  # the hog is not ours: foreign


# --- status rendering -----------------------------------------------------------------------------
STATUS = {"pid": 7, "name": "demo", "state": "running", "active": "B", "plans": ["A", "B"],
          "frames": 900, "started": 1000.0, "throughput_fps": 95.0, "latency_ms_p50": 30.0,
          "latency_ms_p99": 41.0, "stages": [{"name": "stage0", "cpus": [0], "replicas": 1,
                                              "service_ms_p50": 9.5, "utilisation": 0.97}],
          "manager": {"enabled": True, "home": "A", "targets": {"min_throughput_fps": 150.0,
                                                                 "max_latency_ms": None},
                      "core_foreign_load": {"0": 0.01, "1": 0.98}, "loaded_cores": [1]},
          "switches": [{"t": 1004.25, "from": "A", "to": "B", "at_frame": 700,
                        "trigger": "targets_missed", "reason": "targets missed for 3 chunks",
                        "measured": {"throughput_fps": 70.0, "latency_ms_p99": 60.0,
                                     "core_foreign_load": {"0": 0.02, "1": 0.66}}}]}


def test_status_renders_state_manager_view_and_the_switch_timeline(tmp_path: Path) -> None:
    path = tmp_path / "runner.status.json"
    path.write_text(json.dumps(STATUS))
    data = read_status(path)
    assert data == read_status(json.dumps(STATUS))
    rows = dict((k, v) for k, v in render_status(data))
    assert rows["active plan"] == "B" and rows["throughput"] == "95.0 fps"
    assert "home plan A" in rows["manager"] and "min_throughput_fps 150" in rows["manager"]
    assert rows["core load (others)"].startswith("c0=0.01 c1=0.98")
    assert "A -> B at frame 700" in rows["switch 1"] and "(+4.2 s)" in rows["switch 1"]
    assert "70.0 fps, p99 60.0 ms, load c0=0.02 c1=0.66" in rows["switch 1"]
    (row,) = timeline_rows(data)
    assert row[3:7] == ["A", "B", "700", "targets_missed"]


def test_an_old_status_without_manager_or_timeline_still_renders() -> None:
    rows = dict(render_status(read_status('{"state": "finished", "active": "plan0"}')))
    assert rows["manager"] == "off" and rows["switches"] == "0"


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", '{"state": "x"}'])
def test_a_broken_status_is_a_clean_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(StatusError):
        read_status(path)


def test_a_missing_status_file_says_the_runner_may_not_be_started(tmp_path: Path) -> None:
    with pytest.raises(StatusError, match="no status file"):
        read_status(tmp_path / "nope.json")


# --- the demo on this host -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.serial  # it reads the load of cores 0 and 1: another test process would skew it
@pytest.mark.timeout(90)
def test_demo_a_hog_on_core_1_moves_the_runner_off_core_1_and_back(tmp_path: Path) -> None:
    from tests.runtime.manager_demo import others_on_core0, run_demo

    from edgedeploy.runtime.affinity import available_cpus

    if not {0, 1} <= set(available_cpus()) or not hasattr(os, "sched_setaffinity"):
        pytest.skip("the demo needs Linux cores 0 and 1")
    result = run_demo(tmp_path)
    assert result["returncode"] == 0, result["stderr"]
    status, marks = result["status"], result["marks"]
    switches = status["switches"]
    if len(switches) < 2 and others_on_core0(result) > 0.5:
        pytest.skip("other processes loaded core 0 (the fallback's core) during the demo: "
                    f"{result['trace']}")
    assert [(s["from"], s["to"]) for s in switches[:2]] == [("A", "B"), ("B", "A")], result
    away, back = switches[:2]
    assert away["trigger"] == "targets_missed" and away["t"] > marks["hog_start"]
    assert away["measured"]["core_foreign_load"]["1"] >= 0.3  # the hog was seen on core 1
    assert back["trigger"] == "load_gone" and back["t"] > marks["hog_stop"]
    assert 0 < away["at_frame"] < back["at_frame"] <= status["frames"]
    rows = dict(render_status(read_status(tmp_path / "state" / "runner.status.json")))
    assert "A -> B" in rows["switch 1"] and "B -> A" in rows["switch 2"]
