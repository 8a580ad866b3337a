"""Board descriptors (``targets/*.yaml``): the hardware facts the cost model and planner use.

Units live in field names (``max_freq_mhz``, ``l2_kib``, ``idle_power_w``) so a YAML file reads
without a manual. Figures come from published specifications; the cost model calibrates the rest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgedeploy.errors import TargetError, did_you_mean
from edgedeploy.runtime.vocab import GPU_CLUSTER

Arch = Literal["aarch64", "armv7l", "x86_64"]
Family = Literal["linux", "jetson", "rpi"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cluster(_Strict):
    """Cores of one type sharing an L2 and a clock: the unit a pipeline stage runs on (Pipe-it)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Cluster name, e.g. 'big', 'little', 'denver'.")
    core_type: str = Field(min_length=1, description="Core microarchitecture, e.g. 'cortex-a57'.")
    cpu_ids: list[int] = Field(min_length=1, description="Logical CPU ids (as Linux numbers them).")
    max_freq_mhz: float = Field(gt=0, description="Highest sustained clock.")
    flops_per_cycle: float = Field(
        gt=0, description="Peak FP32 FLOPs per cycle per core, counting a fused multiply-add as 2.")
    fp16_arithmetic: bool = Field(
        default=False,
        description="Computes float16 natively (Arm FEAT_FP16, 'asimdhp' in /proc/cpuinfo: "
                    "Cortex-A55/A75 and later, Carmel; x86 'avx512_fp16'): where LiteRT's "
                    "XNNPACK runs precision fp16. Not Cortex-A53/A57/A72/A73.")
    simd: list[str] = Field(
        default_factory=list,
        description="Vector and dot-product extensions every core lists in /proc/cpuinfo "
                    "(x86 'avx2', 'avx512f', 'avx512_vnni'...; Arm 'asimd', 'asimddp', "
                    "'i8mm', 'sve'...): which kernels the engines dispatch to. Detected for "
                    "the local host; part of its fingerprint.")
    l1d_kib: float = Field(ge=0, description="L1 data cache per core.")
    l2_kib: float = Field(ge=0, description="L2 cache of the whole cluster (sum if per core).")
    l3_kib: float = Field(default=0, ge=0,
                          description="L3 / system cache shared by the cluster; 0 if none.")
    idle_power_w: float = Field(ge=0, description="Cluster power when online but idle.")
    active_power_w_per_core: float = Field(
        ge=0, description="Extra power of one fully busy core at max_freq_mhz.")

    @model_validator(mode="after")
    def _unique_cpus(self) -> Cluster:
        if any(c < 0 for c in self.cpu_ids):
            raise ValueError("cpu ids must be >= 0")
        if len(set(self.cpu_ids)) != len(self.cpu_ids):
            raise ValueError(f"cluster {self.name!r} lists a cpu id twice: {self.cpu_ids}")
        return self

    @property
    def cores(self) -> int:
        return len(self.cpu_ids)

    def peak_gflops(self, cores: int | None = None) -> float:
        """FP32 peak of ``cores`` cores (all by default) at max frequency."""
        n = self.cores if cores is None else cores
        return n * self.max_freq_mhz * self.flops_per_cycle / 1000.0


class Gpu(_Strict):
    """An integrated (or discrete) CUDA GPU usable through onnxruntime's CUDA/TensorRT providers."""

    name: str = Field(min_length=1, description="e.g. 'pascal-gp10b'.")
    cuda_cores: int = Field(gt=0)
    sms: int = Field(gt=0, description="Streaming multiprocessors.")
    max_freq_mhz: float = Field(gt=0)
    fp32_gflops: float = Field(gt=0, description="Peak FP32 (cuda_cores x 2 x clock).")
    memory_shared: bool = Field(default=True,
                                description="True when the GPU shares DRAM with the CPUs.")
    transfer_gbps: float = Field(gt=0, description="Host<->GPU copy bandwidth, GB/s.")
    transfer_latency_us: float = Field(ge=0, description="Fixed cost of one copy/launch.")
    idle_power_w: float = Field(ge=0)
    active_power_w: float = Field(ge=0, description="Extra power when fully busy.")


