"""A reduced score run: one twin x one small model, every method from the same calibrated plan.

The optimum is an exhaustive enumeration of the twin's hidden ground truth; the plan comes from
the cost model calibrated on a short simulated profile of the twin. The guided search must never
end below the plan and must end at least as close to the optimum as the median baseline with the
same budget and start, and with most of what it tested near the optimum.
"""

from __future__ import annotations

import statistics

from edgedeploy.refine.score import score_one


def test_reduced_score_on_one_twin_meets_the_sanity_bar():
    row = score_one("rpi4", "squeezenet1_1", size=64, budget=15)
    g = row["methods"]["guided"]
    assert row["simulated"] is True and 0 < row["plan_vs_optimum"] <= 1.0 + 1e-9
    assert row["plan_vs_optimum"] > row["plan_prior_vs_optimum"]  # the profile helped the plan
    assert row["profile"]["samples"] > 50
    assert g["final_vs_plan"] >= 1.0
    base = statistics.median(row["methods"][m]["final_vs_optimum"]
                             for m in ("random", "hill_climbing", "simulated_annealing"))
    assert g["final_vs_optimum"] >= base
    assert g["near_optimal_fraction"] >= max(row["methods"][m]["near_optimal_fraction"]
                                             for m in ("random", "simulated_annealing"))
