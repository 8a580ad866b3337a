"""A simulated board (``sim:<board>``) that answers the bundle runner's ``measure`` protocol.

Like tinygrad's null device, a twin lets the whole refinement loop run without hardware: it takes
the same argv a deployed bundle's ``main.py measure --config-json ... --frames N --warmup W
--json`` takes and prints the same JSON, computed from the hidden :class:`GroundTruth` plus what
makes real measurements hard -- DVFS/thermal drift (a board heats with the power it draws and
throttles), per-run offsets and per-frame jitter with occasional preemption spikes. Every answer
carries ``"simulated": true``. Deterministic for a seed and a call sequence.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.schemas.target import Target
from edgedeploy.twins.groundtruth import GroundTruth

SIM_PREFIX = "sim:"
FRAME_SIGMA = 0.04
RUN_SIGMA = 0.012
SPIKE_P = 0.03
THERMAL_TAU_S = 30.0
THROTTLE = 0.07
LAYER_SIGMA = 0.06  # per-step jitter of an in-process layer timing
LAYER_FRAMES = 3


def is_sim(alias: str) -> bool:
    return alias.startswith(SIM_PREFIX)


def twin_target(board: str) -> Target:
    """The board's descriptor marked simulated, with its own fingerprint (its own profile)."""
    from edgedeploy.boards.catalog import load_target

    if board == "local":
        from edgedeploy.errors import TargetError

        raise TargetError("a twin needs a board descriptor, not 'local'",
                          hint="e.g. sim:jetson-tx2; see edgedeploy targets")
    base = load_target(board)
    return base.model_copy(update={"simulated": True, "fingerprint": f"sim-{base.name}-v1",
                                   "description": f"[simulated] {base.description}"})


