"""Calibration: a learned multiplicative correction on top of the prior, and its transfer.

We fit ``log(measured / prior)`` as a linear function of the features (features.py) with ridge
regression solved in closed form by numpy, made robust to outliers by a few Huber reweighting
steps, with the ridge strength picked by grouped K-fold cross-validation. Why this and not a
gradient-boosted tree ensemble (scikit-learn's HistGradientBoostingRegressor):

* it extrapolates smoothly: layers of a new model or the 224x224 version of a profiled shape lie
  outside the profiled range, where trees predict a constant and rankings collapse;
* the prior already carries the non-linear physics (roofline, Amdahl), so what is left to learn
  is close to log-linear in sizes and core counts (Pipe-it and Mulder et al. both use linear or
  low-order models over such features);
* it fits in milliseconds from a few hundred samples, is deterministic, serialises as a few
  hundred floats into a plan's hash, and adds no dependency to the toolchain (numpy only);
* transfer is a second, low-dimensional ridge fit on the residuals of the source model
  (:func:`fine_tune`), which stays well-posed with 5-20 samples where refitting a tree would not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgedeploy.costmodel.features import BASE_FEATURES, KEY_FEATURES

LAMBDAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
HUBER_K = 1.345  # classic 95 %-efficiency Huber constant, in units of the residual's MAD scale
#: Load from elsewhere only ever adds time, so a sample slower than the trend is more likely
#: disturbed than one as much faster: residuals above the fit are down-weighted from this
#: fraction of ``HUBER_K`` on (held-out layers of three profiles of the 2-vCPU Zen 4 EPYC, with
#: the cross-size columns of ``features.KEY_FEATURES``: mape 0.294/0.168/0.165 ->
#: 0.283/0.158/0.153, top-1 within 10 % 0.86/0.90/0.91 -> 0.87/0.91/0.92).
HUBER_ABOVE = 0.5
#: Columns a transfer may re-weight (besides an intercept): overall speed, threading, size trend.
TRANSFER_FEATURES = ("log_prior_ms", "log_cores", "log_intensity")


@dataclass
class Correction:
    """``log(measured / prior) ~ base(X) + ((X[:, cols] - mean) / scale) @ coef + intercept``."""

    coef: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    cols: np.ndarray | None = None  # None: every column
    lam: float = 1.0
    n_samples: int = 0
    base: Correction | None = field(default=None, repr=False)

    def predict_log(self, x: np.ndarray) -> np.ndarray:
        z = x if self.cols is None else x[:, self.cols]
        out = ((z - self.mean) / self.scale) @ self.coef + self.intercept
        return out + (self.base.predict_log(x) if self.base is not None else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "coef": [round(float(v), 8) for v in self.coef],
            "intercept": round(float(self.intercept), 8),
            "mean": [round(float(v), 8) for v in self.mean],
            "scale": [round(float(v), 8) for v in self.scale],
            "cols": None if self.cols is None else [int(c) for c in self.cols],
            "lam": self.lam, "n_samples": self.n_samples,
            "base": None if self.base is None else self.base.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Correction:
        return cls(np.asarray(d["coef"], float), float(d["intercept"]),
                   np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                   None if d.get("cols") is None else np.asarray(d["cols"], int),
                   float(d.get("lam", 1.0)), int(d.get("n_samples", 0)),
                   None if d.get("base") is None else cls.from_dict(d["base"]))


def _solve(z: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Weighted ridge with an unpenalised intercept, by its normal equations
    ``(Zc^T W Zc + lam I) coef = Zc^T W yc`` (a p x p solve: p is a few dozen features)."""
    ybar = float(np.sum(w * y) / np.sum(w))
    zbar = (w[:, None] * z).sum(0) / np.sum(w)
    zc = z - zbar
    gram = (zc * w[:, None]).T @ zc + lam * np.eye(z.shape[1])
    coef = np.linalg.solve(gram, (zc * w[:, None]).T @ (y - ybar))
    return coef, ybar - float(zbar @ coef)


