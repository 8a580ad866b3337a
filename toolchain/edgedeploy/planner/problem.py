"""The planner's explicit problem: everything it optimises over, cost model already applied.

Keeping the problem a plain table (per layer: options, layouts, workspace, a ms array over core
configurations; tensors with bytes; clusters with cores and power; a transfer-cost function) makes
selection and partitioning independent of any particular cost model, lets tests build problems
from random numbers, and lets the brute-force oracle price a plan exactly as the solvers do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.layouts import edge_layouts
from edgedeploy.runtime.vocab import NCHW

#: ``transfer_ms(nbytes, from_cluster, to_cluster)``: cost of one hand-over between stages.
TransferFn = Callable[[int, str, str], float]
#: The least replica speed-up priced: a measurement under it (replicas a tenth of one bare call)
#: is taken for a broken run, not for the model.
MIN_REPLICA_SPEEDUP = 0.1


@dataclass(frozen=True)
class ClusterSpec:
    """A pool of cores a stage may take from; a GPU is a cluster of one unit (Pipe-it, TX2 work)."""

    name: str
    cpu_ids: tuple[int, ...]
    idle_w: float = 0.0
    active_w_per_core: float = 0.0
    is_gpu: bool = False

    @property
    def capacity(self) -> int:
        return 1 if self.is_gpu else len(self.cpu_ids)


@dataclass(frozen=True)
class Config:
    """A core configuration: ``cores`` cores of cluster ``cluster`` (``gpu:1`` for a GPU)."""

    cluster: str
    cores: int

    @property
    def key(self) -> str:
        return f"{self.cluster}:{self.cores}"


@dataclass
class LayerSpec:
    """One layer's options: ``ms[o, c]`` = option ``o`` on configuration ``c`` (inf: cannot)."""

    name: str
    options: tuple[str, ...]
    layout_in: tuple[str, ...]
    layout_out: tuple[str, ...]
    workspace_bytes: tuple[int, ...]
    ms: np.ndarray
    op: str = ""


@dataclass(frozen=True)
class Tensor:
    """An activation: its producer (-1: a graph input), its readers, whether the caller wants it,
    and the layout the caller hands it over or takes it back in (the model's own)."""

    name: str
    nbytes: int
    producer: int
    consumers: tuple[int, ...]
    is_output: bool = False
    edge_layout: str = NCHW


