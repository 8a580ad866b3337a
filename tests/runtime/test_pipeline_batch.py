"""Micro-batching in a pipeline stage: a replica runs the frames already waiting for it (up to
its batch) as one call; every frame still arrives once, in order, with its own result, and a
lone frame never waits for company."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

import pipeline_stages as ps

from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.errors import InputError
from edgedeploy.runtime.pipeline import Pipeline, StageSpec, TensorSpec

ROW = (TensorSpec((1, 4)),)
CPUS = tuple(available_cpus())


def frame(k: int) -> list[np.ndarray]:
    return [np.full((1, 4), k, dtype=np.float32)]


def batched(name: str, scale: float, shift: float, replicas: int, batch: int,
            sleep_ms: float = 2.0) -> StageSpec:
    return StageSpec(name=name, cpus=CPUS, replicas=replicas, factory=ps.batch_affine,
                     factory_args=(scale, shift, sleep_ms), inputs=ROW, outputs=ROW, batch=batch)


def check(stages: list[StageSpec], n: int, affine: list[tuple[float, float]]) -> list[int]:
    """Run n frames flood-fed; assert each comes back once, in order, with its own value;
    return the batch sizes the last stage saw per frame."""
    with Pipeline(stages) as pipe:
        result = pipe.run(frame, n, warmup=2, keep_outputs="all")
        again = pipe.run(frame, 3, keep_outputs="all")  # a second run after the statistics mark
    for k, out in enumerate(result.outputs):
        want = float(k + 2)
        for scale, shift in affine:
            want = want * scale + shift
        np.testing.assert_array_equal(out[0][0, :3], np.full(3, want, dtype=np.float32))
    assert len(again.outputs) == 3
    return [int(out[0][0, 3]) for out in result.outputs]


@pytest.mark.parametrize("replicas,batch", [(1, 4), (2, 2), (2, 3)])
def test_batched_frames_arrive_once_in_order_with_their_own_results(replicas, batch):
    sizes = check([batched("b", 2.0, 1.0, replicas, batch)], 40, [(2.0, 1.0)])
    assert max(sizes) == batch  # a flood fills whole batches
    assert all(1 <= s <= batch for s in sizes)


def test_a_batched_stage_behind_a_replicated_one_reads_every_producer_ring():
    stages = [batched("a", 1.0, 1.0, 3, 1, sleep_ms=0.5), batched("b", 2.0, 0.0, 2, 4)]
    sizes = check(stages, 50, [(1.0, 1.0), (2.0, 0.0)])
    assert max(sizes) > 1


def test_a_lone_frame_runs_alone_and_does_not_wait_for_a_batch():
    with Pipeline([batched("b", 1.0, 0.0, 1, 4)]) as pipe:
        for k in range(3):  # one frame in flight at a time
            pipe.submit(k, frame(k))
            _, outs = pipe.get(timeout=10.0)
            assert int(outs[0][0, 3]) == 1


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replicas=st.integers(1, 2), batch=st.integers(1, 4), n=st.integers(1, 23))
def test_any_frame_count_any_batch_the_same_results_as_unbatched(replicas, batch, n):
    sizes = check([batched("b", 3.0, -1.0, replicas, batch, sleep_ms=1.0)], n, [(3.0, -1.0)])
    assert len(sizes) == n and max(sizes) <= batch


def test_a_batch_needs_a_leading_batch_axis():
    flat = (TensorSpec((4,)),)
    bad = StageSpec(name="b", cpus=CPUS, factory=ps.batch_affine, factory_args=(1.0, 0.0),
                    inputs=flat, outputs=flat, batch=2)
    with pytest.raises(InputError, match="batch axis"):
        Pipeline([bad])
