"""The planner: primitive selection, pipeline mapping, Pareto set, baselines, plan lockfile.

Library entry points: :func:`plan` and :func:`check` (what ``edgedeploy plan`` calls), and
:func:`solve_problem` on an explicit :class:`Problem` (cost-model agnostic).
"""

from __future__ import annotations

from edgedeploy.planner.api import PlanResult, check, plan
from edgedeploy.planner.partition import Limits
from edgedeploy.planner.problem import Problem
from edgedeploy.planner.solve import Solution, solve_problem

__all__ = ["Limits", "PlanResult", "Problem", "Solution", "check", "plan", "solve_problem"]
