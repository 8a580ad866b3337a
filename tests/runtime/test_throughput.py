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
