"""``refine score``: refinement quality on every twin x zoo model against the exhaustive optimum.

The optimum (see :meth:`GroundTruth.optimum`) is the best *true* throughput (noise- and
drift-free ground truth) over every configuration with <= ``max_stages`` stages (default 3):
every cut point, every (cluster, cores, replicas) per stage with disjoint cores, and per layer
the primitive fastest on its stage's unit. Searches run with the same ``max_stages`` so they
search the same space; every method gets the same budget of measured evaluations on a fresh twin
(same seed). Metrics, computed from the true throughput of what each method *measured*:

* ``near_optimal_fraction``: share of the measured configurations within 10 % of the optimum
  (Soomro et al.'s 79 % anchor);
* ``evals_to_95pct``: evaluations until a measured configuration is truly >= 95 % of the
  optimum (None: not within the budget);
* ``final_vs_plan``: true throughput of the returned configuration over the plan's.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedeploy.refine.baselines import BASELINES
from edgedeploy.refine.cache import MeasureCache
from edgedeploy.refine.measure import RunnerBackend
from edgedeploy.refine.search import Budget, SearchResult, guided_search

METHODS = ("guided", *BASELINES)
PROFILE_S = 60.0
_PROFILES: dict[tuple, list] = {}


def twin_profile(board: str, seed: int = 0, budget_s: float = PROFILE_S, graph=None) -> list:
    """The short simulated profile every method's plan starts from: the model's own layer
    shapes first (``edgedeploy profile --model``), then the designed sample; memoised."""
    from edgedeploy.twins import twin_target
    from edgedeploy.twins.profile import model_shapes, profile_twin, twin_shapes

    key = (board, seed, budget_s, graph.name if graph is not None else "")
    if key not in _PROFILES:
        first = model_shapes(graph) if graph is not None else []
        _PROFILES[key] = profile_twin(twin_target(board), budget_s, seed=seed,
                                      shapes=first + twin_shapes("designed"))
    return _PROFILES[key]


def _plan(graph, tgt, model, limits):
    from edgedeploy.planner.solve import solve_problem
    from edgedeploy.refine.setup import build_context, seeds_from_solution

    ctx = build_context(graph, tgt, limits=limits, model=model)
    return ctx, seeds_from_solution(ctx, solve_problem(ctx.problem, "throughput", limits))


def score_one(board: str, model: str, *, size: int = 96, budget: int = 30, seed: int = 0,
              max_stages: int = 3, frames: int = 30,
              profile_s: float = PROFILE_S) -> dict[str, Any]:
    """One twin x one zoo model: short profile -> plan -> every method from that plan."""
    from edgedeploy import zoo
    from edgedeploy.costmodel import CostModel
    from edgedeploy.importers import load_model
    from edgedeploy.planner.partition import Limits
    from edgedeploy.refine.guide import Guide
    from edgedeploy.twins import TwinDevice, twin_target

    info = zoo.get(model)
    size = max(size, info.min_size)
    size += (-size) % info.size_multiple
    with tempfile.TemporaryDirectory() as tmp:
        path = zoo.export(model, Path(tmp) / f"{model}.onnx", size=size)
        graph = load_model(path)
    tgt = twin_target(board)
    limits = Limits(max_stages=max_stages)
    samples = twin_profile(board, seed, profile_s, graph) if profile_s > 0 else []
    calibrated = CostModel.fit(tgt, samples, source=f"twin-profile:{profile_s:g}s")
    _pctx, prior_seeds = _plan(graph, tgt, CostModel(tgt), limits)
    ctx, seeds = _plan(graph, tgt, calibrated, limits)
    truth = TwinDevice(tgt, graph, seed).truth
    opt = float(truth.optimum(max_stages)["throughput_fps"])

    def true(c) -> float:
        return float(truth.pipeline(c.as_tuples(), c.choices)["throughput_fps"])

    plan_true = true(seeds[0])
    row: dict[str, Any] = {
        "board": board, "model": model, "size": size, "layers": len(graph.layers),
        "optimum_fps": opt, "plan_fps": plan_true, "plan_vs_optimum": plan_true / opt,
        "plan_prior_vs_optimum": true(prior_seeds[0]) / opt,
        "profile": {"simulated_s": profile_s, "samples": len(samples),
                    "model": calibrated.source},
        "simulated": True, "start": "calibrated plan (same for every method)", "methods": {}}
    for name in METHODS:
        device = TwinDevice(tgt, graph, seed)
        cache = MeasureCache(RunnerBackend(ctx.space, device.run, simulated=True), frames, 3)
        b = Budget(budget, float("inf"))
        if name == "guided":
            res = guided_search(seeds, ctx.space, cache, budget=b, seed=seed,
                                guide=Guide(ctx))
        else:
            res = BASELINES[name](ctx.space, cache, seeds[0].choices, budget=b, seed=seed,
                                  start=seeds[0])
        row["methods"][name] = _metrics(res, true, opt, plan_true)
    return row


def _metrics(res: SearchResult, true: Callable, opt: float, plan_true: float) -> dict[str, Any]:
    vals = [true(r.cand) / opt for r in res.records]
    tested = {r.cand.key: true(r.cand) / opt for r in res.records}
    e95 = next((k + 1 for k, v in enumerate(vals) if v >= 0.95), None)
    curve, best = [], 0.0
    for v in vals:
        best = max(best, v)
        curve.append(best)
    return {"near_optimal_fraction": sum(v >= 0.9 for v in tested.values()) / max(1, len(tested)),
            "evals_to_95pct": e95, "final_vs_plan": true(res.best[0]) / plan_true,
            "final_vs_optimum": true(res.best[0]) / opt, "evaluations": res.evaluations,
            "curve": curve}


def score(boards: list[str], models: list[str], *, size: int = 96, budget: int = 30,
          seed: int = 0, max_stages: int = 3, profile_s: float = PROFILE_S,
          on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    rows = []
    for b in boards:
        for m in models:
            row = score_one(b, m, size=size, budget=budget, seed=seed, max_stages=max_stages,
                            profile_s=profile_s)
            rows.append(row)
            if on_row:
                on_row(row)
    return {"simulated": True, "budget": budget, "size": size, "max_stages": max_stages,
            "rows": rows, "summary": summarize(rows, budget)}


def summarize(rows: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Per method: mean near-optimal fraction, median evals-to-95 % (unreached = budget + 1,
    reported as a lower bound), reach rate, mean final/plan; plus the targets' verdicts."""
    out: dict[str, Any] = {}
    for name in METHODS:
        ms = [r["methods"][name] for r in rows]
        e = [m["evals_to_95pct"] if m["evals_to_95pct"] is not None else budget + 1 for m in ms]
        out[name] = {"near_optimal_fraction": statistics.mean(m["near_optimal_fraction"]
                                                              for m in ms),
                     "evals_to_95pct_median": statistics.median(e),
                     "reached_95pct": sum(m["evals_to_95pct"] is not None for m in ms) / len(ms),
                     "final_vs_plan": statistics.mean(m["final_vs_plan"] for m in ms),
                     "final_vs_optimum": statistics.mean(m["final_vs_optimum"] for m in ms)}
    g = out["guided"]
    best_base = min(out[n]["evals_to_95pct_median"] for n in BASELINES)
    out["targets"] = {"near_optimal_fraction>=0.85": g["near_optimal_fraction"] >= 0.85,
                      "evals_to_95pct<=30": g["evals_to_95pct_median"] <= 30,
                      "5x_fewer_than_best_baseline":
                          best_base >= 5 * g["evals_to_95pct_median"],
                      "speedup_vs_best_baseline_lower_bound":
                          best_base / max(1, g["evals_to_95pct_median"])}
    return out


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Convergence plot: best true throughput / optimum vs evaluations, mean over rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in METHODS:
        curves = [r["methods"][name]["curve"] for r in result["rows"]]
        n = max(len(c) for c in curves)
        arr = np.array([c + [c[-1]] * (n - len(c)) for c in curves])
        ax.plot(np.arange(1, n + 1), arr.mean(axis=0), label=name)
    ax.axhline(0.95, ls="--", c="grey", lw=0.8)
    ax.set_xlabel("measured evaluations")
    ax.set_ylabel("best true throughput / optimum")
    ax.set_title("refinement convergence on board twins (simulated)")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