@dataclass
class Problem:
    layers: list[LayerSpec]
    tensors: list[Tensor]
    clusters: list[ClusterSpec]
    configs: list[Config]
    #: ``layout_ms[t, c]``: one NCHW<->NHWC conversion of tensor ``t`` on configuration ``c``.
    layout_ms: np.ndarray
    transfer_ms: TransferFn = field(default=lambda nbytes, a, b: 0.0)
    #: Measured speed-up of ``r`` replicas on a cluster ({cluster: {r: speedup}}); replicas
    #: share memory bandwidth and caches, so r of them are rarely r times as fast.
    replica_scaling: dict[str, dict[int, float]] = field(default_factory=dict)
    #: Layer indices no stage may start at (``runtime.stages.unfused_cuts``).
    no_cut: frozenset[int] = frozenset()
    #: A stage's own cost a frame around its layers (taking the frame, handing the outputs
    #: back), where a profile measured it on this model (``costmodel.segments.FRAME``).
    frame_ms: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def replica_speedup(self, config: int, replicas: int) -> float:
        """Effective parallelism of ``replicas`` copies of a stage on ``config``'s cluster: their
        throughput through the feeding process over one core's bare call, as measured. Under one
        where the hop to the replicas costs more than the model: two replicas of a wake-word model
        of 20 us a call ran 0.65x its bare call, and priced at 1x (the floor this had) they were
        predicted 56,600 fps and measured 10,300 (seen while developing)."""
        return self._speedup(self.configs[config].cluster, replicas)

    def _speedup(self, cluster: str, replicas: int) -> float:
        if replicas <= 1:
            return 1.0
        table = self.replica_scaling.get(cluster) or {}
        if replicas in table:
            return min(float(replicas), max(MIN_REPLICA_SPEEDUP, table[replicas]))
        known = [r for r in table if r < replicas]
        if known:  # scale the largest measured count's efficiency
            r0 = max(known)
            return min(float(replicas), max(MIN_REPLICA_SPEEDUP, replicas * table[r0] / r0))
        return float(replicas)

    def pipeline_factor(self, cluster: int) -> float:
        """How much longer each stage of a plan of several stages takes on cluster index
        ``cluster`` than it takes alone: the cluster's measured replica efficiency (``n``
        one-core replicas of a whole model run ``S_n`` times as fast as one, not ``n`` times:
        they share the feeding process, memory bandwidth and caches, as a pipeline's stages
        do). 1 where never measured. A 2-stage pipeline of one-core stages on a 2-core host,
        priced as if its stages ran alone, was predicted 17-62 % faster than it measured on
        eight models."""
        spec = self.clusters[cluster]
        if spec.is_gpu or spec.capacity <= 1:
            return 1.0
        return spec.capacity / self._speedup(spec.name, spec.capacity)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def cuts(self) -> list[int]:
        """Every layer index a stage may start at, after the first."""
        return [k for k in range(1, self.n_layers) if k not in self.no_cut]

    def cluster(self, name: str) -> ClusterSpec:
        return next(c for c in self.clusters if c.name == name)

    def cluster_index(self, name: str) -> int:
        return next(i for i, c in enumerate(self.clusters) if c.name == name)

    def validate(self) -> None:
        """Shapes agree and tensors flow forward; raises ValueError naming the first violation."""
        n_cfg = len(self.configs)
        names = {c.name for c in self.clusters}
        for cfg in self.configs:
            if cfg.cluster not in names:
                raise ValueError(f"config {cfg.key} names an unknown cluster")
            if not 1 <= cfg.cores <= self.cluster(cfg.cluster).capacity:
                raise ValueError(f"config {cfg.key} exceeds its cluster")
        for layer in self.layers:
            n = len(layer.options)
            if n == 0:
                raise ValueError(f"layer {layer.name!r} has no options")
            lens = {len(layer.layout_in), len(layer.layout_out), len(layer.workspace_bytes), n}
            if len(lens) != 1:
                raise ValueError(f"layer {layer.name!r}: option lists differ in length")
            if layer.ms.shape != (n, n_cfg):
                raise ValueError(f"layer {layer.name!r}: ms has shape {layer.ms.shape}, "
                                 f"expected {(n, n_cfg)}")
        for t in self.tensors:
            if any(c <= t.producer or c >= len(self.layers) for c in t.consumers):
                raise ValueError(f"tensor {t.name!r} does not flow forward")
        if self.layout_ms.shape != (len(self.tensors), n_cfg):
            raise ValueError("layout_ms must be (n_tensors, n_configs)")

    def edges(self) -> list[tuple[int, int, int]]:
        """(producer, consumer, tensor index) for every layer-to-layer use of a tensor."""
        return [(t.producer, c, k) for k, t in enumerate(self.tensors) if t.producer >= 0
                for c in t.consumers]

    def boundary_bytes(self) -> np.ndarray:
        """``b[k]``: bytes live across a cut before layer ``k`` (what a stage hop must carry).

        A tensor crosses cut k when it exists before k (produced earlier or a graph input) and is
        still needed at or after k (a later reader, or the caller) -- the rule of
        ``runtime.stages.boundary_tensors``. A difference array keeps this O(layers + tensors).
        """
        n = len(self.layers)
        diff = np.zeros(n + 2, dtype=np.float64)
        for t in self.tensors:
            last = n if t.is_output else max(t.consumers, default=t.producer)
            lo = t.producer + 1
            if last >= lo:
                diff[lo] += t.nbytes
                diff[last + 1] -= t.nbytes
        return np.cumsum(diff)[: n + 1]

    def overhead_ms(self, replicas: int) -> float:
        """A stage's own cost a frame (:attr:`frame_ms`); none for replicas, whose measured
        speed-up was measured with it (:meth:`replica_speedup`)."""
        return self.frame_ms if replicas == 1 else 0.0

    def feed_ms(self, cluster: str, replicas: int) -> float:
        """The first stage's hand-over of the frame (the graph inputs it reads) from the caller,
        a hop within ``cluster``, as a later stage's input hop is priced; none for replicas,
        whose measured speed-up was measured through it (:meth:`replica_speedup`)."""
        if replicas > 1:
            return 0.0
        return float(self.transfer_ms(self.frame_bytes, cluster, cluster))

    @cached_property
    def frame_bytes(self) -> int:
        """:func:`frame_bytes` of this problem's tensors (computed once: every plan priced
        pays it)."""
        return frame_bytes(self.tensors)

    def idle_w(self) -> float:
        return float(sum(c.idle_w for c in self.clusters))

    def active_w(self, config: int) -> float:
        """Power of a configuration's busy cores (a GPU's whole active power)."""
        cfg = self.configs[config]
        cl = self.cluster(cfg.cluster)
        return cl.active_w_per_core * (1 if cl.is_gpu else cfg.cores)


def frame_bytes(tensors: Sequence[Tensor]) -> int:
    """The bytes of a frame as the caller hands it over: the graph inputs a layer reads or the
    caller wants back (what lives across the cut before the first layer)."""
    return int(sum(t.nbytes for t in tensors if t.producer < 0 and (t.consumers or t.is_output)))


def tensors_from_graph(graph: ir.Graph) -> list[Tensor]:
    """The tensor table of an IR graph (graph inputs first, then layer outputs in order)."""
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = {t.name for t in graph.outputs}
    edges = edge_layouts(graph)
    names = [t.name for t in graph.inputs] + [t for layer in graph.layers for t in layer.outputs]
    out = []
    for name in dict.fromkeys(names):
        info = graph.tensors.get(name)
        shape = info.shape if info else next((t.shape for t in graph.inputs + graph.outputs
                                              if t.name == name), ())
        nbytes = int(np.prod(shape, dtype=np.int64)) * ir.BYTES_PER_ELEMENT if shape else 4
        out.append(Tensor(name, nbytes, producers.get(name, -1),
                          tuple(sorted(set(consumers.get(name, [])))), name in outputs,
                          edges.get(name, NCHW)))
    return out


def fixed_transfer(latency_ms: float, ms_per_byte: float) -> TransferFn:
    """A fixed hop cost plus a per-byte copy cost (tests, simple boards)."""
    def fn(nbytes: int, a: str, b: str) -> float:
        return latency_ms + ms_per_byte * nbytes
    return fn


def primitive_matches(option: str, names: Sequence[str]) -> bool:
    """``winograd_f4x3`` matches every layout of that family; ``winograd_f4x3/nchw`` only one."""
    family = option.split("/", 1)[0]
    return any(n in (option, family) for n in names)
