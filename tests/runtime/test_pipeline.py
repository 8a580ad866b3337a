"""The pipeline executor: order, exactly-once delivery, replication, backpressure, metrics, pinning.

Stage processes are real (spawned); stage functions live in pipeline_stages.py so children can
import them. Every test also checks that no child process and no /dev/shm entry outlives it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import pipeline_stages as ps

from edgedeploy.runtime.affinity import BLAS_SPIN_LOG2_CYCLES, available_cpus
from edgedeploy.runtime.errors import InputError
from edgedeploy.runtime.pipeline import (
    Pipeline,
    StageSpec,
    TensorSpec,
    run_sequential,
    split_cpus,
)

VEC = (TensorSpec((4,)),)
CPUS = tuple(available_cpus())


def frame(k: int) -> list[np.ndarray]:
    return [np.full(4, k, dtype=np.float32)]


def affine_stage(name: str, scale: float, shift: float, replicas: int = 1,
                 jitter_ms: float = 0.0) -> StageSpec:
    if jitter_ms:
        return StageSpec(name=name, cpus=CPUS, replicas=replicas, factory=ps.jittered_affine,
                         factory_args=(scale, shift, jitter_ms), inputs=VEC, outputs=VEC)
    return StageSpec(name=name, cpus=CPUS, replicas=replicas, factory=ps.affine,
                     factory_args=(scale, shift), inputs=VEC, outputs=VEC)


def expected(k: int, stages: list[tuple[float, float]]) -> float:
    x = float(k)
    for scale, shift in stages:
        x = x * scale + shift
    return x


def assert_cleaned_up(pids: list[int], resources: list[str], before: set[str]) -> None:
    """No child alive, none of the pipeline's /dev/shm entries left, no new edgedeploy segment."""
    assert not mp.active_children()
    assert ps.wait_until(lambda: not any(ps.pid_alive(p) for p in pids), 3.0), pids
    assert resources, "the pipeline reported no shared resources"
    assert ps.wait_until(lambda: not set(resources) & ps.shm_entries(), 3.0)
    # entries of this process and its replicas only: tests running in parallel make their own
    mine = [f"-{pid}-" for pid in (os.getpid(), *pids)]

    def new() -> set[str]:
        return {n for n in ps.shm_entries() - before
                if n.startswith("edgedeploy_") and any(m in n for m in mine)}

    assert ps.wait_until(lambda: not new(), 3.0), new()


def run_checked(stages: list[StageSpec], n: int, **kwargs):
    """Run a pipeline, return (result, pipeline) after checking the cleanup."""
    before = ps.shm_entries()
    with Pipeline(stages, **kwargs) as pipe:
        pids = [r["pid"] for r in pipe.replica_info]
        resources = pipe.resource_names()
        assert set(resources) <= ps.shm_entries()
        result = pipe.run(frame, n, warmup=2, keep_outputs="all")
    assert_cleaned_up(pids, resources, before)
    return result, pipe


