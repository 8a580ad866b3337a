"""Core configurations: the (cluster, core count) a stage can run on, as Pipe-it enumerates them.

A CPU cluster with ``n`` cores offers configurations with 1..n cores (a stage takes the first cores
of the cluster); a GPU is one more configuration ``("gpu", 1)``. The numeric facts of every
configuration are gathered once into arrays so prediction can index them without Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedeploy.schemas.target import GPU_CLUSTER, Target

#: Columns of :func:`config_matrix` (one row per configuration).
CONFIG_FIELDS = ("cores", "freq_mhz", "flops_per_cycle", "peak_gflops", "l1d_kib", "l2_kib",
                 "l3_kib", "bw_gbps", "is_gpu")
CF = {name: i for i, name in enumerate(CONFIG_FIELDS)}


@dataclass(frozen=True, order=True)
class CoreConfig:
    """A stage's placement: ``cores`` cores of ``cluster`` (``"gpu"`` for the GPU, cores = 1)."""

    cluster: str
    cores: int

    @property
    def is_gpu(self) -> bool:
        return self.cluster == GPU_CLUSTER

    @property
    def key(self) -> str:
        """Stable text form used in tables, JSON and profiles: ``big:2``, ``gpu:1``."""
        return f"{self.cluster}:{self.cores}"

    @classmethod
    def parse(cls, text: str) -> CoreConfig:
        cluster, _, cores = text.partition(":")
        return cls(cluster, int(cores or 1))

    def cpus(self, target: Target) -> list[int]:
        """The logical CPUs this configuration pins to (the cluster's first ``cores``)."""
        if self.is_gpu:
            return []
        return list(target.cluster(self.cluster).cpu_ids[: self.cores])


def core_configs(target: Target) -> list[CoreConfig]:
    """Every configuration of ``target``: clusters in descriptor order, 1..n cores, then the GPU."""
    out = [CoreConfig(c.name, n) for c in target.clusters for n in range(1, c.cores + 1)]
    if target.gpu is not None:
        out.append(CoreConfig(GPU_CLUSTER, 1))
    return out


def config_matrix(target: Target, configs: list[CoreConfig]) -> np.ndarray:
    """``(len(configs), len(CONFIG_FIELDS))`` float64 facts of each configuration.

    Memory bandwidth is the board's, shared by every configuration (one DRAM controller).
    """
    rows = []
    for cfg in configs:
        if cfg.is_gpu:
            g = target.gpu
            if g is None:
                raise ValueError(f"target {target.name!r} has no GPU")
            rows.append([1, g.max_freq_mhz, g.fp32_gflops * 1000.0 / g.max_freq_mhz,
                         g.fp32_gflops, 0, 0, 0, target.memory_bw_gbps, 1])
            continue
        c = target.cluster(cfg.cluster)
        n = min(cfg.cores, c.cores)
        rows.append([n, c.max_freq_mhz, c.flops_per_cycle, c.peak_gflops(n), c.l1d_kib,
                     c.l2_kib, c.l3_kib, target.memory_bw_gbps, 0])
    return np.asarray(rows, dtype=np.float64).reshape(len(configs), len(CONFIG_FIELDS))
