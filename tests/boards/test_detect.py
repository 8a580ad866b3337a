"""This host as a target: real sysfs/procfs data, grouped into clusters, stably fingerprinted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgedeploy.boards import detect
from edgedeploy.boards.detect import detect_local, fingerprint
from edgedeploy.schemas.target import Target


def test_local_clusters_cover_exactly_the_cpus_we_may_run_on() -> None:
    target = detect_local()
    assert target.clusters
    assert set(target.all_cpus) == set(os.sched_getaffinity(0))
    for c in target.clusters:
        assert c.max_freq_mhz > 0 and c.flops_per_cycle >= 2
        assert c.l1d_kib >= 0 and c.l2_kib >= 0
    assert "native" in target.engines
    assert target.dram_mib > 0


def test_engines_reflect_what_is_importable() -> None:
    engines = detect_local().engines
    assert "onnxruntime" in engines  # installed in the test environment
    assert "litert" in engines


def test_fingerprint_is_stable_within_and_across_processes() -> None:
    first = detect_local()
    assert first.fingerprint == fingerprint(first, model_name=first.description.removeprefix(
        "this host: "))
    detect._detect_cached.cache_clear()
    again = detect_local()
    assert again.fingerprint == first.fingerprint and len(first.fingerprint or "") == 16
    code = "from edgedeploy.boards.detect import detect_local; print(detect_local().fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == first.fingerprint


def test_fingerprint_changes_with_the_hardware_facts() -> None:
    target = detect_local()
    other = target.model_copy(deep=True)
    other.clusters[0].l2_kib += 512
    assert fingerprint(other) != fingerprint(target)


def test_each_call_returns_an_independent_copy() -> None:
    a = detect_local()
    a.clusters[0].max_freq_mhz = 1.0
    assert detect_local().clusters[0].max_freq_mhz != 1.0


def test_simd_width_rules_follow_the_documented_assumptions() -> None:
    flags = {"flags": "sse sse2 avx avx2 fma avx512f"}
    assert detect._core_type(0, "x86_64", {**flags, "vendor_id": "GenuineIntel"})[1] == 64
    assert detect._core_type(0, "x86_64", {**flags, "vendor_id": "AuthenticAMD"})[1] == 32
    assert detect._core_type(0, "x86_64", {"flags": "sse avx2 fma"})[1] == 32
    assert detect._core_type(0, "x86_64", {"flags": "sse avx"})[1] == 16
    assert detect._core_type(0, "x86_64", {"flags": "sse sse2"})[1] == 8
    assert detect._core_type(0, "aarch64", {"cpu part": "0xd0b"}) == ("cortex-a76", 16)
    nvidia = {"cpu implementer": "0x4e", "cpu part": "0x003"}
    assert detect._core_type(0, "aarch64", nvidia) == ("denver2", 8)
    assert detect._core_type(0, "aarch64", {"cpu part": "0xd03"}) == ("cortex-a53", 8)
    assert detect._core_type(0, "aarch64", {"cpu part": "0xfff", "features": "fp asimd"})[1] == 16


def test_cache_sizes_and_cpu_lists_parse_like_sysfs_writes_them() -> None:
    assert detect._size_kib("32K") == 32 and detect._size_kib("2048K") == 2048
    assert detect._size_kib("1 MiB") == 1024 and detect._size_kib("junk") is None
    assert detect._cpu_list("0-3,8,10-11") == {0, 1, 2, 3, 8, 10, 11}


def _fake_sysfs(root: Path) -> None:
    """An RK3399-like tree: cpu0-3 Cortex-A53 @ 1416 MHz, cpu4-5 Cortex-A72 @ 1800 MHz."""
    for cpu in range(6):
        big = cpu >= 4
        base = root / f"cpu{cpu}"
        (base / "cpufreq").mkdir(parents=True)
        (base / "cpufreq" / "cpuinfo_max_freq").write_text("1800000\n" if big else "1416000\n")
        for index, (level, kind, size, shared) in enumerate([
                (1, "Data", "32K", str(cpu)), (1, "Instruction", "48K" if big else "32K", str(cpu)),
                (2, "Unified", "1024K" if big else "512K", "4-5" if big else "0-3")]):
            d = base / "cache" / f"index{index}"
            d.mkdir(parents=True)
            for name, value in (("level", level), ("type", kind), ("size", size),
                                ("shared_cpu_list", shared)):
                (d / name).write_text(f"{value}\n")


def _detected_arm(parts: dict[int, dict[str, str]], tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Target:
    """This host's detection run on a six-core aarch64 board: the fake sysfs, ``parts`` as
    its /proc/cpuinfo."""
    _fake_sysfs(tmp_path)
    monkeypatch.setattr(detect, "SYS_CPU", tmp_path)
    monkeypatch.setattr(detect, "_cpuinfo", lambda: parts)
    monkeypatch.setattr(detect.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(detect.os, "sched_getaffinity", lambda pid: set(range(6)))
    detect._detect_cached.cache_clear()
    try:
        return detect_local()
    finally:
        detect._detect_cached.cache_clear()


def test_big_little_sysfs_is_grouped_into_two_clusters(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = detect_local().fingerprint
    parts = {cpu: {"cpu part": "0xd08" if cpu >= 4 else "0xd03", "features": "fp asimd"}
             for cpu in range(6)}
    target = _detected_arm(parts, tmp_path, monkeypatch)
    big, little = target.clusters
    assert (big.core_type, big.cpu_ids, big.max_freq_mhz) == ("cortex-a72", [4, 5], 1800)
    assert (little.core_type, little.cpu_ids, little.max_freq_mhz) == ("cortex-a53",
                                                                       [0, 1, 2, 3], 1416)
    assert (big.l1d_kib, big.l2_kib, little.l2_kib) == (32, 1024, 512)  # shared L2 counted once
    assert target.arch == "aarch64" and target.fingerprint != real
    assert not big.fp16_arithmetic and not little.fp16_arithmetic  # no asimdhp listed


def test_fp16_arithmetic_is_a_fact_of_each_cluster(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Cores listing asimdhp compute fp16 (Cortex-A76 here); the cluster beside them does not
    where its cores do not list it; one core without it keeps its cluster fp32."""
    features = {0: "fp asimd", 1: "fp asimd", 2: "fp asimd asimdhp", 3: "fp asimd",
                4: "fp asimd fphp asimdhp", 5: "fp asimd fphp asimdhp"}
    parts = {cpu: {"cpu part": "0xd0b" if cpu >= 4 else "0xd03", "features": features[cpu]}
             for cpu in range(6)}
    big, little = _detected_arm(parts, tmp_path, monkeypatch).clusters
    assert (big.core_type, big.fp16_arithmetic) == ("cortex-a76", True)
    assert (little.core_type, little.fp16_arithmetic) == ("cortex-a53", False)


