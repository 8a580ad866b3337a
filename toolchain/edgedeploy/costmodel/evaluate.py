"""How good is the cost model: accuracy on held-out layers of the zoo.

Held-out layers are the zoo's conv shapes on the held-out side of the deterministic split
(shapes.is_heldout): the profiler never measures them for fitting. Each held-out layer is measured
with every candidate primitive on one CPU configuration (configurations alternate across layers),
and we report:

* ``mape``: mean |predicted - measured| / measured over all (layer, primitive) rows;
* ``kendall_tau``: rank agreement (tau-b) across one layer's primitives, averaged over layers;
* ``top1_within_10pct``: fraction of layers whose predicted-best primitive measures within 10 %
  of the measured best (what the planner's choice costs in practice).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.costmodel import shapes as shapes_mod
from edgedeploy.costmodel.configs import CoreConfig, core_configs
from edgedeploy.costmodel.model import CostModel
from edgedeploy.costmodel.profile import (
    Profile,
    ProfileError,
    Sample,
    open_profile,
    profile_target,
    read_profile,
)
from edgedeploy.costmodel.profiler import (
    LocalMeasure,
    Measure,
    Progress,
    measurable,
    run_profile,
)
from edgedeploy.schemas.target import Target

DEFAULT_BUDGET_S = 60.0
DEFAULT_HELDOUT_BUDGET_S = 90.0


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two rankings (ties handled; 1.0 for fewer than two items)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2:
        return 1.0
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    denom = np.sqrt((n0 - np.sum(dx == 0)) * (n0 - np.sum(dy == 0)))
    return float(np.sum(dx * dy) / denom) if denom > 0 else 1.0


def kendall_tau_tolerant(pred: Sequence[float], meas: Sequence[float], tol: float = 0.05) -> float:
    """Kendall's tau over the pairs whose measured times differ by more than ``tol``: pairs
    closer than that are within measurement noise (1x1 convs run the same GEMM under every
    primitive), so their order says nothing about the model. 1.0 when no pair qualifies."""
    p, m = np.asarray(pred, float), np.asarray(meas, float)
    i, j = np.triu_indices(len(m), 1)
    keep = np.abs(m[i] - m[j]) > tol * np.minimum(m[i], m[j])
    if not keep.any():
        return 1.0
    return float(np.mean(np.sign(p[i] - p[j])[keep] * np.sign(m[i] - m[j])[keep]))


def metrics(groups: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Accuracy figures over layer groups of (predicted ms, measured ms) per primitive."""
    if not groups:
        return {"mape": float("nan"), "kendall_tau": float("nan"),
                "kendall_tau_beyond_5pct": float("nan"), "top1_within_10pct": float("nan")}
    pred = np.concatenate([g[0] for g in groups])
    meas = np.concatenate([g[1] for g in groups])
    taus = [kendall_tau(p, m) for p, m in groups if len(p) >= 2]
    tols = [kendall_tau_tolerant(p, m) for p, m in groups if len(p) >= 2]
    top1 = [m[int(np.argmin(p))] <= 1.10 * m.min() for p, m in groups]
    return {"mape": float(np.mean(np.abs(pred - meas) / meas)),
            "kendall_tau": float(np.mean(taus)) if taus else 1.0,
            "kendall_tau_beyond_5pct": float(np.mean(tols)) if tols else 1.0,
            "top1_within_10pct": float(np.mean(top1))}


def ensure_fit_sample(target: Target, profile: Profile, budget_s: float | None,
                      measure: Measure, progress: Progress | None = None,
                      shapes: Sequence[Any] | None = None) -> list[Sample]:
    """Profile for ``budget_s`` (or the default when the profile has no fit samples yet)."""
    if budget_s is None and profile.select("fit"):
        return []
    todo = list(shapes) if shapes is not None else shapes_mod.designed_sample()
    done = {(shapes_mod.shape_key(s.descriptor), s.primitive, s.config)
            for s in profile.select("fit")}
    # continue where earlier runs stopped: shapes fully measured move to the end
    fresh = [d for d in todo if not any((shapes_mod.shape_key(d), p, c) in done
                                        for p in measurable(d) for c in core_configs(target))]
    order = fresh + [d for d in todo if d not in fresh]
    new = run_profile(target, order, budget_s or DEFAULT_BUDGET_S, measure, "fit", progress)
    profile.append(new)
    profile.save()
    return new


