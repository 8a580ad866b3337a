"""Synthetic planning problems: random chains and DAGs for tests, long chains for the benchmarks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgedeploy.planner.problem import (
    ClusterSpec,
    Config,
    LayerSpec,
    Problem,
    Tensor,
    fixed_transfer,
)
from edgedeploy.runtime.vocab import NCHW, NHWC

OPTION_POOL = (("direct/nchw", NCHW), ("winograd_f4x3/nhwc", NHWC), ("im2col_gemm/nchw", NCHW),
               ("gemm_1x1/nhwc", NHWC), ("onnxruntime", NCHW), ("fft/nchw", NCHW))


def clusters_for(n_clusters: int, cores: int = 2, gpu: bool = False) -> list[ClusterSpec]:
    out = []
    cpu = 0
    for k in range(n_clusters):
        ids = tuple(range(cpu, cpu + cores))
        cpu += cores
        out.append(ClusterSpec(f"c{k}", ids, idle_w=0.1 * (k + 1), active_w_per_core=0.5 + k))
    if gpu:
        out.append(ClusterSpec("gpu", (), idle_w=0.2, active_w_per_core=4.0, is_gpu=True))
    return out


def random_problem(rng: np.random.Generator, n_layers: int, *, n_options: int = 3,
                   clusters: list[ClusterSpec] | None = None, dag: bool = False,
                   transfer: tuple[float, float] = (0.05, 1e-7),
                   model_edges: bool = False) -> Problem:
    """Layers with random option times; ``dag`` adds skip edges (residual/branching shapes);
    ``model_edges``: the graph's input and output in a random layout each (a model's own, as
    a .tflite model's are NHWC)."""
    clusters = clusters or clusters_for(2)
    configs = [Config(c.name, n) for c in clusters for n in range(1, c.capacity + 1)]
    speed = np.array([(1.0 + 0.5 * i) / (n ** 0.8) for i, c in enumerate(clusters)
                      for n in range(1, c.capacity + 1)])
    layers = []
    for i in range(n_layers):
        k = int(rng.integers(1, n_options + 1))
        picks = rng.choice(len(OPTION_POOL), size=k, replace=False)
        opts = [OPTION_POOL[p] for p in sorted(picks)]
        jitter = rng.uniform(0.8, 1.2, (1, len(configs)))
        ms = rng.uniform(0.2, 3.0, size=(k, 1)) * speed[None, :] * jitter
        layers.append(LayerSpec(f"l{i}", tuple(o for o, _ in opts), tuple(lay for _, lay in opts),
                                tuple(lay for _, lay in opts),
                                tuple(int(x) for x in rng.integers(0, 4 << 20, size=k)), ms))
    tensors = [Tensor("in", 4096, -1, (0,))]
    readers: dict[int, list[int]] = {i: [i + 1] for i in range(n_layers - 1)}
    if dag:
        for i in range(n_layers - 2):
            if rng.random() < 0.4:
                readers[i].append(int(rng.integers(i + 2, n_layers)))
    for i in range(n_layers):
        cons = tuple(sorted(set(readers.get(i, []))))
        tensors.append(Tensor(f"t{i}", int(rng.integers(1, 64)) * 4096, i, cons,
                              is_output=i == n_layers - 1))
    layout = rng.uniform(0.01, 0.5, size=(len(tensors), len(configs)))
    if model_edges:
        first, last = (NHWC if rng.random() < 0.5 else NCHW for _ in range(2))
        tensors[0] = replace(tensors[0], edge_layout=first)
        tensors[-1] = replace(tensors[-1], edge_layout=last)
    return Problem(layers, tensors, clusters, configs, layout, fixed_transfer(*transfer))


def chain_problem(n_layers: int, seed: int = 0, *, gpu: bool = True) -> Problem:
    """A long chain on a TX2-like board (2 + 4 cores and a GPU) for the scaling benchmark."""
    rng = np.random.default_rng(seed)
    clusters = [ClusterSpec("big", (1, 2), 0.15, 1.6),
                ClusterSpec("little", (0, 3, 4, 5), 0.2, 0.9)]
    if gpu:
        clusters.append(ClusterSpec("gpu", (), 0.2, 6.0, is_gpu=True))
    return random_problem(rng, n_layers, n_options=4, clusters=clusters)
