"""Describe the running host as a :class:`Target` (board ``local``) and fingerprint it.

Topology comes from sysfs (``/sys/devices/system/cpu``): max frequency, caches, hybrid core types;
where sysfs lacks data (VMs often have no cpufreq) ``lscpu`` and ``/proc/cpuinfo`` fill in. Cores
are grouped into clusters by (core type, max frequency), as Pipe-it treats a big.LITTLE cluster.

FP32 FLOPs per cycle per core are *peak* figures from the SIMD flags, assuming two FMA pipes and
counting an FMA as 2 FLOPs:

* x86 ``avx512f``: 16 lanes x 2 pipes x 2 = 64; but AMD (Zen 4) splits 512-bit ops over 256-bit
  pipes, so AMD gets the AVX2 figure, 32.
* x86 ``avx2`` + ``fma``: 8 x 2 x 2 = 32; ``avx``: 8 lanes x (1 add + 1 mul pipe) = 16;
  ``sse``: 4 x 2 = 8.
* Arm: by core part (Cortex-A76/A78/X, Carmel: 16; A53/A55/A57/A72/A73, Denver: 8, two 64-bit
  pipes; A7: 2); an unknown aarch64 core with ``asimd`` is assumed big, 16; armv7 NEON 8.

Power and memory bandwidth cannot be read from the host; they are rough class defaults that the
cost model's calibration corrects. The fingerprint hashes hardware facts only, never load or
current clocks, so it is stable across runs and processes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgedeploy.errors import TargetError
from edgedeploy.schemas.target import Cluster, Target

SYS_CPU = Path("/sys/devices/system/cpu")
_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
           "armv7l": "armv7l", "armv8l": "armv7l"}
#: /proc/cpuinfo flags of native float16 arithmetic (Arm FEAT_FP16 vectors, x86 AVX512-FP16).
FP16_FLAGS = frozenset({"asimdhp", "avx512_fp16"})
#: /proc/cpuinfo flags of x86's int8 dot product that accumulates in 32 bits (VNNI).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
#: /proc/cpuinfo flags of the vector and dot-product extensions engines' kernels dispatch on.
#: Two hosts alike in cores, clocks and caches can differ here (an EPYC with AVX-512 and VNNI
#: and one with AVX2 only run onnxruntime's and numpy's kernels at different speeds), so these
#: belong in the fingerprint: a profile measured on one must not calibrate the other.
SIMD_FLAGS = frozenset({
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme",
})
#: Arm "CPU part" ids (implementer 0x41 Arm, 0x4e NVIDIA) -> (core type, FP32 FLOPs/cycle).
ARM_PARTS = {
    "0x41:0xc07": ("cortex-a7", 2), "0x41:0xc0f": ("cortex-a15", 8),
    "0x41:0xd03": ("cortex-a53", 8), "0x41:0xd04": ("cortex-a35", 4),
    "0x41:0xd05": ("cortex-a55", 8), "0x41:0xd07": ("cortex-a57", 8),
    "0x41:0xd08": ("cortex-a72", 8), "0x41:0xd09": ("cortex-a73", 8),
    "0x41:0xd0a": ("cortex-a75", 16), "0x41:0xd0b": ("cortex-a76", 16),
    "0x41:0xd0c": ("neoverse-n1", 16), "0x41:0xd0d": ("cortex-a77", 16),
    "0x41:0xd41": ("cortex-a78", 16), "0x41:0xd42": ("cortex-a78ae", 16),
    "0x41:0xd44": ("cortex-x1", 32), "0x41:0xd46": ("cortex-a510", 8),
    "0x41:0xd47": ("cortex-a710", 16), "0x41:0xd4b": ("cortex-a78c", 16),
    "0x4e:0x003": ("denver2", 8), "0x4e:0x004": ("carmel", 16),
}


def detect_local() -> Target:
    """This host as a Target with its fingerprint; detected once per process, copied per call."""
    return _detect_cached().model_copy(deep=True)


@lru_cache(maxsize=1)
def _detect_cached() -> Target:
    arch = _ARCHES.get(platform.machine().lower())
    if arch is None:
        raise TargetError(f"unsupported host architecture {platform.machine()!r}",
                          hint="edgedeploy supports x86_64, aarch64 and armv7l hosts")
    info = _cpuinfo()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    lscpu = _LazyLscpu()
    per_cpu = {cpu: _cpu_facts(cpu, arch, info.get(cpu, {}), lscpu) for cpu in cpus}
    clusters = _clusters(per_cpu, lscpu)
    model = _model_name(info, lscpu)
    target = Target(
        name="local",
        description=f"this host: {model}",
        arch=arch,  # type: ignore[arg-type]
        family=_family(),  # type: ignore[arg-type]
        clusters=clusters,
        memory_bw_gbps=25.6 if arch == "x86_64" else 12.8,  # class default; calibration corrects
        dram_mib=_dram_mib(),
        engines=_engines(),  # type: ignore[arg-type]
        ssh={"user": None, "path": "~/edgedeploy", "python": "python3"},
    )
    target.fingerprint = fingerprint(target, model_name=model)
    return target


def saturates_u8s8() -> bool:
    """Whether onnxruntime's int8 kernels on this host can saturate: an x86 CPU without VNNI
    multiplies uint8 activations by int8 weights with VPMADDUBSW, which adds each pair of
    products into 16 bits and clamps (onnxruntime's quantization guide). With full-range
    weights a layer's output then depends on how its operators were fused: a cut int8
    SqueezeNet differed from the whole model by 2-3 % on a Zen 3 EPYC, 0 on a VNNI Xeon."""
    if _ARCHES.get(platform.machine().lower()) != "x86_64":
        return False
    infos = _cpuinfo().values()
    return bool(infos) and not any(_flags(i) & VNNI_FLAGS for i in infos)


def fingerprint(target: Target, model_name: str | None = None) -> str:
    """First 16 hex of the sha256 of the canonical JSON of :func:`hardware_facts`."""
    blob = json.dumps(hardware_facts(target, model_name), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def hardware_facts(target: Target, model_name: str | None = None) -> dict[str, Any]:
    """What a fingerprint hashes: the target's hardware, never load or current clocks. A
    cluster's SIMD extensions count only where known, so a catalog board's stays put."""
    return {
        "arch": target.arch,
        "model": model_name if model_name is not None else target.description,
        "clusters": [
            {"core_type": c.core_type, "cores": c.cores, "max_freq_mhz": round(c.max_freq_mhz, -2),
             "flops_per_cycle": c.flops_per_cycle, "l1d_kib": c.l1d_kib, "l2_kib": c.l2_kib,
             "l3_kib": c.l3_kib, **({"simd": sorted(c.simd)} if c.simd else {})}
            for c in target.clusters
        ],
        "gpu": None if target.gpu is None else {"name": target.gpu.name,
                                                "cuda_cores": target.gpu.cuda_cores},
    }


# ---- sources ---------------------------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cpuinfo() -> dict[int, dict[str, str]]:
    """``/proc/cpuinfo`` blocks by processor id (keys lower-cased)."""
    text = _read(Path("/proc/cpuinfo")) or ""
    blocks: dict[int, dict[str, str]] = {}
    shared: dict[str, str] = {}
    for chunk in text.split("\n\n"):
        fields = {}
        for line in chunk.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "processor" in fields and fields["processor"].isdigit():
            blocks[int(fields["processor"])] = fields
        else:
            shared.update(fields)  # e.g. "Hardware" on 32-bit Arm
    for fields in blocks.values():
        for key, value in shared.items():
            fields.setdefault(key, value)
    return blocks


class _LazyLscpu:
    """``lscpu`` output parsed on first use (most hosts never need it)."""

    def __init__(self) -> None:
        self._data: dict[str, str] | None = None

    def get(self, key: str) -> str | None:
        if self._data is None:
            self._data = {}
            try:
                out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5,
                                     env={**os.environ, "LC_ALL": "C"}, check=False).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            for line in out.splitlines():
                k, _, v = line.partition(":")
                self._data[k.strip().lower()] = v.strip()
        return self._data.get(key.lower())


def _flags(info: dict[str, str]) -> set[str]:
    """A /proc/cpuinfo block's feature flags (x86 "flags", Arm "Features")."""
    return set((info.get("flags") or info.get("features") or "").split())


def _cpu_facts(cpu: int, arch: str, info: dict[str, str], lscpu: _LazyLscpu) -> dict[str, Any]:
    core_type, flops = _core_type(cpu, arch, info)
    flags = _flags(info)
    return {"cpu": cpu, "core_type": core_type, "flops": flops,
            "fp16": bool(flags & FP16_FLAGS), "simd": flags & SIMD_FLAGS,
            "freq": _max_freq_mhz(cpu, info, lscpu), "caches": _caches(cpu)}


def _core_type(cpu: int, arch: str, info: dict[str, str]) -> tuple[str, float]:
    flags = _flags(info)
    if arch == "x86_64":
        hybrid = ""
        for kind, label in (("cpu_core", "p-core"), ("cpu_atom", "e-core")):
            if cpu in _cpu_list(_read(Path(f"/sys/devices/{kind}/cpus")) or ""):
                hybrid = f"-{label}"
        vendor = info.get("vendor_id", "")
        if "avx512f" in flags:
            flops = 32 if vendor == "AuthenticAMD" else 64
        elif {"avx2", "fma"} <= flags:
            flops = 32
        else:
            flops = 16 if "avx" in flags else 8
        return _slug(info.get("model name", "x86_64")) + hybrid, flops
    part = info.get("cpu part", "").lower()
    key = f"{info.get('cpu implementer', '0x41').lower()}:{part}"
    if key in ARM_PARTS:
        return ARM_PARTS[key]
    if arch == "aarch64":
        return f"arm-{part or 'unknown'}", 16 if "asimd" in flags else 4
    return f"arm-{part or 'unknown'}", 8 if "neon" in flags else 2


def _max_freq_mhz(cpu: int, info: dict[str, str], lscpu: _LazyLscpu) -> float:
    khz = _read(SYS_CPU / f"cpu{cpu}/cpufreq/cpuinfo_max_freq")
    if khz and khz.isdigit():
        return round(int(khz) / 1000.0)
    for source in (lscpu.get("cpu max mhz"), info.get("cpu mhz")):
        try:
            if source and float(source) > 0:
                return round(float(source), -1)  # current clock: rounded for stability
        except ValueError:
            pass
    nominal = re.search(r"@\s*([\d.]+)\s*GHz", info.get("model name", ""))
    return float(nominal.group(1)) * 1000 if nominal else 1000.0


def _caches(cpu: int) -> list[tuple[int, str, float, str]]:
    """(level, type, size KiB, shared_cpu_list) for each cache index of ``cpu``."""
    out = []
    for index in sorted((SYS_CPU / f"cpu{cpu}/cache").glob("index*")):
        level, kind = _read(index / "level"), _read(index / "type")
        size = _size_kib(_read(index / "size") or "")
        if level and level.isdigit() and kind and size is not None:
            out.append((int(level), kind, size, _read(index / "shared_cpu_list") or str(cpu)))
    return out


def _size_kib(text: str) -> float | None:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?)(i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        return None
    scale = {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 * 1024}[m.group(2).upper()]
    return float(m.group(1)) * scale


def _lscpu_cache_kib(lscpu: _LazyLscpu, key: str) -> float:
    """Per-instance size from lscpu's "L2 cache: 2 MiB (2 instances)"."""
    text = lscpu.get(key) or ""
    m = re.match(r"([\d.]+\s*[KMG]i?B?)(?:\s*\((\d+) instances?\))?", text)
    size = _size_kib(m.group(1)) if m else None
    if size is None:
        return 0.0
    return size / int(m.group(2)) if m and m.group(2) else size


def _clusters(per_cpu: dict[int, dict[str, Any]], lscpu: _LazyLscpu) -> list[Cluster]:
    groups: dict[tuple[str, float], list[int]] = {}
    for cpu, facts in per_cpu.items():
        groups.setdefault((facts["core_type"], facts["freq"]), []).append(cpu)
    ordered = sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0]))
    clusters = []
    for i, ((core_type, freq), cpus) in enumerate(ordered):
        l1d, l2, l3 = _cluster_caches([per_cpu[c]["caches"] for c in cpus], lscpu, len(cpus))
        name = "cpu" if len(ordered) == 1 else f"c{i}-{core_type}"[:40]
        flops = per_cpu[cpus[0]]["flops"]
        clusters.append(Cluster(
            name=re.sub(r"[^A-Za-z0-9_.-]", "-", name), core_type=core_type, cpu_ids=sorted(cpus),
            max_freq_mhz=freq, flops_per_cycle=flops, l1d_kib=l1d, l2_kib=l2, l3_kib=l3,
            fp16_arithmetic=all(per_cpu[c]["fp16"] for c in cpus),
            simd=sorted(set.intersection(*(per_cpu[c]["simd"] for c in cpus))),
            idle_power_w=0.5 * len(cpus), active_power_w_per_core=_core_power(flops, freq)))
    return clusters


