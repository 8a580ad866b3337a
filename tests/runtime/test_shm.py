"""Shared-memory rings: layout, FIFO order across wrap-around, bounded capacity, two processes."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.runtime import shm
from edgedeploy.runtime.errors import ExecutionError, InputError
from edgedeploy.runtime.shm import Ring, TensorSpec, slot_layout

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