class InterCluster(_Strict):
    """Cost of handing a tensor from a stage on one cluster to a stage on another."""

    latency_us: float = Field(ge=0, description="Fixed cost per hand-over (queue + wake-up).")
    bandwidth_gbps: float = Field(gt=0, description="Copy bandwidth between clusters, GB/s.")


class SshDefaults(_Strict):
    """Defaults a manifest's target entry inherits (it may override each)."""

    user: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    path: str = Field(default="~/edgedeploy", min_length=1, description="Remote install folder.")
    python: str = Field(default="python3", min_length=1, description="Interpreter on the board.")


class Target(_Strict):
    """One board: CPU clusters, optional GPU, memory, power and the engines it can run."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    arch: Arch
    family: Family = Field(default="linux", description="Template family for generated runners.")
    clusters: list[Cluster] = Field(min_length=1)
    gpu: Gpu | None = None
    memory_bw_gbps: float = Field(gt=0, description="Peak DRAM bandwidth (theoretical).")
    dram_mib: int = Field(gt=0)
    inter_cluster: InterCluster = Field(
        default_factory=lambda: InterCluster(latency_us=20.0, bandwidth_gbps=5.0))
    engines: list[str] = Field(default_factory=lambda: ["native", "onnxruntime"], min_length=1,
                               description="Engines the board runs (runtime.engines registry).")
    ssh: SshDefaults = Field(default_factory=SshDefaults)
    simulated: bool = Field(default=False, description="True for board twins (sim:<board>).")
    fingerprint: str | None = Field(default=None, description="Hash of the hardware facts (local).")

    @model_validator(mode="after")
    def _check(self) -> Target:
        names = [c.name for c in self.clusters]
        dup_names = sorted({n for n in names if names.count(n) > 1})
        if dup_names:
            raise ValueError(f"cluster names must be unique; repeated: {', '.join(dup_names)}")
        if GPU_CLUSTER in names:
            raise ValueError(f"cluster name {GPU_CLUSTER!r} is reserved for the GPU")
        seen: dict[int, str] = {}
        for c in self.clusters:
            for cpu in c.cpu_ids:
                if cpu in seen:
                    raise ValueError(f"cpu {cpu} is in both cluster {seen[cpu]!r} and {c.name!r}")
                seen[cpu] = c.name
        if len(set(self.engines)) != len(self.engines):
            raise ValueError("engines must not repeat")
        from edgedeploy.runtime.engines import ENGINES

        unknown = [e for e in self.engines if e not in ENGINES]
        if unknown:
            raise ValueError(f"unknown engine(s) {unknown}; known: {', '.join(sorted(ENGINES))}")
        return self

    @property
    def all_cpus(self) -> list[int]:
        """Every logical CPU of every cluster, sorted."""
        return sorted(cpu for c in self.clusters for cpu in c.cpu_ids)

    def cluster(self, name: str) -> Cluster:
        """The cluster called ``name``; a TargetError with a did-you-mean otherwise."""
        for c in self.clusters:
            if c.name == name:
                return c
        names = [c.name for c in self.clusters]
        guess = did_you_mean(name, names)
        raise TargetError(f"target {self.name!r} has no cluster {name!r}{guess}",
                          hint=f"its clusters: {', '.join(names)}")

    def peak_gflops(self, cluster: str | Cluster, cores: int | None = None) -> float:
        """FP32 peak of ``cores`` cores of ``cluster`` (all by default); ``"gpu"`` is the GPU."""
        if isinstance(cluster, Cluster):
            return cluster.peak_gflops(cores)
        if cluster == GPU_CLUSTER:
            if self.gpu is None:
                raise TargetError(f"target {self.name!r} has no GPU")
            return self.gpu.fp32_gflops
        return self.cluster(cluster).peak_gflops(cores)

    def summary(self) -> str:
        """One line per board for tables: ``2x denver2@2035 + 4x cortex-a57@2035``."""
        return " + ".join(f"{c.cores}x {c.core_type}@{c.max_freq_mhz:g}" for c in self.clusters)


def catalog_names() -> list[str]:
    """Names of the shipped board descriptors (sorted) followed by ``local`` (this host)."""
    from edgedeploy.resources import targets_dir
    from edgedeploy.runtime.vocab import LOCAL

    return [*sorted(p.stem for p in targets_dir().glob("*.yaml")), LOCAL]