def _robust(z: np.ndarray, y: np.ndarray, lam: float, steps: int = 3,
            prior_w: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Ridge, then Huber IRLS: one bad measurement (a preempted run) barely moves the fit; one
    above the trend (slower: :data:`HUBER_ABOVE`) is down-weighted sooner than one below."""
    w0 = np.ones(len(y)) if prior_w is None else prior_w
    w = w0
    coef, b0 = _solve(z, y, w, lam)
    for _ in range(steps):
        r = y - (z @ coef + b0)
        s = 1.4826 * np.median(np.abs(r - np.median(r))) + 1e-9
        u = np.abs(r) / (HUBER_K * np.where(r > 0, HUBER_ABOVE, 1.0) * s)
        w = w0 * np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
        coef, b0 = _solve(z, y, w, lam)
    return coef, b0


def _standardise(z: np.ndarray, pooled: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and scale each column by its own spread; with ``pooled`` (``z`` laid out as
    ``features.feature_matrix``), scale each per-primitive block column by the spread of its
    feature over *all* rows instead, uncentred.

    Scaled by its own spread, the block of a primitive with a handful of samples (one profiled
    depthwise shape in a 60 s profile of a slow board) gets columns as large as a common one's,
    so the ridge penalty barely touches it: it fitted those few samples exactly and extrapolated
    100-300x off on the next shape (held-out MAPE 1.7 on board twins, worse than no
    calibration). Pooled, a rare primitive's columns are small and its block stays near the
    shared trend until its samples say otherwise (MAPE 0.27; unchanged with ample samples)."""
    n_base, n_key = len(BASE_FEATURES), len(KEY_FEATURES)
    mean = z.mean(0)
    scale = z.std(0)
    if pooled:
        blocks = z[:, n_base:].reshape(len(z), -1, n_key)
        overall = blocks.sum(1).std(0)  # one key per row: the per-primitive features themselves
        overall[KEY_FEATURES.index("one")] = 1.0
        mean[n_base:] = 0.0
        scale[n_base:] = np.tile(overall, blocks.shape[1])
    scale = np.where(scale > 1e-9, scale, 1.0)
    return (z - mean) / scale, mean, scale


def _cv_lambda(z: np.ndarray, y: np.ndarray, groups: np.ndarray, w: np.ndarray,
               folds: int = 5) -> float:
    """Pick the ridge strength with grouped K-fold CV (a layer's rows never straddle folds)."""
    ug = np.unique(groups)
    if len(ug) < folds * 2:
        return 1.0
    fold_of = {g: i % folds for i, g in enumerate(np.random.default_rng(0).permutation(ug))}
    f = np.array([fold_of[g] for g in groups])
    best, best_err = 1.0, np.inf
    for lam in LAMBDAS:
        err = 0.0
        for k in range(folds):
            tr, te = f != k, f == k
            coef, b0 = _robust(z[tr], y[tr], lam, steps=1, prior_w=w[tr])
            err += float(np.sum(w[te] * np.abs(y[te] - (z[te] @ coef + b0))))
        if err < best_err:
            best, best_err = lam, err
    return best


def fit_correction(x: np.ndarray, y_log: np.ndarray, groups: np.ndarray | None = None,
                   lam: float | None = None, weights: np.ndarray | None = None,
                   pooled: bool = False) -> Correction:
    """Fit the correction on feature rows ``x`` and targets ``log(measured / prior)``;
    ``weights`` (default 1) down-weight samples known to be noisy; ``pooled``: ``x`` is a
    ``features.feature_matrix``, whose per-primitive blocks are shrunk toward the shared trend
    (:func:`_standardise`)."""
    z, mean, scale = _standardise(x, pooled)
    w = np.ones(len(y_log)) if weights is None else np.asarray(weights, float)
    if lam is None:
        lam = _cv_lambda(z, y_log, groups if groups is not None else np.arange(len(y_log)), w)
    coef, b0 = _robust(z, y_log, lam, prior_w=w)
    return Correction(coef, b0, mean, scale, None, lam, len(y_log))


def transfer_cols() -> np.ndarray:
    return np.array([BASE_FEATURES.index(n) for n in TRANSFER_FEATURES])


def fine_tune(base: Correction, x: np.ndarray, y_log: np.ndarray, lam: float = 3.0,
              weights: np.ndarray | None = None) -> Correction:
    """Adapt ``base`` (fitted on another board) with a few samples of this one.

    Only an intercept and :data:`TRANSFER_FEATURES` slopes are refitted on the residuals of
    ``base`` (shrunk toward zero by ``lam``): with k samples a handful of parameters are
    identifiable, and they capture what changes between boards (clock and SIMD width, threading
    efficiency, memory versus compute balance) while the per-primitive shape is kept.
    """
    cols = transfer_cols()
    r = y_log - base.predict_log(x)
    z = x[:, cols]
    mean = z.mean(0) if len(z) else np.zeros(len(cols))
    scale = np.where(z.std(0) > 1e-9, z.std(0), 1.0) if len(z) > 1 else np.ones(len(cols))
    if len(r) == 0:
        return Correction(np.zeros(len(cols)), 0.0, mean, scale, cols, lam, 0, base)
    coef, b0 = _robust((z - mean) / scale, r, lam * max(1.0, 10.0 / len(r)),
                       prior_w=None if weights is None else np.asarray(weights, float))
    return Correction(coef, b0, mean, scale, cols, lam, len(r), base)


@dataclass
class NeighbourResidual:
    """Kernel-weighted residuals of the ridge fit on nearby profiled shapes.

    The ridge correction is log-linear; what it cannot express (cache cliffs, BLAS kernel
    switches at particular sizes) shows up as residuals that are similar for similar shapes of
    the same primitive on the same configuration. A Nadaraya-Watson average of those residuals
    (Gaussian kernel over log sizes, shrunk toward 0 where few neighbours are near) adds that
    back; far from every sample it vanishes and the ridge model stands alone.
    """

    coords: np.ndarray  # (S, D) log-size coordinates of the fit samples
    keys: np.ndarray  # (S,) primitive key * 1000 + configuration row
    resid: np.ndarray  # (S,) log residual after the ridge correction
    bandwidth: float = 1.0  # log units: shapes within ~e-fold in each size count as near
    shrink: float = 0.3

    def predict_log(self, coords: np.ndarray, keys: np.ndarray) -> np.ndarray:
        if not len(self.resid) or not len(coords):
            return np.zeros(len(coords))
        out = np.zeros(len(coords))
        # one block per (primitive, configuration): a loop over at most a few dozen groups,
        # each a dense kernel matrix (|a|^2 + |b|^2 - 2 a.b) of its rows x its samples
        for key in np.intersect1d(np.unique(keys), self.keys):
            q, s = keys == key, self.keys == key
            a, b = coords[q], self.coords[s]
            d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
            w = np.exp(-np.maximum(d2, 0.0) / (2 * self.bandwidth**2))
            out[q] = (w @ self.resid[s]) / (w.sum(1) + self.shrink)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"coords": np.round(self.coords, 6).tolist(), "keys": self.keys.tolist(),
                "resid": np.round(self.resid, 6).tolist(), "bandwidth": self.bandwidth,
                "shrink": self.shrink}