class TwinDevice:
    """One simulated board running one model; ``run(argv)`` is its runner command seam."""

    def __init__(self, board: str | Target, graph: ir.Graph, seed: int = 0, *,
                 truth: GroundTruth | None = None) -> None:
        """``truth``: an already built ground truth of the same (board, graph, seed) -- it is
        immutable, so fresh twins may share it; only their drift and noise state is their own."""
        self.target = twin_target(board) if isinstance(board, str) else board
        self.graph = graph
        self.seed = seed
        if truth is not None and (truth.graph is not graph or truth.seed != seed
                                  or truth.target.name != self.target.name):
            raise ValueError("a shared ground truth must be of the same board, graph and seed")
        self.truth = truth or GroundTruth(self.target, graph, seed)
        self._rng = np.random.default_rng(seed + 7919)
        self._layer_rng = np.random.default_rng(seed + 15485863)  # pipeline noise unchanged
        self._names = {layer.name: i for i, layer in enumerate(graph.layers)}
        self.heat = 0.0
        self.clock_s = 0.0
        self.calls = 0
        self.history: list[list[str]] = []

    # ---- the runner protocol ---------------------------------------------------------------
    def run(self, argv: Sequence[str]) -> str:
        """Answer ``[python] main.py measure --config-json J --frames N --warmup W --json``."""
        argv = list(argv)
        self.history.append(argv)
        args = argv[argv.index("measure") + 1:] if "measure" in argv else None
        if args is None:
            raise ValueError(f"the twin only answers `main.py measure`, got {argv!r}")
        p = argparse.ArgumentParser(prog="main.py measure", add_help=False)
        p.add_argument("--config-json", required=True)
        p.add_argument("--frames", type=int, default=50)
        p.add_argument("--warmup", type=int, default=5)
        p.add_argument("--json", action="store_true")
        ns = p.parse_args(args)
        variant = json.loads(ns.config_json)
        stages, choices = self.decode(variant)
        return json.dumps(self.measure(stages, choices, ns.frames, ns.warmup), sort_keys=True)

    def decode(self, variant: dict[str, Any]) -> tuple[list[tuple[int, int, str, int, int]],
                                                       list[str]]:
        """A ``--config-json`` plan object as (stages, per-layer choices)."""
        n = len(self.graph.layers)
        named = variant.get("choices", {})
        choices = [named.get(layer.name, "") for layer in self.graph.layers]
        stages = []
        for s in variant["stages"]:
            cluster = s.get("cluster") or self._cluster_of(s.get("cpus", []))
            reps = int(s.get("replicas", 1))
            cores = int(s.get("cores") or max(1, len(s.get("cpus", [])) // reps))
            stages.append((int(s["start"]), int(s["stop"]), cluster, cores,
                           int(s.get("replicas", 1))))
        if stages[0][0] != 0 or stages[-1][1] != n:
            raise ValueError("stages must cover every layer")
        return stages, choices

    def _cluster_of(self, cpus: Sequence[int]) -> str:
        if not cpus:
            return "gpu"
        for c in self.target.clusters:
            if cpus[0] in c.cpu_ids:
                return c.name
        raise ValueError(f"cpu {cpus[0]} is on no cluster of {self.target.name}")

    # ---- one measurement --------------------------------------------------------------------
    def measure(self, stages: list[tuple[int, int, str, int, int]], choices: Sequence[str],
                frames: int, warmup: int) -> dict[str, Any]:
        """Run ``warmup + frames`` simulated frames; medians, like the real runner reports."""
        self.calls += 1
        true = self.truth.pipeline(stages, choices)
        period = float(true["period_ms"])
        if not math.isfinite(period):
            raise ValueError("configuration cannot run on this board (a layer has no kernel)")
        run = float(np.exp(self._rng.normal(0.0, RUN_SIGMA)))
        total = warmup + frames
        drift = np.empty(total)
        for k in range(total):  # the board heats with its power draw and throttles
            dt = period / 1e3
            target_heat = min(1.0, float(true["power_w"]) / self._max_power())
            self.heat += (target_heat - self.heat) * (1 - math.exp(-dt / THERMAL_TAU_S))
            self.clock_s += dt
            drift[k] = 1.0 + THROTTLE * self.heat + (0.03 if self.heat > 0.75 else 0.0)
        jitter = np.exp(self._rng.normal(0.0, FRAME_SIGMA, total))
        spikes = np.where(self._rng.random(total) < SPIKE_P, self._rng.uniform(1.5, 3.0, total),
                          1.0)
        periods = (period * run * drift * jitter * spikes)[warmup:]
        scale = float(np.median(periods)) / period
        lat = float(true["latency_ms"]) * scale
        stage_ms = [t * scale for t in true["stage_ms"]]
        layer_ms, layer_s = self.layer_timings(stages, choices, run * drift[-1])
        return {"throughput_fps": 1000.0 / float(np.median(periods)),
                "latency_ms_p50": lat, "latency_ms_p99": lat * float(
                    np.quantile(periods, 0.99) / np.median(periods)),
                "frames": frames, "warmup": warmup, "stage_ms": stage_ms,
                "stages": [{"name": f"stage{k}", "service_ms_mean": t}
                           for k, t in enumerate(stage_ms)],
                "power_w": float(true["power_w"]),
                "energy_mj": float(true["power_w"]) * float(np.median(periods)),
                "seconds": total * period * run / 1e3 + layer_s, "plan": "variant",
                "layer_ms": layer_ms,
                "layer_ms_source": "simulated: ground-truth step times of each stage alone on "
                                   "one replica's cores (segments fused, native dispatch, no "
                                   f"contention), x drift, x jitter; median of {LAYER_FRAMES} "
                                   "frames",
                "simulated": True, "board": self.target.name}

    def layer_timings(self, stages: list[tuple[int, int, str, int, int]],
                      choices: Sequence[str], scale: float) -> tuple[list, float]:
        """What the runner's ``chain_layer_ms`` would report: per stage, ``[start, stop, ms]``
        per executor step (consecutive ``onnxruntime`` layers are one onnxruntime segment, as on a
        board, timed fused; a native step includes its dispatch), each the median of
        LAYER_FRAMES jittered runs; and the seconds it took."""
        out, spent = [], 0.0
        for a, b, cluster, cores, _r in stages:
            entries: list[list[float]] = []
            in_stage = self.truth.stage_layer_ms(a, b, choices, cluster, cores)
            i = a
            while i < b:
                j = i + 1
                while choices[i] == "onnxruntime" and j < b and choices[j] == "onnxruntime":
                    j += 1
                true = sum(in_stage[i - a:j - a])
                noise = np.exp(self._layer_rng.normal(0.0, LAYER_SIGMA, LAYER_FRAMES))
                ms = float(np.median(true * scale * noise))
                entries.append([i, j, ms])
                spent += ms * (LAYER_FRAMES + 1) / 1e3
                i = j
            out.append(entries)
        return out, spent

    def _max_power(self) -> float:
        t = self.target
        p = sum(c.idle_power_w + c.active_power_w_per_core * c.cores for c in t.clusters)
        return p + (t.gpu.idle_power_w + t.gpu.active_power_w if t.gpu else 0.0)