def _cluster_caches(caches: list[list[tuple[int, str, float, str]]], lscpu: _LazyLscpu,
                    ncpu: int) -> tuple[float, float, float]:
    """L1d per core; L2 summed over the distinct instances; L3 one instance (shared)."""
    l1d, l2_instances, l3 = 0.0, {}, 0.0
    for cpu_caches in caches:
        for level, kind, size, shared in cpu_caches:
            if level == 1 and kind == "Data":
                l1d = size
            elif level == 2:
                l2_instances[shared] = size
            elif level == 3:
                l3 = max(l3, size)
    if not l1d:
        l1d = _lscpu_cache_kib(lscpu, "l1d cache")
    l2 = sum(l2_instances.values()) if l2_instances else _lscpu_cache_kib(lscpu, "l2 cache") * ncpu
    if not l3:
        l3 = _lscpu_cache_kib(lscpu, "l3 cache")
    return l1d, l2, l3


def _core_power(flops: float, freq_mhz: float) -> float:
    """Rough active watts per core: wide server/desktop cores ~5 W, small Arm cores ~0.3-1.5 W."""
    if flops >= 32:
        return 5.0
    return round(0.25 + 0.5 * (flops / 8) * (freq_mhz / 2000), 2)


def _cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit():
            cpus.update(range(int(lo), int(hi) + 1) if hi.isdigit() else [int(lo)])
    return cpus


