"""Closing the loop: measured stage times -> a correction of the cost model -> a re-plan.

DESIGN.md's loop (measured samples -> CostModel calibration) run *inside* one refinement. After
every measured candidate, :class:`Guide` fits multiplicative factors to the measured stage times
against the planner's per-stage predictions, in log space with a ridge prior towards 1 (factor
``exp(theta)``, ``theta ~ 0``):

* per cluster and per (cluster, cores) -- a board whose big cores are slower than the
  descriptor promises, or whose scaling with cores is worse;
* per primitive family (a stage's predicted time split into family shares) -- Winograd slower
  than its roofline, onnxruntime faster;
* a hand-over factor (the predicted hop is its own column).

``log(measured) ~ log(sum_f pred_f * exp(theta_unit + theta_f) + hop * exp(theta_hop))`` is
linearised around the current factors and solved by a few Gauss-Newton ridge steps (milliseconds).
Where the device also reports per-layer times (``Measurement.layer_ms``), per-layer corrections
on top of these factors (:mod:`edgedeploy.refine.layerfit`, shrunk towards them) single out the
layers whose primitive is mispriced. The corrected problem (every layer's ``ms[option, config]``
scaled) goes back through the
planner's own selection + mapping DP (tens of ms), and its best mappings are the next proposals:
the model proposes, the device decides. A stage measured exactly as a candidate has it is priced
by its measurement (rescaled by the current factors of its neighbours' contention-free model only
when not measured).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from edgedeploy.refine.candidate import Candidate, StageConf
from edgedeploy.refine.layerfit import LayerCorrections
from edgedeploy.refine.measure import Measurement

#: Ridge strengths (prior precision, in squared log units) of each factor group.
LAMBDA_CLUSTER, LAMBDA_UNIT, LAMBDA_FAMILY, LAMBDA_HOP = 0.05, 0.5, 0.5, 1.0
GN_STEPS = 4
MAX_LOG = 3.0


def family(option: str) -> str:
    return option.split("/", 1)[0]


class Guide:
    """Factor correction of ``ctx.problem`` fitted to stage measurements; re-planning on it."""

    def __init__(self, ctx, objective: str = "throughput") -> None:
        self.ctx, self.objective = ctx, objective
        p = ctx.problem
        self.clusters = [c.name for c in p.clusters]
        self.units = [(c.cluster, c.cores) for c in p.configs]
        self.families = sorted({family(o) for layer in p.layers for o in layer.options})
        self.cols = ([("cluster", c) for c in self.clusters] + [("unit", u) for u in self.units]
                     + [("family", f) for f in self.families] + [("hop", "")])
        self.col = {c: k for k, c in enumerate(self.cols)}
        lam = {"cluster": LAMBDA_CLUSTER, "unit": LAMBDA_UNIT, "family": LAMBDA_FAMILY,
               "hop": LAMBDA_HOP}
        self.lam = np.array([lam[c[0]] for c in self.cols])
        self.theta = np.zeros(len(self.cols))
        self.rows: list[tuple[dict[str, float], float, int, int, float]] = []
        self.measured_stage: dict[tuple, float] = {}
        self._fam_index = [np.array([self.families.index(family(o)) for o in layer.options])
                           for layer in p.layers]
        self.layers = LayerCorrections(p, ctx.graph)
        self._cfg = {(c.cluster, c.cores): k for k, c in enumerate(p.configs)}

    # ---- observations -----------------------------------------------------------------------
    def _parts(self, cand: Candidate, s: StageConf, per_layer: bool = False
               ) -> tuple[dict[str, float], float]:
        """(predicted ms per family, predicted hop) of stage ``s`` of ``cand``; with
        ``per_layer`` each layer scaled by its per-layer correction (layerfit)."""
        layer_ms, hop = self.ctx.stage_prediction(cand, s)
        k = self._cfg[(s.cluster, s.cores)]
        parts: dict[str, float] = {}
        for i, ms in zip(range(s.start, s.stop), layer_ms, strict=True):
            f = family(cand.choices[i])
            if per_layer:
                ms *= self.layers.factor(i, cand.choices[i], k)
            parts[f] = parts.get(f, 0.0) + ms
        return parts, hop

    def observe(self, cand: Candidate, meas: Measurement) -> None:
        """Add a measured candidate's stages and refit the factors."""
        if len(meas.stage_ms) != len(cand.stages):
            return
        for k, (s, t) in enumerate(zip(cand.stages, meas.stage_ms, strict=True)):
            parts, hop = self._parts(cand, s)
            if t <= 0 or not all(math.isfinite(v) for v in parts.values()):
                continue
            self.rows.append((parts, hop, self.clusters.index(s.cluster),
                              self.units.index((s.cluster, s.cores)), float(t)))
            self.measured_stage[self._stage_key(cand, k)] = float(t)
        if meas.layer_ms is not None:
            self.layers.add(cand.stages, cand.choices, meas.layer_ms)
        self.fit()
        if not self.layers.empty:
            uf, ff = self.unit_factor(), self.family_factor()
            self.layers.fit(lambda i, o, k: float(uf[k] * ff[self.families.index(family(o))]))

    def _stage_key(self, cand: Candidate, k: int) -> tuple:
        s = cand.stages[k]
        prev = cand.stages[k - 1].cluster if k else None
        return (s.start, s.stop, s.cluster, s.cores, prev, cand.choices[s.start:s.stop])

    def fit(self) -> None:
        """Gauss-Newton ridge steps on log(measured) - log(corrected prediction)."""
        if not self.rows:
            return
        th = self.theta.copy()
        n_c = len(self.clusters)
        n_u = len(self.units)
        for _ in range(GN_STEPS):
            J = np.zeros((len(self.rows), len(self.cols)))
            r = np.zeros(len(self.rows))
            for j, (parts, hop, ci, ui, t) in enumerate(self.rows):
                unit = math.exp(th[ci] + th[n_c + ui])
                fam = {f: v * unit * math.exp(th[self.col[("family", f)]])
                       for f, v in parts.items()}
                hop_c = hop * math.exp(th[-1])
                pred = sum(fam.values()) + hop_c
                comp = sum(fam.values()) / pred
                J[j, ci] = J[j, n_c + ui] = comp
                for f, v in fam.items():
                    J[j, self.col[("family", f)]] += v / pred
                J[j, -1] = hop_c / pred
                r[j] = math.log(t / pred)
            A = J.T @ J + np.diag(self.lam)
            step = np.linalg.solve(A, J.T @ r - self.lam * th)
            th = np.clip(th + step, -MAX_LOG, MAX_LOG)
            if np.max(np.abs(step)) < 1e-4:
                break
        self.theta = th
        del n_u

    # ---- corrected costs --------------------------------------------------------------------
    def unit_factor(self) -> np.ndarray:
        n_c = len(self.clusters)
        return np.array([math.exp(self.theta[self.clusters.index(c)] + self.theta[n_c + k])
                         for k, (c, _n) in enumerate(self.units)])

    def family_factor(self) -> np.ndarray:
        return np.exp([self.theta[self.col[("family", f)]] for f in self.families])

    def corrected_problem(self):
        """The planner's problem with every layer time and hand-over scaled by the factors."""
        p = self.ctx.problem
        uf, ff = self.unit_factor(), self.family_factor()
        mult = (self.layers.multipliers() if not self.layers.empty
                else [1.0] * len(p.layers))
        layers = [dataclasses.replace(layer, ms=layer.ms * ff[fi][:, None] * uf[None, :] * m)
                  for layer, fi, m in zip(p.layers, self._fam_index, mult, strict=True)]
        hop_f = math.exp(self.theta[-1])
        base = p.transfer_ms
        return dataclasses.replace(p, layers=layers,
                                   transfer_ms=lambda nbytes, a, b: base(nbytes, a, b) * hop_f)

    def predict(self, cand: Candidate) -> list[float] | None:
        """Corrected stage times; a stage measured exactly like this is its measurement."""
        n_c = len(self.clusters)
        out = []
        for k, s in enumerate(cand.stages):
            got = self.measured_stage.get(self._stage_key(cand, k))
            if got is not None:
                out.append(got)
                continue
            parts, hop = self._parts(cand, s, per_layer=True)
            unit = math.exp(self.theta[self.clusters.index(s.cluster)]
                            + self.theta[n_c + self.units.index((s.cluster, s.cores))])
            t = sum(v * unit * math.exp(self.theta[self.col[("family", f)]])
                    for f, v in parts.items()) + hop * math.exp(self.theta[-1])
            if not math.isfinite(t):
                return None
            out.append(t)
        return out

    def value(self, cand: Candidate) -> float:
        """Predicted objective, lower is better (period for throughput, else latency)."""
        pred = self.predict(cand)
        if pred is None:
            return float("inf")
        if self.objective == "latency":
            return float(sum(pred))
        return max(t / s.replicas for t, s in zip(pred, cand.stages, strict=True))

    # ---- re-planning ------------------------------------------------------------------------
    def replan(self, limit: int = 6) -> list[Candidate]:
        """The planner's best mappings on the corrected problem, best first (valid only)."""
        from edgedeploy.planner.solve import solve_problem, stage_choices

        ctx = self.ctx
        prob = self.corrected_problem()
        try:
            sol = solve_problem(prob, self.objective, ctx.limits, ctx.allow, ctx.deny,
                                ctx.max_memory_mb)
        except Exception:  # an infeasible corrected problem: nothing to propose
            return []
        out: list[Candidate] = []
        seen: set[str] = set()
        for pc in [sol.best, *sol.mapping.candidates]:
            names = stage_choices(prob, sol.selection, pc)
            stages = tuple(StageConf(s.start, s.stop, prob.configs[s.config].cluster,
                                     prob.configs[s.config].cores, s.replicas)
                           for s in pc.stages)
            c = Candidate(stages, tuple(names))
            if c.key not in seen and ctx.space.is_valid(c):
                seen.add(c.key)
                out.append(c)
            if len(out) >= limit:
                break
        return out


def rank(cands: Sequence[Candidate], guide: Guide) -> list[tuple[float, Candidate]]:
    return sorted(((guide.value(c), c) for c in cands), key=lambda vc: vc[0])
