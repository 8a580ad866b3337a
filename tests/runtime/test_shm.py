"""Shared-memory rings: layout, FIFO order across wrap-around, bounded capacity, two processes,
and the bounded spin-before-block wait with its rule for who may spin."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.runtime import pipeline as pipeline_module
from edgedeploy.runtime import shm
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.errors import ExecutionError, InputError, StageError
from edgedeploy.runtime.pipeline import Pipeline, StageSpec, spin_budgets
from edgedeploy.runtime.shm import Ring, TensorSpec, slot_layout

sys.path.insert(0, str(Path(__file__).parent))
import pipeline_stages as ps

CTX = mp.get_context("spawn")


@pytest.fixture
def ring():
    r = Ring.create(CTX, 3, [TensorSpec((2, 3)), TensorSpec((5,), "int64")])
    yield r
    r.close()


def put(r: Ring, index: int, a: np.ndarray, b: np.ndarray) -> None:
    slot = r.reserve(0.1)
    assert slot is not None
    r.write(slot, [a, b])
    r.publish(slot, index, 1000 + index, shm.DATA)


def test_tensors_round_trip_in_fifo_order_across_wrap_around(ring: Ring) -> None:
    for k in range(10):  # more than the capacity: slots are reused
        put(ring, k, np.full((2, 3), k, np.float32), np.arange(5) * k)
        slot = ring.take(0.1)
        assert ring.header(slot) == (k, 1000 + k, shm.DATA)
        a, b = ring.tensors(slot)
        np.testing.assert_array_equal(a, np.full((2, 3), k, np.float32))
        np.testing.assert_array_equal(b, np.arange(5) * k)
        assert b.dtype == np.int64
        ring.release(slot)


def test_a_slot_carries_when_it_was_published_not_when_it_was_taken(ring: Ring) -> None:
    before = time.monotonic()
    put(ring, 0, np.zeros((2, 3)), np.zeros(5, np.int64))
    after = time.monotonic()
    time.sleep(0.2)  # the consumer comes late
    slot = ring.take(0.1)
    assert before <= ring.published_s(slot) <= after


def test_a_full_ring_makes_its_producer_wait_and_an_empty_one_its_consumer(ring: Ring) -> None:
    assert ring.take(0.01) is None
    for k in range(3):
        put(ring, k, np.zeros((2, 3)), np.zeros(5, np.int64))
    assert ring.reserve(0.01) is None  # backpressure: capacity 3 reached
    slot = ring.take(0.01)
    assert ring.header(slot)[0] == 0
    ring.release(slot)
    assert ring.reserve(0.01) is not None


def test_writes_with_the_wrong_shape_or_count_are_refused(ring: Ring) -> None:
    slot = ring.reserve(0.1)
    with pytest.raises(ExecutionError, match="shape"):
        ring.write(slot, [np.zeros((3, 2)), np.zeros(5)])
    with pytest.raises(ExecutionError, match="expected 2 tensors"):
        ring.write(slot, [np.zeros((2, 3))])


def test_tensors_are_views_into_the_segment_not_copies(ring: Ring) -> None:
    slot = ring.reserve(0.1)
    a, _ = ring.tensors(slot)
    assert not a.flags.owndata and a.base is not None
    assert a.ctypes.data % shm.ALIGN == 0


@given(st.lists(st.tuples(st.lists(st.integers(1, 9), min_size=0, max_size=3),
                          st.sampled_from(["float32", "float16", "int8", "int64", "uint8"])),
                min_size=1, max_size=5))
def test_slot_layout_keeps_tensors_aligned_and_disjoint(specs: list) -> None:
    tensor_specs = [TensorSpec(tuple(s), d) for s, d in specs]
    offsets, size = slot_layout(tensor_specs)
    assert offsets[0] >= shm.HEADER_BYTES and size % shm.ALIGN == 0
    ends = [o + max(t.nbytes, 1) for o, t in zip(offsets, tensor_specs, strict=True)]
    assert all(o % shm.ALIGN == 0 for o in offsets)
    assert all(e <= o for e, o in zip(ends, offsets[1:], strict=False)) and ends[-1] <= size


def test_close_unlinks_the_segment_and_its_semaphores() -> None:
    r = Ring.create(CTX, 2, [TensorSpec((4,))])
    names = r.resource_names()
    assert len(names) == 3 and set(names) <= set(os.listdir("/dev/shm"))
    r.close()
    del r
    assert not set(names) & set(os.listdir("/dev/shm"))


def test_capacity_must_be_positive() -> None:
    with pytest.raises(InputError):
        Ring.create(CTX, 0, [TensorSpec((1,))])


def _child_doubles(in_handle: tuple, out_handle: tuple) -> None:
    src, dst = Ring.attach(in_handle), Ring.attach(out_handle)
    slot = src.take(5.0)
    index, seq, flags = src.header(slot)
    out = dst.reserve(5.0)
    dst.write(out, [src.tensors(slot)[0] * 2])
    dst.publish(out, index, seq, flags)
    src.release(slot)
    src.close()
    dst.close()


def test_another_process_reads_and_writes_through_attached_rings() -> None:
    spec = [TensorSpec((64, 64))]
    a, b = Ring.create(CTX, 1, spec), Ring.create(CTX, 1, spec)
    try:
        proc = CTX.Process(target=_child_doubles, args=(a.handle(), b.handle()))
        proc.start()
        x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        slot = a.reserve(1.0)
        a.write(slot, [x])
        a.publish(slot, 0, 42, shm.DATA)
        got = b.take(20.0)
        assert got is not None and b.header(got) == (0, 42, shm.DATA)
        np.testing.assert_array_equal(b.tensors(got)[0], x * 2)
        proc.join(10)
        assert proc.exitcode == 0
    finally:
        a.close()
        b.close()


def test_a_spin_that_catches_the_data_returns_it_without_blocking() -> None:
    sem = CTX.Semaphore(0)
    spin = shm.Spin(5.0)  # far longer than the release below takes
    timer = threading.Timer(0.01, sem.release)
    timer.start()
    try:
        assert spin.acquire(sem, timeout=0.0)
    finally:
        timer.join()
    assert (spin.spins, spin.caught) == (1, 1)


def test_failed_spins_back_off_exponentially_and_a_caught_one_resets_the_backoff() -> None:
    sem = CTX.Semaphore(0)
    spin = shm.Spin(1e-4)
    spun = []
    for _ in range(8):  # nothing ever arrives: spin, skip 1, spin, skip 2, spin, skip 4 ...
        before = spin.spins
        assert not spin.acquire(sem, timeout=0.0)
        spun.append(spin.spins - before)
    assert spun == [1, 0, 1, 0, 0, 1, 0, 0]
    assert spin.caught == 0
    sem.release()  # data already there: taken at once, no spin, backoff unchanged
    assert spin.acquire(sem, timeout=0.0) and spin.spins == 3


def test_a_spin_budget_of_zero_is_a_plain_blocking_wait() -> None:
    sem = CTX.Semaphore(1)
    spin = shm.Spin(0.0)
    assert spin.acquire(sem, timeout=0.0)
    assert not spin.acquire(sem, timeout=0.01)
    assert spin.spins == 0


def test_a_spinning_ring_keeps_fifo_order_capacity_and_timeouts(ring: Ring) -> None:
    ring.set_spin(1e-3)
    assert ring.take(0.0) is None  # empty: spins, then times out instead of blocking forever
    for k in range(3):
        put(ring, k, np.full((2, 3), k, np.float32), np.arange(5))
    assert ring.reserve(0.0) is None  # full: backpressure still holds
    for k in range(3):
        slot = ring.take(0.0)
        assert ring.header(slot)[0] == k
        ring.release(slot)


@pytest.mark.parametrize(("layout", "expected"), [
    ([((0,), 1), ((1,), 1)], [50e-6, 50e-6]),  # a core each: both spin
    ([((0, 1), 2)], [50e-6, 50e-6]),  # replicas split the cores: a core each
    ([((0,), 1), ((0, 1), 1)], [0.0, 0.0]),  # overlapping stages: neither
    ([((0,), 2)], [0.0, 0.0]),  # two replicas on one core: neither
    ([((0,), 1), ((1,), 1), ((1,), 1)], [50e-6, 0.0, 0.0]),
    ([((), 1)], [0.0]),  # unpinned: may land anywhere, so no
])
def test_only_replicas_on_cores_of_their_own_spin(layout: list, expected: list) -> None:
    stages = [StageSpec(name=f"s{i}", cpus=cpus, replicas=r, factory=_child_doubles,
                        inputs=(TensorSpec((1,)),), outputs=(TensorSpec((1,)),))
              for i, (cpus, r) in enumerate(layout)]
    assert spin_budgets(stages, 50.0) == pytest.approx(expected)
    assert spin_budgets(stages, 0.0) == [0.0] * len(expected)


def _one_stage(cpus: tuple[int, ...]) -> list[StageSpec]:
    return [StageSpec(name="s", cpus=cpus, factory=_child_doubles, inputs=(TensorSpec((1,)),),
                      outputs=(TensorSpec((1,)),))]


def test_the_automatic_budget_needs_a_core_left_free_for_the_parent(monkeypatch) -> None:
    monkeypatch.delenv("EDGEDEPLOY_SPIN_US", raising=False)
    monkeypatch.setattr(pipeline_module, "available_cpus", lambda: [0, 1])
    assert spin_budgets(_one_stage((0,))) == pytest.approx([shm.DEFAULT_SPIN_S])
    assert spin_budgets(_one_stage((0, 1))) == [0.0]  # every core taken: the parent starves
    assert spin_budgets(_one_stage((0, 1)), 80.0) == pytest.approx([80e-6])  # explicit: spins


def test_the_spin_budget_comes_from_the_environment_and_is_checked(monkeypatch) -> None:
    stages = _one_stage((0,))
    monkeypatch.setattr(pipeline_module, "available_cpus", lambda: [0, 1])
    monkeypatch.setenv("EDGEDEPLOY_SPIN_US", "120")
    assert spin_budgets(stages) == pytest.approx([120e-6])
    monkeypatch.delenv("EDGEDEPLOY_SPIN_US")
    assert spin_budgets(stages) == pytest.approx([shm.DEFAULT_SPIN_S])
    monkeypatch.setenv("EDGEDEPLOY_SPIN_US", "fast")
    with pytest.raises(InputError, match="EDGEDEPLOY_SPIN_US"):
        spin_budgets(stages)
    with pytest.raises(InputError, match="spin_us"):
        spin_budgets(stages, -1.0)


@pytest.mark.skipif(len(available_cpus()) < 2, reason="needs two cpus")
def test_spinning_stages_deliver_every_frame_in_order_and_a_killed_one_fails_fast() -> None:
    cpus = available_cpus()[:2]
    vec = (TensorSpec((8,)),)
    stages = [StageSpec(name=f"s{c}", cpus=(c,), factory=ps.affine, factory_args=(1.0, 1.0),
                        inputs=vec, outputs=vec) for c in cpus]
    with Pipeline(stages, spin_us=200.0) as pipe:
        assert [r["spin_us"] for r in pipe.replica_info] == pytest.approx([200.0, 200.0])
        result = pipe.run(lambda k: [np.full(8, k, np.float32)], 300, keep_outputs="all")
        got = [float(out[0][0]) for out in result.outputs]
        assert got == [k + 2.0 for k in range(300)]
        os.kill(pipe.replica_info[1]["pid"], signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(StageError, match="SIGKILL"):
            pipe.run(lambda k: [np.zeros(8, np.float32)], 1000)
        assert time.monotonic() - t0 < 10.0