def _model_name(info: dict[int, dict[str, str]], lscpu: _LazyLscpu) -> str:
    first = info[min(info)] if info else {}
    for key in ("model name", "hardware"):
        if first.get(key):
            return first[key]
    dt = _read(Path("/proc/device-tree/model"))
    return (dt or lscpu.get("model name") or platform.processor() or "unknown").strip("\x00")


def _family() -> str:
    if Path("/etc/nv_tegra_release").exists():
        return "jetson"
    if "raspberry pi" in (_read(Path("/proc/device-tree/model")) or "").lower():
        return "rpi"
    return "linux"


def _dram_mib() -> int:
    m = re.search(r"MemTotal:\s+(\d+)\s+kB", _read(Path("/proc/meminfo")) or "")
    if m:
        return max(1, int(m.group(1)) // 1024)
    return max(1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)


def _engines() -> list[str]:
    engines = ["native"]
    if importlib.util.find_spec("onnxruntime") is not None:
        engines.append("onnxruntime")
        from importlib.metadata import PackageNotFoundError, version

        try:
            version("onnxruntime-gpu")
            engines.append("onnxruntime-cuda")
        except PackageNotFoundError:
            pass
    if any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime")):
        engines.append("litert")
    return engines


def _slug(text: str) -> str:
    text = re.sub(r"\(r\)|\(tm\)|@.*$|\bcpu\b|\bprocessor\b", "", text, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40] or "x86_64"