def measure_heldout(target: Target, profile: Profile, budget_s: float, measure: Measure,
                    progress: Progress | None = None) -> list[Sample]:
    """Held-out samples: reuse the profile's, then measure more layers within ``budget_s``."""
    cfgs = [c for c in core_configs(target) if not c.is_gpu]
    have = {(shapes_mod.shape_key(s.descriptor), s.config) for s in profile.select("heldout")}
    start = time.monotonic()
    new: list[Sample] = []
    for i, d in enumerate(shapes_mod.heldout_shapes()):
        cfg = cfgs[i % len(cfgs)]
        if (shapes_mod.shape_key(d), cfg) in have:
            continue
        if time.monotonic() - start > budget_s:
            break
        group = run_profile(target, [d], float("inf"), measure, "heldout", None, [cfg])
        new.extend(group)
        if progress is not None:
            el = time.monotonic() - start
            progress(el, budget_s, len(new), max(0.0, budget_s - el), f"held-out layer {i}")
    profile.append(new)
    profile.save()
    return new


def _groups(model: CostModel, samples: list[Sample]) -> list[tuple[np.ndarray, np.ndarray]]:
    by_layer: dict[tuple[str, CoreConfig], list[Sample]] = {}
    for s in samples:
        by_layer.setdefault((shapes_mod.shape_key(s.descriptor), s.config), []).append(s)
    out = []
    for group in by_layer.values():
        pred = model.predict([s.descriptor for s in group], [s.primitive for s in group],
                             [s.config for s in group])
        out.append((pred, np.array([s.ms for s in group])))
    return out


def pick_transfer_samples(samples: list[Sample], k: int, seed: int = 0) -> list[Sample]:
    """``k`` samples spread over shapes: one per shape first (seeded order), then more."""
    rng = np.random.default_rng(seed)
    order = [samples[i] for i in rng.permutation(len(samples))]
    seen: set[str] = set()
    first, rest = [], []
    for s in order:
        key = shapes_mod.shape_key(s.descriptor)
        (rest if key in seen else first).append(s)
        seen.add(key)
    return (first + rest)[:k]


def evaluate(target: Target, *, budget_s: float | None = None,
             heldout_budget_s: float = DEFAULT_HELDOUT_BUDGET_S,
             transfer_from: str | Path | None = None, samples: int = 20,
             plot: str | Path | None = None, measure: Measure | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Fit (or transfer), measure held-out layers and report the accuracy figures."""
    if target.simulated is False and target.name != "local" and measure is None:
        raise ProfileError(f"target {target.name!r} cannot be measured from here yet",
                           hint="evaluate on --target local (SSH targets come with the deployer)")
    local = measure is None
    measure = measure or LocalMeasure(target)
    try:
        profile = open_profile(target)
        ensure_fit_sample(target, profile, budget_s, measure, progress)
        heldout_new = measure_heldout(target, profile, heldout_budget_s, measure, progress)
    finally:
        if local:
            measure.close()  # type: ignore[attr-defined]
    fit_samples = profile.select("fit")
    if transfer_from is not None:
        source = read_profile(transfer_from)
        src_model = CostModel.fit(profile_target(source), source.select("fit"),
                                  source=f"profile:{source.digest()[:16]}")
        chosen = pick_transfer_samples(fit_samples, samples)
        model = src_model.transferred(target, chosen)
        untransferred = _groups(CostModel(target, src_model.correction), profile.select("heldout"))
        n_fit = len(chosen)
    else:
        model = CostModel.fit(target, fit_samples, source=f"profile:{profile.digest()[:16]}")
        untransferred = None
        n_fit = len(fit_samples)
    heldout = profile.select("heldout")
    groups = _groups(model, heldout)
    report: dict[str, Any] = {
        "target": target.name, "fingerprint": profile.fingerprint, **metrics(groups),
        "n_fit": n_fit, "n_heldout": int(sum(len(g[0]) for g in groups)),
        "n_heldout_layers": len(groups), "heldout_measured_now": len(heldout_new),
        "by_config": {c.key: metrics(_groups(model, [s for s in heldout if s.config == c]))
                      for c in core_configs(target) if not c.is_gpu},
        "prior_only": metrics(_groups(CostModel(target), heldout)),
        "profile": str(profile.path), "mode": "transfer" if transfer_from else "fit",
    }
    if untransferred is not None:
        report["source_only"] = metrics(untransferred)
        report["transfer_from"] = str(transfer_from)
    if plot is not None:
        report["plot"] = str(write_plot(groups, plot, f"{target.name}: {report['mode']}"))
    return report


def write_plot(groups: list[tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """Predicted vs measured, log-log, with the y = x line and +-15 % band (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = np.concatenate([g[0] for g in groups]) if groups else np.zeros(0)
    meas = np.concatenate([g[1] for g in groups]) if groups else np.zeros(0)
    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=110)
    ax.scatter(meas, pred, s=10, alpha=0.6)
    lo = float(min(meas.min(), pred.min())) * 0.8 if len(meas) else 0.01
    hi = float(max(meas.max(), pred.max())) * 1.25 if len(meas) else 100.0
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=1)
    ax.fill_between(xs, xs * 0.85, xs * 1.15, color="grey", alpha=0.2, label="+-15 %")
    ax.set(xscale="log", yscale="log", xlabel="measured ms", ylabel="predicted ms", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
