"""A board twin's hidden ground truth: what a layer, a stage and a pipeline *really* cost.

Deliberately not the planner's cost model (``costmodel/prior.py`` is a clean roofline with fixed
per-primitive efficiencies, and a stage costs the sum of its layers there): this generator adds
the effects a real board has and a descriptor model does not see, so planning and refinement can
be scored against an optimum that the model cannot simply reproduce (DESIGN.md, "Board twins"):

* per-primitive cache effects: weights or a transform's workspace spilling out of the cluster's
  L2 slow that primitive down; Winograd pays for partial output tiles;
* channel effects: channel counts that are not a multiple of the SIMD width waste lanes; NHWC
  variants win on wide layers and lose on narrow ones;
* a seeded per-(shape, primitive, core type) "personality" factor (log-normal): the residue of
  micro-architecture a model never captures;
* threading: Amdahl scaling whose serial part grows for small layers;
* GPU: only onnxruntime kernels run there, each with a launch cost, plus host<->GPU copies.

Those shape a layer's *solo* time (:meth:`GroundTruth.unit_ms`, what profiling one layer
measures). Three more effects exist only inside a running stage, so neither a per-layer profile
nor a model that prices a stage as the sum of its layers can see them (the first two in
:mod:`edgedeploy.twins.instage`):

* engine fusion: consecutive onnxruntime layers of one stage are one onnxruntime segment, run by
  one session call. Inside it the per-call overhead is paid once per segment, not per layer; an
  elementwise layer (add, mul, activation, flatten, reshape) is fused into its producer and costs
  a fifth of its solo time; a conv right after a conv keeps the engine's blocked layout (no
  reorder between them) and costs 0.88x. So a segment of k layers is faster than the sum of
  their solo times;
* native dispatch: every native layer call in a stage pays 0.06 ms (at 2 GHz) of Python
  dispatch, fresh allocations and cold caches between layers -- several times the call cost the
  model assumes;
* shared-bandwidth contention: stages running at the same time share the DRAM bandwidth, so a
  stage's memory-bound part slows with the others' traffic (:meth:`GroundTruth.contended`).

DVFS / thermal drift and measurement noise live in :mod:`edgedeploy.twins.device` (they change
measurements, never the ground truth or its optimum). Everything is a function of (board
descriptor, graph, seed): deterministic for a seed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.vocab import NATIVE, ONNXRUNTIME
from edgedeploy.schemas.target import GPU_CLUSTER, Target
from edgedeploy.twins.instage import InStage

#: (efficiency of peak, FLOP reduction) per primitive family on a CPU core.
FAMILY = {"direct": (0.30, 1.0), "im2col_gemm": (0.55, 1.0), "gemm_1x1": (0.66, 1.0),
          "winograd_f2x3": (0.42, 2.25), "winograd_f4x3": (0.34, 4.0), "fft": (0.05, 3.0),
          "depthwise": (0.16, 1.0), ONNXRUNTIME: (0.62, 1.0), NATIVE: (0.25, 1.0)}
SIMD = 4
PERSONALITY_SIGMA = 0.15
LAYER_OVERHEAD_MS = 0.012
GPU_LAUNCH_MS = 0.045
CONTENTION = 0.9
REPLICA_OVERHEAD = 0.04


def layer_options(d: ir.Descriptor) -> list[str]:
    """What can run a layer (the runtime's registry decides, as on a real board)."""
    if d.op == ir.CONV2D:
        from edgedeploy.runtime import primitives

        return [p.name for p in primitives.applicable(d)] + [ONNXRUNTIME]
    if d.op == ir.OPAQUE:
        return [ONNXRUNTIME]
    return [NATIVE, ONNXRUNTIME]


@functools.lru_cache(maxsize=65536)
def _shape_key(d: ir.Descriptor) -> str:
    """A descriptor's text identity for :func:`_unit` (memoised: profiling asks thousands)."""
    return str(d.to_dict())


def _unit(seed: int, *parts: object) -> float:
    """A deterministic standard normal draw keyed by ``parts`` (order-independent of calls)."""
    h = hashlib.sha256(json.dumps([seed, *map(str, parts)]).encode()).digest()
    return float(np.random.default_rng(int.from_bytes(h[:8], "little")).standard_normal())


@dataclass(frozen=True)
class Unit:
    """A place a stage can run: (cluster, cores); ``gpu:1`` for the GPU."""

    cluster: str
    cores: int


class GroundTruth:
    """Hidden per-layer times of one graph on one board, and pipeline composition."""

    def __init__(self, target: Target, graph: ir.Graph, seed: int = 0) -> None:
        self.target, self.graph, self.seed = target, graph, seed
        self.units = [Unit(c.name, n) for c in target.clusters for n in range(1, c.cores + 1)]
        if target.gpu is not None:
            self.units.append(Unit(GPU_CLUSTER, 1))
        self.unit_index = {(u.cluster, u.cores): k for k, u in enumerate(self.units)}
        self.options = [layer_options(layer.descriptor) for layer in graph.layers]
        self.ms = []  # solo time per layer: [option, unit]
        for layer, opts in zip(graph.layers, self.options, strict=True):
            self.ms.append(np.array([[self._layer_ms(layer.descriptor, p, u)
                                      for u in self.units] for p in opts]))
        self.in_stage = InStage(self, LAYER_OVERHEAD_MS)
        self.mem_bytes = np.array([float(layer.descriptor.bytes_in + layer.descriptor.bytes_out
                                         + layer.descriptor.bytes_weights)
                                   for layer in graph.layers])
        self.cut_bytes = self._cut_bytes()

    @classmethod
    def layers_only(cls, target: Target, seed: int = 0) -> GroundTruth:
        """The per-layer truth of a board without a model: what profiling a twin measures
        (any descriptor x primitive x unit); the pipeline methods need a graph."""
        obj = cls.__new__(cls)
        obj.target, obj.seed, obj.graph = target, seed, None
        return obj

    def unit_ms(self, d: ir.Descriptor, prim: str, cluster: str, cores: int) -> float:
        """True time of one layer with ``prim`` on (cluster, cores); inf where it cannot run."""
        if prim not in layer_options(d):
            return float("inf")
        return self._layer_ms(d, prim, Unit(cluster, cores))

    # ---- one layer --------------------------------------------------------------------------
    def _layer_ms(self, d: ir.Descriptor, prim: str, u: Unit) -> float:
        if u.cluster == GPU_CLUSTER:
            return self._gpu_ms(d, prim)
        c = self.target.cluster(u.cluster)
        family, layout = [*prim.split("/"), "nchw"][:2]
        eff, reduction = FAMILY.get(family, (0.2, 1.0))
        flops = max(float(d.flops), float(d.elems_out or 1))
        if d.op == ir.CONV2D:
            eff *= self._conv_effects(d, family, layout, c.l2_kib)
        else:
            eff *= 0.5 if prim == ONNXRUNTIME else 1.0  # a tiny op: onnxruntime's session overhead
        eff *= float(np.exp(PERSONALITY_SIGMA * _unit(self.seed, c.core_type, prim, _shape_key(d))))
        serial = 0.03 + 0.25 / (1.0 + flops / 4e6) + (0.0 if prim == ONNXRUNTIME else 0.05)
        speedup = u.cores / (1.0 + serial * (u.cores - 1))
        compute_ms = flops / reduction / (c.max_freq_mhz * 1e6 * c.flops_per_cycle * eff
                                          * speedup) * 1e3
        bw = self.target.memory_bw_gbps * 1e9 * 0.45 * min(1.0, 0.35 * u.cores)
        mem_ms = (d.bytes_in + d.bytes_out + d.bytes_weights) / bw * 1e3
        hi, lo = max(compute_ms, mem_ms), min(compute_ms, mem_ms)
        return hi + 0.35 * lo + LAYER_OVERHEAD_MS * (2000.0 / c.max_freq_mhz)

    def _conv_effects(self, d: ir.Descriptor, family: str, layout: str, l2_kib: float) -> float:
        lanes = d.c_out / (np.ceil(d.c_out / SIMD) * SIMD)
        eff = float(lanes) * (0.6 if d.c_in < 16 and family not in ("depthwise",) else 1.0)
        if layout == "nhwc":
            eff *= 1.12 if d.c_in >= 64 else 0.88
        if family.startswith("winograd"):
            m = 2 if family.endswith("f2x3") else 4
            padded = np.ceil(d.h_out / m) * m * np.ceil(d.w_out / m) * m
            waste = padded / max(1, d.h_out * d.w_out)
            eff /= float(waste)
            tiles = (m + 2) ** 2 * (d.c_in + d.c_out) * 4 * 4
            eff *= 0.65 if tiles > l2_kib * 1024 / 2 else 1.0
        big_weights = d.bytes_weights > l2_kib * 1024 * 0.5
        if family in ("im2col_gemm", "gemm_1x1", ONNXRUNTIME) and big_weights:
            eff *= 0.75
        if family == "fft" and max(d.kernel) >= 5:
            eff *= 1.8
        return eff

    def _gpu_ms(self, d: ir.Descriptor, prim: str) -> float:
        g = self.target.gpu
        if prim != ONNXRUNTIME or g is None or d.op == ir.OPAQUE:
            return float("inf")
        flops = max(float(d.flops), float(d.elems_out or 1))
        parallel = d.c_out * d.h_out * d.w_out
        occupancy = min(1.0, parallel / (g.sms * 2048.0))
        noise = float(np.exp(0.15 * _unit(self.seed, "gpu", _shape_key(d))))
        eff = max(0.03, 0.4 * occupancy) * noise
        compute_ms = flops / (g.fp32_gflops * 1e9 * eff) * 1e3
        mem_ms = (d.bytes_in + d.bytes_out + d.bytes_weights) / (
            self.target.memory_bw_gbps * 1e9 * 0.6) * 1e3
        return max(compute_ms, mem_ms) + GPU_LAUNCH_MS

    def _cut_bytes(self) -> np.ndarray:
        """Bytes crossing a cut before each layer index (0..n)."""
        from edgedeploy.runtime.stages import boundary_tensors

        shapes = {t.name: t.shape for t in [*self.graph.inputs, *self.graph.outputs]}
        shapes.update({k: v.shape for k, v in self.graph.tensors.items()})
        return np.array([sum(int(np.prod(shapes.get(t, (1,)))) * 4
                             for t in boundary_tensors(self.graph, k))
                         for k in range(len(self.graph.layers) + 1)], dtype=np.float64)

    # ---- inside a stage: fusion and dispatch (twins.instage) ---------------------------------
    def stage_layer_ms(self, a: int, b: int, choices: Sequence[str], cluster: str,
                       cores: int) -> list[float]:
        """True time of each layer of a stage running layers ``a..b`` on (cluster, cores):
        a layer continuing an onnxruntime segment is fused, a native call pays its dispatch."""
        return self.in_stage.layer_ms(a, b, choices, self.unit_index[(cluster, cores)])

    def stage_ms(self, a: int, b: int, choices: Sequence[str], cluster: str, cores: int) -> float:
        t = 0.0
        for ms in self.stage_layer_ms(a, b, choices, cluster, cores):
            t += ms
        return t

    # ---- stages and pipelines --------------------------------------------------------------
    def layer_time(self, i: int, choice: str, cluster: str, cores: int) -> float:
        """Solo time of one layer (what profiling it alone measures)."""
        opts = self.options[i]
        if choice not in opts:
            return float("inf")
        return float(self.ms[i][opts.index(choice), self.unit_index[(cluster, cores)]])

    def hop_ms(self, nbytes, src: str | None, dst: str):
        """Hand-over into a stage on ``dst`` from one on ``src`` (None: the caller's input)."""
        if src is None:
            return 0.0
        g = self.target.gpu
        if GPU_CLUSTER in (src, dst) and g is not None:
            return 0.1 + g.transfer_latency_us / 1e3 + nbytes / (g.transfer_gbps * 1e9 * 0.7) * 1e3
        ic = self.target.inter_cluster
        if src == dst:
            return ic.latency_us / 1e3 + nbytes / (self.target.memory_bw_gbps * 1e9 * 0.5) * 1e3
        cold = nbytes / (self.target.memory_bw_gbps * 1e9 * 0.3) * 1e3  # refetch into a cold L2
        return 1.5 * ic.latency_us / 1e3 + nbytes / (ic.bandwidth_gbps * 1e9 * 0.8) * 1e3 + cold

    def pipeline(self, stages: Sequence[tuple[int, int, str, int, int]],
                 choices: Sequence[str]) -> dict[str, object]:
        """True steady-state metrics of a configuration (no noise, no drift)."""
        base, mem = [], []
        prev = None
        for a, b, cl, cores, _r in stages:
            t = self.stage_ms(a, b, choices, cl, cores)
            base.append(t + self.hop_ms(self.cut_bytes[a], prev, cl))
            mem.append(float(self.mem_bytes[a:b].sum()))
            prev = cl
        reps = np.array([s[4] for s in stages], dtype=np.float64)
        times = self.contended(np.array(base), np.array(mem), reps,
                               [s[2] for s in stages])
        period = float(np.max(times * (1 + REPLICA_OVERHEAD * (reps - 1)) / reps))
        power = self.power_w(stages, times, period)
        return {"stage_ms": [float(t) for t in times], "period_ms": period,
                "throughput_fps": 1000.0 / period if np.isfinite(period) else 0.0,
                "latency_ms": float(times.sum()), "power_w": power,
                "energy_mj": power * period}

    def contended(self, base: np.ndarray, mem: np.ndarray, reps: np.ndarray,
                  clusters: Sequence[str]) -> np.ndarray:
        """Stage times slowed by the DRAM traffic of the stages running beside them.

        Works on arrays whose leading axis is the stage (any trailing batch shape), so the
        exhaustive enumeration uses it too.
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            period = np.max(base / reps, axis=0)
            demand = mem * reps / np.maximum(base, 1e-9)  # bytes per ms, all replicas busy
            bw = self.target.memory_bw_gbps * 1e6 * 0.6  # bytes per ms, sustainable
            util = demand / bw * np.minimum(1.0, (base / reps) / np.maximum(period, 1e-9))
            others = util.sum(axis=0) - util
            memfrac = np.minimum(1.0, mem / (self.target.memory_bw_gbps * 1e6 * 0.45)
                                 / np.maximum(base, 1e-9))
            gpu = np.array([c == GPU_CLUSTER for c in clusters]).reshape(
                (-1,) + (1,) * (base.ndim - 1))
            shared = 1.0 if self.target.gpu is None or self.target.gpu.memory_shared else 0.0
            factor = 1.0 + CONTENTION * memfrac * others * np.where(gpu, shared, 1.0)
        return base * factor

    def power_w(self, stages: Sequence[tuple[int, int, str, int, int]], times: np.ndarray,
                period: float) -> float:
        idle = sum(c.idle_power_w for c in self.target.clusters)
        g = self.target.gpu
        idle += g.idle_power_w if g else 0.0
        active = 0.0
        for (_a, _b, cl, cores, r), t in zip(stages, times, strict=True):
            busy = min(1.0, t / (r * period)) if period > 0 else 0.0
            w = g.active_power_w if cl == GPU_CLUSTER and g else \
                self.target.cluster(cl).active_power_w_per_core * cores * r
            active += w * busy
        return float(idle + active)

    def best_choice(self, i: int, cluster: str, cores: int) -> str:
        k = self.unit_index[(cluster, cores)]
        return self.options[i][int(np.argmin(self.ms[i][:, k]))]

    # ---- the exhaustive optimum -------------------------------------------------------------
    def optimum(self, max_stages: int = 3, allow_replication: bool = True,
                capacity: dict[str, int] | None = None) -> dict[str, object]:
        """The exact best throughput over every configuration with <= ``max_stages`` stages.

        ``capacity``: the units per cluster a search may use (its space's; default every core
        and the GPU), so the optimum is over the space the search searches.

        The space (what ``refine score`` measures against): contiguous stages over *every* cut
        point, each stage on any (cluster, cores, replicas) with cores disjoint across stages
        (a GPU: one unit, never replicated), and per layer any primitive that runs on its stage's
        unit. Each (stage range, unit) gets its least time from ``InStage.table`` (exact:
        in-stage effects only couple neighbours inside a stage, and contention and hand-overs
        depend on bytes, not primitives); enumerated with numpy over all cut tuples for each
        stage-option tuple, the winner's primitives backtracked (``InStage.choices``).
        """
        n = len(self.graph.layers)
        table = self.in_stage.table()
        mprefix = np.concatenate([[0.0], np.cumsum(self.mem_bytes)])
        cap = {c.name: c.cores for c in self.target.clusters} | {GPU_CLUSTER: 1}
        cap |= capacity or {}
        opts = self._stage_options(allow_replication, cap)
        best: dict[str, object] = {"throughput_fps": 0.0}
        for k in range(1, min(max_stages, n) + 1):
            cuts = np.array(list(itertools.combinations(range(1, n), k - 1)), dtype=int)
            cuts = cuts.reshape(len(cuts), k - 1)
            bounds = np.hstack([np.zeros((len(cuts), 1), int), cuts, np.full((len(cuts), 1), n)])
            for combo in itertools.product(opts, repeat=k):
                if not self._fits(combo, cap):
                    continue
                cand = self._best_of(combo, bounds, table, mprefix)
                if cand is not None and cand["throughput_fps"] > best["throughput_fps"]:
                    best = cand
        stages: list = best.get("stages", [])  # type: ignore[assignment]
        if stages:
            best["choices"] = [c for a, b, cl, cores, _r in stages
                               for c in self.in_stage.choices(a, b, self.unit_index[(cl, cores)])]
        return best

    def _stage_options(self, allow_replication: bool, cap: dict[str, int]
                       ) -> list[tuple[str, int, int, int]]:
        out = []
        for u in self.units:
            k = self.unit_index[(u.cluster, u.cores)]
            n = cap.get(u.cluster, 0)
            max_r = min(n, 1) if u.cluster == GPU_CLUSTER or not allow_replication \
                else n // u.cores
            out += [(u.cluster, u.cores, r, k) for r in range(1, max_r + 1)]
        return out

    @staticmethod
    def _fits(combo: Sequence[tuple[str, int, int, int]], cap: dict[str, int]) -> bool:
        used: dict[str, int] = {}
        for cl, cores, r, _k in combo:
            used[cl] = used.get(cl, 0) + cores * r
        return all(v <= cap.get(cl, 0) for cl, v in used.items())

    def _best_of(self, combo, bounds, table, mprefix) -> dict[str, object] | None:
        k = len(combo)
        base = np.empty((k, len(bounds)))
        mem = np.empty((k, len(bounds)))
        for s, (cl, _c, _r, u) in enumerate(combo):
            a, b = bounds[:, s], bounds[:, s + 1]
            base[s] = table[a, b, u]
            if s:
                prev = combo[s - 1][0]
                base[s] += self.hop_ms(self.cut_bytes[a], prev, cl)
            mem[s] = mprefix[b] - mprefix[a]
        reps = np.array([c[2] for c in combo], dtype=np.float64)[:, None]
        times = self.contended(base, mem, reps, [c[0] for c in combo])
        period = np.max(times * (1 + REPLICA_OVERHEAD * (reps - 1)) / reps, axis=0)
        period = np.where(np.isfinite(period), period, np.inf)
        j = int(np.argmin(period))
        if not np.isfinite(period[j]):
            return None
        stages = [(int(bounds[j, s]), int(bounds[j, s + 1]), c[0], c[1], c[2])
                  for s, c in enumerate(combo)]
        return {"throughput_fps": 1000.0 / float(period[j]), "period_ms": float(period[j]),
                "stages": stages}
