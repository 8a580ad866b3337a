"""What a layer costs *inside* a running stage of a board twin, beyond its solo time.

Part of the twin's hidden truth (:mod:`edgedeploy.twins.groundtruth`) and deliberately absent
from the cost model and the refinement guide, which price a stage as the sum of its layers:

* engine fusion: consecutive onnxruntime layers of a stage are one segment, one session call.
  A layer continuing a segment does not pay the per-call overhead its solo time includes; an
  elementwise layer (FUSABLE) is fused into its producer and costs FUSED_FRACTION of its solo
  time; a conv right after a conv keeps the engine's blocked layout and costs SEGMENT_LAYOUT of
  the rest (onnxruntime's own segments measured 0.58-1.03x of their layers alone on this host);
* native dispatch: each native layer call pays NATIVE_DISPATCH_MS (at 2 GHz) of Python dispatch,
  fresh allocations and cold caches -- several times the ~0.02 ms the model assumes.

A layer's in-stage cost depends only on whether its predecessor *in the same stage* runs
onnxruntime, so the least time of a stage over every primitive choice is a two-state dynamic
programme (:meth:`InStage.table`), exact, and the exhaustive optimum stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.vocab import ONNXRUNTIME
from edgedeploy.schemas.target import GPU_CLUSTER

FUSABLE = frozenset({ir.ADD, ir.MUL, ir.ACTIVATION, ir.FLATTEN, ir.RESHAPE})
FUSED_FRACTION = 0.2
SEGMENT_LAYOUT = 0.88
NATIVE_DISPATCH_MS = 0.06


class InStage:
    """Per layer and unit of one ground truth: the best native step (solo + dispatch), an
    onnxruntime layer opening a segment (solo) and one continuing it (fused)."""

    def __init__(self, truth: Any, call_overhead_ms: float) -> None:
        """``truth``: a :class:`~edgedeploy.twins.groundtruth.GroundTruth` with a graph;
        ``call_overhead_ms``: the per-call part of a CPU layer's solo time, at 2 GHz."""
        self.truth = truth
        units, target = truth.units, truth.target
        scale = np.array([0.0 if u.cluster == GPU_CLUSTER
                          else 2000.0 / target.cluster(u.cluster).max_freq_mhz for u in units])
        self.dispatch_ms = NATIVE_DISPATCH_MS * scale
        call = call_overhead_ms * scale  # a GPU keeps its per-kernel launches
        inf = np.full(len(units), np.inf)
        self.native_ms, self.ort_open_ms, self.ort_fused_ms = [], [], []
        self.native_pick: list[np.ndarray] = []
        layers = truth.graph.layers
        for i, (layer, opts) in enumerate(zip(layers, truth.options, strict=True)):
            nat = [k for k, o in enumerate(opts) if o != ONNXRUNTIME]
            ms = truth.ms[i][nat] if nat else inf[None, :]
            self.native_pick.append(np.array(nat)[np.argmin(ms, axis=0)] if nat
                                    else np.full(len(units), -1))
            self.native_ms.append(np.min(ms, axis=0) + self.dispatch_ms)
            solo = truth.ms[i][opts.index(ONNXRUNTIME)] if ONNXRUNTIME in opts else inf
            self.ort_open_ms.append(solo)
            if layer.op in FUSABLE:
                self.ort_fused_ms.append(solo * FUSED_FRACTION)
            else:
                after_conv = i > 0 and layers[i - 1].op == ir.CONV2D
                layout = SEGMENT_LAYOUT if layer.op == ir.CONV2D and after_conv else 1.0
                self.ort_fused_ms.append((solo - call) * layout)

    def layer_ms(self, a: int, b: int, choices: Sequence[str], unit: int) -> list[float]:
        """True time of each layer of a stage running layers ``a..b`` on unit index ``unit``."""
        t = self.truth
        out = []
        for i in range(a, b):
            if choices[i] not in t.options[i]:
                out.append(float("inf"))
            elif choices[i] == ONNXRUNTIME:
                cont = i > a and choices[i - 1] == ONNXRUNTIME
                out.append(float((self.ort_fused_ms if cont else self.ort_open_ms)[i][unit]))
            else:
                out.append(float(t.ms[i][t.options[i].index(choices[i]), unit])
                           + float(self.dispatch_ms[unit]))
        return out

    def table(self) -> np.ndarray:
        """``[a, b, unit]``: the least true time of a stage running layers ``a..b`` on a unit,
        primitives chosen jointly (the two-state programme, for every start ``a`` at once);
        infinite where ``b <= a``."""
        n, nu = len(self.native_ms), len(self.truth.units)
        table = np.full((n + 1, n + 1, nu), np.inf)
        nat, ort = np.full((n, nu), np.inf), np.full((n, nu), np.inf)  # rows: the start a
        for i in range(n):
            rows = slice(0, i)
            new_nat = np.minimum(nat[rows], ort[rows]) + self.native_ms[i]
            new_ort = np.minimum(nat[rows] + self.ort_open_ms[i], ort[rows] + self.ort_fused_ms[i])
            nat[rows], ort[rows] = new_nat, new_ort
            nat[i], ort[i] = self.native_ms[i], self.ort_open_ms[i]
            table[: i + 1, i + 1] = np.minimum(nat[: i + 1], ort[: i + 1])
        return table

    def choices(self, a: int, b: int, unit: int) -> list[str]:
        """The primitives that reach :meth:`table`'s time for one stage (backtracked)."""
        cost = {False: float(self.native_ms[a][unit]), True: float(self.ort_open_ms[a][unit])}
        back: list[dict[bool, bool]] = []  # per layer after a: state -> predecessor's state
        for i in range(a + 1, b):
            nat, ort_open, fused = (float(self.native_ms[i][unit]),
                                    float(self.ort_open_ms[i][unit]),
                                    float(self.ort_fused_ms[i][unit]))
            back.append({False: cost[True] < cost[False],
                         True: cost[True] + fused < cost[False] + ort_open})
            cost = {False: min(cost[False], cost[True]) + nat,
                    True: min(cost[False] + ort_open, cost[True] + fused)}
        state = cost[True] < cost[False]
        states = [state]
        for step in reversed(back):
            state = step[state]
            states.append(state)
        states.reverse()
        opts = self.truth.options
        return [ONNXRUNTIME if is_ort else opts[i][int(self.native_pick[i][unit])]
                for i, is_ort in zip(range(a, b), states, strict=True)]
