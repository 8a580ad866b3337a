"""Per-layer corrections of the cost model from per-layer timings (the measure answer's
``layer_ms``).

Why: a stage's time is a sum, so stage-level factors (per cluster, core count, primitive family)
cannot say that *one* layer's primitive is a poor choice while the same family is fine elsewhere
-- and that is the error left after calibration (a shape x primitive x core-type residue no
descriptor model captures). Per-layer timings can.

Each stage's per-step times are compared with the guide's stage-level-corrected predictions, in
log space, *relative to the stage*: the stage's own offset ``log(sum measured / sum predicted)``
is taken out, because steps are timed alone in-process (no contention, no hand-over) while the
stage-level factors are fitted to the pipeline's figures and stay the absolute anchor. What is
left is fitted as a three-level shrinkage estimate (each level a ridge mean towards the level
above, i.e. towards the stage-level factors when evidence is thin):

* ``g[family, cluster]`` (prior strength LAMBDA_FAMILY) -- a family slower on a core type than
  the stage-level factors say;
* ``h[shape, option, cluster]`` (LAMBDA_LAYER) -- this layer shape with this primitive on this
  core type; shared by identical layers (ResNet's repeated blocks) and across core counts;
* ``u[shape, option, cluster, cores]`` (LAMBDA_UNIT) -- its scaling with cores.

An onnxruntime segment (one step over several layers) informs only ``g["onnxruntime", cluster]``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

LAMBDA_FAMILY, LAMBDA_LAYER, LAMBDA_UNIT = 2.0, 0.3, 1.0
MAX_LOG = 2.5


def family(option: str) -> str:
    return option.split("/", 1)[0]


class LayerCorrections:
    """Per-layer multipliers of ``problem.layers[i].ms[option, config]``; see the module doc."""

    def __init__(self, problem, graph) -> None:
        self.problem = problem
        keys: dict[str, int] = {}
        self.shape = [keys.setdefault(layer.op + json.dumps(layer.descriptor.to_dict(),
                                                            sort_keys=True, default=str),
                                      len(keys))
                      for layer in graph.layers]
        self.cfg_cluster = [c.cluster for c in problem.configs]
        self.cfg_cores = [c.cores for c in problem.configs]
        self.cfg_index = {(c.cluster, c.cores): k for k, c in enumerate(problem.configs)}
        # (stage group, start, stop, choices, cluster, cores, measured ms)
        self.rows: list[tuple[int, int, int, tuple[str, ...], str, int, float]] = []
        self.groups = 0
        self.g: dict[tuple[str, str], float] = {}
        self.h: dict[tuple[int, str, str], float] = {}
        self.u: dict[tuple[int, str, str, int], float] = {}
        self._mult: list[np.ndarray] | None = None

    @property
    def empty(self) -> bool:
        return not self.rows

    def add(self, stages: Sequence, choices: Sequence[str],
            layer_ms: Sequence[Sequence[tuple[int, int, float]]]) -> None:
        """One measured candidate's per-step times (ignored where they do not fit its stages)."""
        if len(layer_ms) != len(stages):
            return
        for s, entries in zip(stages, layer_ms, strict=True):
            self.groups += 1
            for a, b, ms in entries:
                if s.start <= a < b <= s.stop and ms > 0 and math.isfinite(ms):
                    self.rows.append((self.groups, a, b, tuple(choices[a:b]), s.cluster,
                                      s.cores, float(ms)))

    def fit(self, stage_factor: Callable[[int, str, int], float]) -> None:
        """Refit g, h, u; ``stage_factor(layer, option, config)`` is the guide's correction."""
        p = self.problem
        by_group: dict[int, list[tuple[tuple, float]]] = defaultdict(list)
        for row in self.rows:
            _g, a, b, ch, cl, cores, _ms = row
            k = self.cfg_index.get((cl, cores))
            if k is None:
                continue
            pred = 0.0
            for i, o in zip(range(a, b), ch, strict=True):
                opts = p.layers[i].options
                pred += (float(p.layers[i].ms[opts.index(o), k]) * stage_factor(i, o, k)
                         if o in opts else math.inf)
            if 0 < pred < math.inf:
                by_group[row[0]].append((row, pred))
        rel: list[tuple[tuple, float]] = []
        for items in by_group.values():
            off = math.log(sum(r[6] for r, _ in items) / sum(pr for _, pr in items))
            rel += [(r, math.log(r[6] / pr) - off) for r, pr in items]
        self.g = _shrunk(((_fam_key(r), x) for r, x in rel), LAMBDA_FAMILY)
        single = [(r, x - self.g.get(_fam_key(r), 0.0)) for r, x in rel if r[2] - r[1] == 1]
        self.h = _shrunk((((self.shape[r[1]], r[3][0], r[4]), x) for r, x in single),
                         LAMBDA_LAYER)
        self.u = _shrunk((((self.shape[r[1]], r[3][0], r[4], r[5]),
                           x - self.h.get((self.shape[r[1]], r[3][0], r[4]), 0.0))
                          for r, x in single), LAMBDA_UNIT)
        self._mult = None

    def log_factor(self, i: int, option: str, cluster: str, cores: int) -> float:
        sh = self.shape[i]
        v = (self.g.get((family(option), cluster), 0.0) + self.h.get((sh, option, cluster), 0.0)
             + self.u.get((sh, option, cluster, cores), 0.0))
        return max(-MAX_LOG, min(MAX_LOG, v))

    def factor(self, i: int, option: str, k: int) -> float:
        """Multiplier of layer ``i`` with ``option`` on config index ``k``."""
        if not self.rows:
            return 1.0
        return math.exp(self.log_factor(i, option, self.cfg_cluster[k], self.cfg_cores[k]))

    def multipliers(self) -> list[np.ndarray]:
        """Per layer, an (options x configs) array of factors (cached until the next fit)."""
        if self._mult is None:
            self._mult = [np.array([[self.factor(i, o, k) for k in range(len(self.cfg_cluster))]
                                    for o in layer.options])
                          for i, layer in enumerate(self.problem.layers)]
        return self._mult


def _fam_key(row: tuple) -> tuple[str, str]:
    fams = {family(o) for o in row[3]}
    return (fams.pop() if len(fams) == 1 else "onnxruntime", row[4])


def _shrunk(pairs, lam: float) -> dict:
    """Ridge mean per key: ``sum(x) / (n + lam)`` (towards 0, i.e. the level above)."""
    tot: dict = defaultdict(float)
    cnt: dict = defaultdict(int)
    for key, x in pairs:
        tot[key] += x
        cnt[key] += 1
    return {k: tot[k] / (cnt[k] + lam) for k in tot}
