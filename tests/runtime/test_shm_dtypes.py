"""Shared-memory rings carry each tensor in its own element type (quantized graphs hand
uint8/int8/int32 tensors between stages) and refuse a tensor their slot would change."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from edgedeploy.runtime import shm
from edgedeploy.runtime.errors import ExecutionError
from edgedeploy.runtime.shm import Ring, TensorSpec


@pytest.fixture
def ring():
    specs = [TensorSpec((2, 64, 8, 8), "uint8"), TensorSpec((2, 10), "int32"),
             TensorSpec((2, 10), "float32")]
    r = Ring.create(mp.get_context("spawn"), 2, specs)
    yield r
    r.close()


def test_slots_are_sized_by_element_type(ring) -> None:
    offsets, size = shm.slot_layout(ring.specs)
    assert offsets[1] - offsets[0] == 2 * 64 * 8 * 8  # one byte per uint8, not four
    assert size == ring.slot_bytes < shm.slot_layout([TensorSpec(s.shape) for s in ring.specs])[1]


def test_integer_tensors_cross_unchanged(ring) -> None:
    rng = np.random.default_rng(0)
    sent = [rng.integers(0, 256, (2, 64, 8, 8)).astype(np.uint8),
            rng.integers(-2**30, 2**30, (2, 10)).astype(np.int32),
            rng.standard_normal((2, 10))]  # float64 into a float32 slot: as before
    slot = ring.reserve(1.0)
    ring.write(slot, sent)
    ring.publish(slot, 0, 0, shm.DATA)
    got = ring.tensors(ring.take(1.0))
    assert [g.dtype for g in got] == [np.uint8, np.int32, np.float32]
    np.testing.assert_array_equal(got[0], sent[0])
    np.testing.assert_array_equal(got[1], sent[1])


@pytest.mark.parametrize("k, bad", [(1, np.zeros((2, 10), np.int64)),
                                    (0, np.zeros((2, 64, 8, 8), np.float32)),
                                    (2, np.zeros((2, 10), np.int32))])
def test_a_tensor_the_slot_would_change_is_refused(ring, k, bad) -> None:
    tensors = [np.zeros((2, 64, 8, 8), np.uint8), np.zeros((2, 10), np.int32),
               np.zeros((2, 10), np.float32)]
    tensors[k] = bad
    with pytest.raises(ExecutionError, match=f"tensor {k} is"):
        ring.write(ring.reserve(1.0), tensors)
