"""Benchmark (make bench): the full refinement score on every twin x zoo model (size 96).

Asserts the issue's targets; they are not all met yet (see the lead's report), so this is the
place that says so when it fails.
"""

from __future__ import annotations

import pytest

from edgedeploy import zoo
from edgedeploy.boards.catalog import list_targets
from edgedeploy.refine.score import score


@pytest.mark.slow
def test_full_refinement_score_meets_the_targets(tmp_path):
    boards = [b for b in list_targets() if b != "local"]
    res = score(boards, zoo.list_models(), size=96, budget=30)
    t = res["summary"]["targets"]
    assert t["near_optimal_fraction>=0.85"], res["summary"]
    assert t["evals_to_95pct<=30"], res["summary"]
    assert t["5x_fewer_than_best_baseline"], res["summary"]