CONFIGS = {
    "one stage": [(1, 2.0, 1.0, 0.0)],
    "two stages": [(1, 2.0, 1.0, 0.0), (1, 0.5, 3.0, 0.0)],
    "three stages, middle replicated x2 with jitter": [
        (1, 2.0, 1.0, 0.0), (2, 1.0, -1.0, 3.0), (1, 3.0, 0.0, 0.0)],
    "replicas x3 then x2, both jittered": [(3, 1.0, 5.0, 3.0), (2, 2.0, 0.0, 2.0)],
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_frame_arrives_once_in_order_and_equals_the_sequential_result(name: str) -> None:
    config = CONFIGS[name]
    stages = [affine_stage(f"s{i}", sc, sh, r, j) for i, (r, sc, sh, j) in enumerate(config)]
    n = 40
    result, _ = run_checked(stages, n)
    got = [float(out[0][0]) for out in result.outputs]
    # frames 0, 1 were warm-up; frame k's value identifies it, so order and uniqueness show
    want = [expected(k, [(sc, sh) for _, sc, sh, _ in config]) for k in range(2, n + 2)]
    assert got == want
    seq = run_sequential([ps.affine(sc, sh) for _, sc, sh, _ in config], frame, n, warmup=2,
                         keep_outputs="all")
    assert len(seq.outputs) == len(result.outputs) == n
    for a, b in zip(seq.outputs, result.outputs, strict=True):
        np.testing.assert_array_equal(a[0], b[0])


def test_submit_and_get_return_the_callers_sequence_labels_in_order() -> None:
    stages = [affine_stage("a", 1.0, 0.0, replicas=2, jitter_ms=2.0)]
    with Pipeline(stages, queue_depth=2) as pipe:
        labels = [100 + 7 * k for k in range(12)]
        got = []
        for k, label in enumerate(labels):
            pipe.submit(label, frame(k))
            if pipe.in_flight >= 3:
                got.append(pipe.get()[0])
        got += [seq for seq, _ in pipe.results()]
        assert got == labels
        assert pipe.in_flight == 0


def test_a_large_stage_spec_reaches_its_replicas_through_a_file_that_is_then_removed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage carrying a model bigger than SPEC_PIPE_BYTES: its replicas read the spec from a
    file (not the spawn pipe), which is gone once they are ready."""
    from edgedeploy.runtime import pipeline as pipeline_mod
    from edgedeploy.runtime.pipeline_spec import SPEC_PIPE_BYTES, write_spec_file

    written: list[str] = []

    def recording(blob: bytes) -> str:
        written.append(write_spec_file(blob))
        return written[-1]

    monkeypatch.setattr(pipeline_mod, "write_spec_file", recording)
    weights = bytes(SPEC_PIPE_BYTES + 1)
    stage = StageSpec(name="big", cpus=CPUS, replicas=2, factory=ps.affine_with_weights,
                      factory_args=(2.0, 1.0, weights), inputs=VEC, outputs=VEC)
    before = ps.shm_entries()
    with Pipeline([stage]) as pipe:
        assert len(written) == 1 and not Path(written[0]).exists()
        pids = [r["pid"] for r in pipe.replica_info]
        resources = pipe.resource_names()
        result = pipe.run(frame, 6, warmup=0, keep_outputs="all")
    assert [float(o[0][0]) for o in result.outputs] == [2.0 * k + 1.0 for k in range(6)]
    assert_cleaned_up(pids, resources, before)


def test_a_slow_last_stage_bounds_the_frames_in_flight() -> None:
    stages = [affine_stage("fast", 1.0, 0.0),
              StageSpec(name="slow", cpus=CPUS, factory=ps.slow_identity, factory_args=(4.0,),
                        inputs=VEC, outputs=VEC)]
    seen: list[int] = []
    with Pipeline(stages, queue_depth=2) as pipe:
        bound = pipe.max_in_flight
        assert bound == 3 * 2  # three boundaries (feed, between, collect) of one 2-slot ring

        def frames(k: int) -> list[np.ndarray]:
            seen.append(pipe.in_flight)  # read by the feeder just before it submits frame k
            return frame(k)

        result = pipe.run(frames, 60)
        assert result.frames == 60
        assert max(seen) <= bound and pipe.peak_in_flight <= bound
        assert pipe.peak_in_flight >= bound - 2  # the feeder really was held back


def test_a_stream_times_frames_when_the_last_stage_finished_them_not_when_they_were_read(
        ) -> None:
    """A reader held off the CPU takes the frames finished meanwhile at once; their completion
    times are still when the stage published them, so no window reads a burst as a rate."""
    stage_ms = 30.0
    stages = [StageSpec(name="slow", cpus=CPUS, factory=ps.slow_identity,
                        factory_args=(stage_ms,), inputs=VEC, outputs=VEC)]
    held: list[float] = []

    def frames(k: int) -> list[np.ndarray]:
        if k == 8:  # the feeder holds the interpreter; the collecting thread cannot run
            start = time.monotonic()
            while time.monotonic() - start < 0.4:
                pass
            held.extend((start, time.monotonic()))
        return frame(k)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        with Pipeline(stages) as pipe:
            done = pipe.stream(frames, 16)
    finally:
        sys.setswitchinterval(interval)
    start, end = held
    # frames in flight finished while the reader was held off, and are timed then
    assert np.any((done > start + 0.05) & (done < end - 0.05)), (done - start, end - start)
    # one replica sleeping 30 ms a frame never finishes two within 30 ms of each other
    assert np.diff(done).min() >= stage_ms / 1e3 * 0.99, np.diff(done)


def test_metrics_are_present_and_sane() -> None:
    stages = [StageSpec(name="sleepy", cpus=CPUS, factory=ps.slow_identity, factory_args=(2.0,),
                        inputs=VEC, outputs=VEC),
              affine_stage("fast", 1.0, 1.0, replicas=2)]
    result, _ = run_checked(stages, 30)
    d = result.to_dict()
    assert {"throughput_fps", "latency_ms_p50", "latency_ms_p99", "stages"} <= set(d)
    assert d["throughput_fps"] > 0 and d["latency_ms_p99"] >= d["latency_ms_p50"] > 0
    sleepy, fast = d["stages"]
    assert (sleepy["name"], sleepy["replicas"], fast["replicas"]) == ("sleepy", 1, 2)
    assert sleepy["frames"] == fast["frames"] == 30  # warm-up frames are not counted
    assert sleepy["service_ms_p99"] >= sleepy["service_ms_p50"] >= 2.0  # it sleeps 2 ms
    assert fast["wait_ms_p50"] >= 0 and 0 < sleepy["utilisation"] <= 1.05
    assert fast["cpus"] == list(CPUS)


def test_a_tail_keeps_the_pipeline_fed_and_counts_in_no_statistic() -> None:
    """Frames fed behind the counted ones (``tail``) run through every stage, but neither the
    run's figures nor the stages' count them, and the pipeline is empty afterwards."""
    stages = [StageSpec(name="sleepy", cpus=CPUS, replicas=2, factory=ps.slow_identity,
                        factory_args=(2.0,), inputs=VEC, outputs=VEC)]
    with Pipeline(stages) as pipe:
        assert pipe.tail == 4  # two whole batches of one frame per replica
        result = pipe.run(frame, 8, warmup=2, keep_outputs="all", tail=pipe.tail)
        assert pipe.in_flight == 0
        again = pipe.run(frame, 3, warmup=0, keep_outputs="last")
    assert result.frames == 8 and result.to_dict()["stages"][0]["frames"] == 8
    assert [float(o[0][0]) for o in result.outputs] == [float(k) for k in range(2, 10)]
    assert again.frames == 3 and float(again.outputs[-1][0][0]) == 2.0


def test_sequential_mode_reports_the_same_metric_shape() -> None:
    result = run_sequential([("double", ps.affine(2.0, 0.0)), ps.slow_identity(1.0)], frame, 10)
    d = result.to_dict()
    assert d["mode"] == "sequential" and [s["name"] for s in d["stages"]] == ["double", "stage1"]
    assert d["latency_ms_p99"] >= d["latency_ms_p50"] >= 1.0 and d["throughput_fps"] > 0
    assert set(d["stages"][0]) == set(run_checked([affine_stage("a", 1, 0)], 3)[0]
                                      .to_dict()["stages"][0])
    np.testing.assert_array_equal(result.outputs[-1][0], np.full(4, 18.0, np.float32))


def test_a_stage_runs_pinned_to_the_cpus_it_was_given() -> None:
    cpu = CPUS[-1]
    out_specs = (TensorSpec((8,), "int64"), TensorSpec((3,), "int64"))
    stages = [StageSpec(name="pinned", cpus=(cpu,), factory=ps.report_affinity,
                        factory_args=(8,), inputs=VEC, outputs=out_specs)]
    result, pipe = run_checked(stages, 3)
    cpus, info = result.outputs[-1]
    assert [c for c in cpus if c >= 0] == [cpu]
    assert info[1] == 1  # BLAS/OpenMP threads bounded to the stage's one core
    # ... and idle BLAS threads sleep soon, unless the user said otherwise
    assert info[2] == (int(os.environ["OPENBLAS_THREAD_TIMEOUT"])
                       if "OPENBLAS_THREAD_TIMEOUT" in os.environ else BLAS_SPIN_LOG2_CYCLES)
    assert pipe.replica_info[0]["cpus"] == [cpu]


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two cpus")
def test_replicas_split_the_stage_cpus_between_them() -> None:
    out_specs = (TensorSpec((8,), "int64"), TensorSpec((3,), "int64"))
    stages = [StageSpec(name="rep", cpus=CPUS[:2], replicas=2, factory=ps.report_affinity,
                        factory_args=(8,), inputs=VEC, outputs=out_specs)]
    result, pipe = run_checked(stages, 4, start_method="forkserver")
    got = {tuple(int(c) for c in out[0] if c >= 0) for out in result.outputs}
    assert got == {(CPUS[0],), (CPUS[1],)}
    assert sorted(tuple(r["cpus"]) for r in pipe.replica_info) == [(CPUS[0],), (CPUS[1],)]


def test_split_cpus_divides_when_there_are_enough_and_shares_otherwise() -> None:
    assert split_cpus((0, 1, 2, 3), 2) == [(0, 1), (2, 3)]
    assert split_cpus((0, 1, 2), 2) == [(0, 1), (2,)]
    assert split_cpus((0,), 3) == [(0,), (0,), (0,)]


@pytest.mark.parametrize("bad, match", [
    ({"start_method": "fork"}, "start_method"),
    ({"queue_depth": 0}, "queue_depth"),
])
def test_bad_settings_are_input_errors(bad: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Pipeline([affine_stage("a", 1, 0)], **bad)


def test_mismatched_stage_tensors_and_unavailable_cpus_are_input_errors() -> None:
    other = StageSpec(name="b", cpus=CPUS, factory=ps.identity, inputs=(TensorSpec((5,)),),
                      outputs=(TensorSpec((5,)),))
    with pytest.raises(InputError, match="stage b: inputs"):
        Pipeline([affine_stage("a", 1, 0), other])
    far = StageSpec(name="far", cpus=(max(CPUS) + 64,), factory=ps.identity, inputs=VEC,
                    outputs=VEC)
    with pytest.raises(InputError, match="far"):
        Pipeline([far])


def test_a_lambda_factory_is_refused_with_a_hint() -> None:
    stage = StageSpec(name="anon", cpus=CPUS, factory=lambda: ps.identity(), inputs=VEC,
                      outputs=VEC)
    with pytest.raises(InputError, match="anon") as info, Pipeline([stage]):
        pass
    assert "module-level" in str(info.value)
