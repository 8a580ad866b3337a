"""Board descriptor schema: structural rules and the helpers the planner calls."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edgedeploy.errors import TargetError
from edgedeploy.schemas.target import Target


def _cluster(name: str, cpus: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "core_type": "cortex-a72", "cpu_ids": cpus, "max_freq_mhz": 2000,
            "flops_per_cycle": 8, "l1d_kib": 32, "l2_kib": 1024, "idle_power_w": 0.1,
            "active_power_w_per_core": 1.0, **extra}


def _target(clusters: list[dict[str, Any]], **extra: Any) -> Target:
    return Target.model_validate({"name": "t", "arch": "aarch64", "clusters": clusters,
                                  "memory_bw_gbps": 10, "dram_mib": 1024, **extra})


def test_peak_gflops_is_cores_times_clock_times_flops_per_cycle() -> None:
    t = _target([_cluster("big", [4, 5]), _cluster("little", [0, 1, 2, 3], max_freq_mhz=1000)])
    assert t.peak_gflops("big") == pytest.approx(2 * 2000 * 8 / 1000)
    assert t.peak_gflops("little", 1) == pytest.approx(8.0)
    assert t.peak_gflops(t.cluster("little")) == pytest.approx(32.0)
    assert t.all_cpus == [0, 1, 2, 3, 4, 5]
    assert t.cluster("big").cores == 2


def test_the_gpu_counts_as_a_cluster_named_gpu() -> None:
    gpu = {"name": "g", "cuda_cores": 256, "sms": 2, "max_freq_mhz": 1300, "fp32_gflops": 665.6,
           "transfer_gbps": 10, "transfer_latency_us": 20, "idle_power_w": 0.1,
           "active_power_w": 5}
    t = _target([_cluster("big", [0])], gpu=gpu)
    assert t.peak_gflops("gpu") == pytest.approx(665.6)
    with pytest.raises(TargetError, match="has no GPU"):
        _target([_cluster("big", [0])]).peak_gflops("gpu")


def test_unknown_cluster_suggests_the_closest_name() -> None:
    t = _target([_cluster("big", [0]), _cluster("little", [1])])
    with pytest.raises(TargetError, match="did you mean 'little'"):
        t.cluster("litle")


@pytest.mark.parametrize(("clusters", "words"), [
    ([_cluster("a", [0, 1]), _cluster("b", [1, 2])], "cpu 1 is in both cluster 'a' and 'b'"),
    ([_cluster("a", [0]), _cluster("a", [1])], "repeated: a"),
    ([_cluster("a", [0, 0])], "lists a cpu id twice"),
    ([_cluster("gpu", [0])], "reserved for the GPU"),
    ([_cluster("a", [-1])], "cpu ids must be >= 0"),
    ([], "at least 1"),
])
def test_structural_mistakes_are_rejected(clusters: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        _target(clusters)


def test_unknown_fields_and_engines_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        _target([_cluster("a", [0], l2_kb=3)])
    with pytest.raises(ValidationError, match="onnxruntime-cuda"):
        _target([_cluster("a", [0])], engines=["native", "cuda"])


def test_summary_lists_every_cluster() -> None:
    t = _target([_cluster("big", [4, 5]), _cluster("little", [0, 1, 2, 3], core_type="a53")])
    assert t.summary() == "2x cortex-a72@2000 + 4x a53@2000"