def test_simd_extensions_every_core_lists_are_the_clusters_and_in_its_fingerprint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two boards alike in cores, clocks and caches but not in their vector extensions run the
    engines' kernels at different speeds: they must not share a profile."""
    features = {cpu: "fp asimd asimddp" + (" i8mm" if cpu != 5 else "") for cpu in range(6)}
    parts = {cpu: {"cpu part": "0xd0b" if cpu >= 4 else "0xd03", "features": features[cpu]}
             for cpu in range(6)}
    with_dot = _detected_arm(parts, tmp_path / "a", monkeypatch)
    big, little = with_dot.clusters
    assert little.simd == ["asimd", "asimddp", "i8mm"]
    assert big.simd == ["asimd", "asimddp"]  # cpu5 lacks i8mm: the cluster cannot count on it
    plain = {cpu: {**p, "features": "fp asimd"} for cpu, p in parts.items()}
    without = _detected_arm(plain, tmp_path / "b", monkeypatch)
    assert [c.l2_kib for c in without.clusters] == [c.l2_kib for c in with_dot.clusters]
    assert without.fingerprint != with_dot.fingerprint


def test_a_board_without_simd_facts_keeps_its_fingerprint() -> None:
    """Catalog boards list no extensions: their fingerprints (and stored profiles) stay put."""
    target = detect_local()
    bare = target.model_copy(deep=True)
    for c in bare.clusters:
        c.simd = []
    listed = bare.model_copy(deep=True)
    listed.clusters[0].simd = ["avx2"]
    assert fingerprint(listed) != fingerprint(bare)
    assert all("simd" not in c for c in detect.hardware_facts(bare)["clusters"])
    assert "simd" in detect.hardware_facts(listed)["clusters"][0]


@pytest.mark.parametrize("machine, flags, saturates", [
    ("x86_64", "fma avx2", True),  # Zen 3, Haswell..Skylake client: VPMADDUBSW into 16 bits
    ("x86_64", "avx2 avx512f avx512_vnni", False),
    ("x86_64", "avx2 avx_vnni", False),  # Alder Lake's VEX-coded VNNI
    ("aarch64", "fp asimd", False),  # Arm's int8 kernels widen before they add
])
def test_int8_saturation_is_read_from_the_host_flags(machine: str, flags: str, saturates: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect.platform, "machine", lambda: machine)
    monkeypatch.setattr(detect, "_cpuinfo", lambda: {0: {"flags": flags}, 1: {"flags": flags}})
    assert detect.saturates_u8s8() is saturates
