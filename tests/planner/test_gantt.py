"""The Gantt schedule draws replicated stages at their real per-replica time, one row per
replica, with no replica doing two frames at once."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.planner.report import schedule

stage = st.fixed_dictionaries({"predicted_ms": st.floats(0.1, 50), "replicas": st.integers(1, 4)})


@given(st.lists(stage, min_size=1, max_size=4), st.integers(1, 12))
def test_every_frame_runs_once_per_stage_in_order_without_overlap(stages, frames) -> None:
    period = max(s["predicted_ms"] / s["replicas"] for s in stages)
    bars = schedule(stages, period, frames)
    assert len(bars) == len(stages) * frames
    for k, s in enumerate(stages):
        mine = [b for b in bars if b[0] == k]
        assert all(b[4] == s["predicted_ms"] for b in mine)  # the per-replica time, not /r
        assert {b[1] for b in mine} == set(range(min(s["replicas"], frames)))
        for r in range(s["replicas"]):
            row = sorted((b[3], b[3] + b[4]) for b in mine if b[1] == r)
            assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(row))
    for f in range(frames):  # a frame goes through the stages in order
        path = sorted((b for b in bars if b[2] == f), key=lambda b: b[0])
        assert all(a[3] + a[4] <= b[3] + 1e-9 for a, b in itertools.pairwise(path))


def test_two_replicas_overlap_frames_the_way_the_runner_does() -> None:
    bars = schedule([{"predicted_ms": 10.0, "replicas": 2}], 5.0, 4)
    assert [(r, f, start) for _, r, f, start, _ in bars] == [
        (0, 0, 0.0), (1, 1, 5.0), (0, 2, 10.0), (1, 3, 15.0)]
