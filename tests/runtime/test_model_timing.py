"""Timing two models in alternation (``runtime.model_timing.paired_ms``)."""

from __future__ import annotations

import time

import numpy as np

from edgedeploy.importers.onnx_winograd import ConvSite
from edgedeploy.planner.winograd import in_context
from edgedeploy.runtime import model_timing
from edgedeploy.runtime.affinity import available_cpus, pin_process
from edgedeploy.runtime.engines.onnxruntime import OrtSegment
from edgedeploy.runtime.model_timing import (
    MIN_PAIRS,
    OWN_REPLICA_WINDOWS,
    gained_batches,
    median_ms,
    paired_ms,
    pairs_for,
    replica_windows,
)


def test_paired_timing_reads_each_model_in_the_callers_order() -> None:
    before = available_cpus()
    light = in_context(ConvSite("conv", 16, 16, 28, 28)).SerializeToString()
    heavy = in_context(ConvSite("conv", 16, 256, 28, 28)).SerializeToString()  # 16x the 3x3 work
    x = {"x": np.random.default_rng(0).standard_normal((1, 16, 28, 28)).astype(np.float32)}
    one = before[:1]
    try:
        heavy_ms, light_ms = paired_ms(heavy, light, x, one, pairs=5)
        assert heavy_ms > 2 * light_ms > 0
        light_ms, heavy_ms = paired_ms(light, heavy, x, one, pairs=5)
        assert heavy_ms > 2 * light_ms > 0
        same, again = paired_ms(light, light, x, one, pairs=5)
        assert 0.5 < same / again < 2.0
    finally:
        pin_process(before)  # it leaves the process pinned where it timed, as session_ms does


def test_a_paired_timing_makes_as_many_pairs_as_its_seconds_hold(monkeypatch) -> None:
    # 85 ms a pair (VGG-16's large layers on one core): the least; a 20 ms pair (ResNet-50's
    # layers): the most asked for; never more than asked
    assert pairs_for(0.085, 9) == MIN_PAIRS == 3
    assert pairs_for(0.02, 9) == 9 and pairs_for(0.07, 9) == 4 and pairs_for(0.02, 2) == 2
    calls = []
    real = OrtSegment.run

    def counted(self, feeds):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(self, feeds)

    monkeypatch.setattr(OrtSegment, "run", counted)
    light = in_context(ConvSite("conv", 16, 16, 28, 28)).SerializeToString()
    x = {"x": np.random.default_rng(0).standard_normal((1, 16, 28, 28)).astype(np.float32)}
    before = available_cpus()
    try:
        for seconds, pairs in ((1e-9, MIN_PAIRS), (1e9, 9)):
            monkeypatch.setattr(model_timing, "PAIRED_S", seconds)
            calls.clear()
            paired_ms(light, light, x, before[:1], pairs=9)
            assert len(calls) == 2 + 2 * pairs  # the two warm-ups, then the pairs
    finally:
        pin_process(before)


def test_replicas_are_timed_at_the_batches_one_core_gained_from_or_all_where_windows_are_short(
        ) -> None:
    per_frame = {"2": 0.99, "4": 0.90}  # ms a frame at 2 and 4 frames a call; 1.0 at one
    assert gained_batches(per_frame, 1.0, 1.05) == [(4, 0.90)]
    # two replicas of a 1 ms frame fill a window's 0.5 s with 1,000 frames: every batch
    assert gained_batches(per_frame, 1.0, 1.05, replicas=2) == [(2, 0.99), (4, 0.90)]
    # ... where those of a 100 ms frame need the 40-frame floor (2 s): the gained ones only
    assert gained_batches({"2": 99.0, "4": 90.0}, 100.0, 1.05, replicas=2) == [(4, 90.0)]
    assert gained_batches({"2": 0.0, "4": 0.9}, 1.0, 1.05, replicas=2) == [(4, 0.9)]


def test_a_timing_with_a_floor_in_seconds_makes_as_many_calls_as_it_holds() -> None:
    calls: list[float] = []

    def call() -> None:
        t0 = time.perf_counter()
        time.sleep(0.001)
        calls.append(time.perf_counter() - t0)

    median_ms(call, reps=3)
    assert len(calls) == 1 + 3  # the warm-up, then the calls asked for
    calls.clear()
    ms = median_ms(call, reps=3, min_s=0.05)
    # after the warm-up, calls until their time holds the floor, and not one more (a loaded
    # host stretches a 1 ms sleep, so their count is not fixed)
    timed = calls[1:]
    assert len(timed) > 3 and ms >= 1.0
    assert sum(timed) >= 0.05 * 0.9 and sum(timed[:-1]) < 0.05


def test_a_timing_of_long_calls_makes_fewer_of_them_but_never_fewer_than_three(
        monkeypatch) -> None:
    monkeypatch.setattr(model_timing, "TIMING_SPAN_S", 0.5)
    calls: list[float] = []

    def call(sleep_s: float) -> None:
        calls.append(sleep_s)
        time.sleep(sleep_s)

    median_ms(lambda: call(0.0005), reps=7)
    assert len(calls) == 1 + 7  # short calls: every one asked for
    calls.clear()
    median_ms(lambda: call(0.25), reps=7)  # seven would span 1.75 s: three, at least
    assert len(calls) == 1 + 3
    calls.clear()
    median_ms(lambda: call(0.25), reps=2)  # and never more than asked for
    assert len(calls) == 1 + 2


def test_long_replica_windows_are_taken_fewer_times() -> None:
    # two replicas of a 100 ms frame: 12 frames, 0.6 s a window -> three
    assert replica_windows(OWN_REPLICA_WINDOWS, 100.0, 2) == 3
    # of a 1 s frame (VGG-16 on one core): 6 s a window averages a burst by itself -> one
    assert replica_windows(OWN_REPLICA_WINDOWS, 1000.0, 2) == 1
    # of 200 ms, two (1.2 s a window), and never more than asked for
    assert replica_windows(OWN_REPLICA_WINDOWS, 200.0, 2) == 2
    assert replica_windows(1, 100.0, 2) == 1
    # four frames a call: three periods of eight frames at least -> longer windows
    assert replica_windows(OWN_REPLICA_WINDOWS, 100.0, 2, batch=4) == 2
    assert replica_windows(OWN_REPLICA_WINDOWS, 0.0, 2) == OWN_REPLICA_WINDOWS  # unknown


def test_a_paired_timing_keeps_each_sessions_idle_threads_from_spinning(monkeypatch) -> None:
    # with spinning, the threads of the session that just ran hold the cores the other's call
    # needs: on two cores, both forms of a convolution read about twice their time alone
    from edgedeploy.runtime.engines.onnxruntime import SPINNING_KEY

    opened: list[OrtSegment] = []
    real = OrtSegment.__init__

    def recorded(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(OrtSegment, "__init__", recorded)
    light = in_context(ConvSite("conv", 16, 16, 28, 28)).SerializeToString()
    x = {"x": np.random.default_rng(0).standard_normal((1, 16, 28, 28)).astype(np.float32)}
    before = available_cpus()
    try:
        paired_ms(light, light, x, before[:2], pairs=3)
    finally:
        pin_process(before)
    assert len(opened) == 2
    assert all(s.options.get_session_config_entry(SPINNING_KEY) == "0" for s in opened)
