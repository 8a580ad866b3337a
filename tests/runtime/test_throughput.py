"""The runtime's steady-state throughput of a run: (frames - 1) over first-to-last completion
when frames complete one by one, and whole completion groups (a micro-batching stage hands back
its batch at once) counted as they took, not as if the first group came free."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.runtime.metrics import FIRST_COMPLETIONS, throughput_fps


@given(st.integers(2, 300), st.floats(1e-4, 1.0), st.floats(0.0, 10.0))
def test_one_by_one_completions_give_frames_minus_one_over_first_to_last(n, period, t0):
    done = t0 + period * np.arange(n)
    got = throughput_fps(list(done[:FIRST_COMPLETIONS]), float(done[-1]), n, 1.0)
    assert abs(got * period - 1) < 1e-6  # (n - 1) intervals of one period each


@given(st.integers(2, 8), st.integers(2, 40), st.floats(1e-3, 0.5))
def test_grouped_completions_give_the_true_rate(batch, groups, period):
    """``groups`` batches of ``batch`` frames, one batch every ``period`` s, each batch's frames
    microseconds apart: the rate is batch / period, not inflated by the first batch."""
    done = np.array([g * period + k * 1e-6 for g in range(groups) for k in range(batch)])
    got = throughput_fps(list(done[:FIRST_COMPLETIONS]), float(done[-1]), len(done), 1.0)
    assert abs(got - batch / period) / (batch / period) < 1e-3
    naive = (len(done) - 1) / (done[-1] - done[0])
    assert naive > got  # what counting the first batch as free would have said


def test_a_run_too_short_to_tell_is_frames_over_wall():
    assert throughput_fps([1.0], 1.0, 1, 0.5) == 2.0
    assert throughput_fps([1.0, 1.0], 1.0, 2, 0.0) == 0.0


@given(st.integers(1, 4), st.integers(1, 8), st.integers(0, 15), st.integers(3, 30),
       st.floats(1e-3, 0.5))
def test_a_run_of_replicas_batching_frames_is_timed_over_whole_periods(
        replicas, batch, shift, periods, period_s):
    """``replicas`` replicas batching ``batch`` frames hand back a period of replicas x batch
    frames every ``period_s``, in bursts a few milliseconds apart (two ResNet-50 replicas of
    four: 1 + 7, 4 + 4); wherever the pattern starts, the run's rate is the period's."""
    from edgedeploy.runtime.metrics import RunRecord

    period = replicas * batch
    offsets = np.zeros(period)
    offsets[np.arange(period) % batch == 0] = np.arange(replicas) * 0.01 * period_s
    done = np.sort((np.arange(periods + 1)[:, None] * period_s + offsets[None, :]).ravel())
    done = done[shift % period:]  # the run starts anywhere in the pattern
    record = RunRecord(period=period)
    for t in done:
        record.add(float(done[0]) - 1.0, float(t))
    got = record.result([], None).throughput_fps
    if period == 1:
        return  # one by one: the test above
    assert abs(got - period / period_s) / (period / period_s) < 1e-6, (got, period / period_s)
