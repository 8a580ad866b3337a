"""Pipeline executor benchmarks (only `make bench`): hop cost, 2-stage speed-up, soak stability.

Results go to results/bench_pipeline.json. EDGEDEPLOY_SOAK_S sets the soak length (default 60 s;
the full soak of issue 3 is EDGEDEPLOY_SOAK_S=600).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

import pipeline_stages as ps  # noqa: E402

from edgedeploy.runtime.affinity import available_cpus  # noqa: E402
from edgedeploy.runtime.pipeline import Pipeline, StageSpec, TensorSpec  # noqa: E402

RESULTS = ROOT / "results" / "bench_pipeline.json"
CPUS = available_cpus()
MIB = (TensorSpec((1 << 18,)),)  # 1 MiB of float32


def record(key: str, value: dict) -> None:
    """Merge one benchmark's figures into the results file."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = value
    data["host"] = {"cpus": CPUS, "cpu_count": os.cpu_count()}
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\n{key}: {json.dumps(value, indent=1)}")


def identity_stage(name: str, cpu: int) -> StageSpec:
    return StageSpec(name=name, cpus=(cpu,), factory=ps.identity, inputs=MIB, outputs=MIB)


def lockstep_latency_us(stages: list[StageSpec], frames: int) -> float:
    """Median submit-to-result time with one frame in flight (no queueing in the figure)."""
    x = [np.ones(1 << 18, np.float32)]
    with Pipeline(stages) as pipe:
        for k in range(50):
            pipe.submit(k, x)
            pipe.get(copy=False)
        times = []
        for k in range(frames):
            t0 = time.perf_counter()
            pipe.submit(k, x)
            pipe.get(copy=False)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


def streaming_period_us(stages: list[StageSpec], frames: int) -> float:
    x = [np.ones(1 << 18, np.float32)]
    with Pipeline(stages) as pipe:
        result = pipe.run(lambda k: x, frames, warmup=50, keep_outputs="none")
    return 1e6 / result.throughput_fps


def test_hop_overhead_for_a_1_mib_tensor_is_under_100_us() -> None:
    """Added time per stage hop: a 2-stage identity pipeline minus a 1-stage one."""
    last = CPUS[-1]
    one = [identity_stage("only", CPUS[0])]
    two = [identity_stage("first", CPUS[0]), identity_stage("second", last)]
    rounds = [(lockstep_latency_us(one, 400), lockstep_latency_us(two, 400)) for _ in range(3)]
    hop = float(np.median([b - a for a, b in rounds]))
    period = (streaming_period_us(one, 1000), streaming_period_us(two, 1000))
    record("hop_1mib", {
        "one_stage_latency_us": float(np.median([a for a, _ in rounds])),
        "two_stage_latency_us": float(np.median([b for _, b in rounds])),
        "hop_overhead_us": round(hop, 1),
        "streaming_period_us": {"one_stage": round(period[0], 1),
                                "two_stages": round(period[1], 1)},
        "target_us": 100, "met": hop < 100.0,
    })
    assert hop > 0  # the target is reported ("met"), not asserted: timings are not tests


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two cpus")
def test_a_compute_heavy_load_split_over_two_cores_runs_at_least_1_8x_faster() -> None:
    size, rounds, frames = 256, 160, 150
    spec = (TensorSpec((64, size)),)
    whole = [StageSpec(name="whole", cpus=(CPUS[0],), factory=ps.matmul_chain,
                       factory_args=(rounds, size), inputs=spec, outputs=spec)]
    halves = [StageSpec(name=f"half{i}", cpus=(CPUS[i],), factory=ps.matmul_chain,
                        factory_args=(rounds // 2, size), inputs=spec, outputs=spec)
              for i in range(2)]
    x = np.random.default_rng(1).standard_normal((64, size)).astype(np.float32)
    figures = []
    for _ in range(3):  # alternate, so load from elsewhere hits both alike
        with Pipeline(whole) as pipe:
            one = pipe.run(lambda k: [x], frames, warmup=10)
        with Pipeline(halves) as pipe:
            two = pipe.run(lambda k: [x], frames, warmup=10)
        np.testing.assert_allclose(two.outputs[-1][0], one.outputs[-1][0], rtol=1e-4, atol=1e-5)
        figures.append((one.throughput_fps, two.throughput_fps, two.to_dict()))
    speedup = float(np.median([b / a for a, b, _ in figures]))
    record("split_2_cores", {
        "one_stage_fps": round(float(np.median([a for a, _, _ in figures])), 2),
        "two_stage_fps": round(float(np.median([b for _, b, _ in figures])), 2),
        "speedup": round(speedup, 3), "target": 1.8, "met": speedup >= 1.8,
        "two_stage_detail": figures[-1][2],
    })
    assert speedup > 0  # reported, not asserted


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_soak_keeps_every_frame_in_order_and_memory_flat() -> None:
    duration = float(os.environ.get("EDGEDEPLOY_SOAK_S", "60"))
    spec = (TensorSpec((64, 1024)),)  # 256 KiB frames
    stages = [
        StageSpec(name="scale", cpus=(CPUS[0],), factory=ps.affine, factory_args=(1.0, 1.0),
                  inputs=spec, outputs=spec),
        StageSpec(name="jitter", cpus=tuple(CPUS), replicas=2, factory=ps.jittered_affine,
                  factory_args=(1.0, -1.0, 1.0), inputs=spec, outputs=spec),
    ]
    chunk, base, rss0, samples = 400, 0, None, []
    t_end = time.monotonic() + duration
    t_warm = time.monotonic() + min(10.0, duration * 0.1)
    with Pipeline(stages) as pipe:
        pids = [os.getpid()] + [r["pid"] for r in pipe.replica_info]
        while time.monotonic() < t_end:
            start = base
            result = pipe.run(lambda k, s=start: [np.full((64, 1024), s + k, np.float32)],
                              chunk, keep_outputs="all")
            got = np.array([out[0][0, 0] for out in result.outputs])
            np.testing.assert_array_equal(got, np.arange(start, start + chunk, dtype=np.float32))
            base += chunk
            if rss0 is None and time.monotonic() >= t_warm:
                rss0 = {p: rss_kib(p) for p in pids}
            samples.append(result.throughput_fps)
        rss1 = {p: rss_kib(p) for p in pids}
    rss0 = rss0 or rss1
    drift = {str(p): (rss1[p] - rss0[p]) / rss0[p] for p in pids}
    total_drift = (sum(rss1.values()) - sum(rss0.values())) / sum(rss0.values())
    record("soak", {
        "duration_s": duration, "frames": base, "fps_median": round(float(np.median(samples)), 1),
        "rss_kib_start": sum(rss0.values()), "rss_kib_end": sum(rss1.values()),
        "rss_drift_total": round(total_drift, 4),
        "rss_drift_max_process": round(max(drift.values()), 4), "target_drift": 0.05,
    })
    assert base < 2**24  # frame ids stay exact in float32
    assert max(drift.values()) < 0.05
