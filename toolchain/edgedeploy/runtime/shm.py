"""Shared-memory ring buffers that carry tensors between pipeline stages without pickling them.

A :class:`Ring` is a single-producer/single-consumer FIFO of ``capacity`` fixed-size slots in one
``multiprocessing.shared_memory.SharedMemory`` segment. Each slot holds a 64-byte header
(``index`` = the pipeline's dense frame counter, ``seq`` = the caller's label, ``flags``, and
when the producer published it, in ``time.monotonic_ns``) followed
by the tensors' bytes laid out by the ring's :class:`TensorSpec` list, each 64-byte aligned, so
both sides see the tensors as numpy views straight into the buffer. Two counting semaphores
(``free`` and ``filled``) synchronise the sides; because the ring is bounded, a full ring blocks
its producer: that is the pipeline's backpressure.

Every blocking call takes a timeout and returns ``None`` on expiry instead of blocking forever, so
callers can check for dead peers between polls (a killed process never releases a semaphore).

A wait may first spin for a bounded time (:class:`Spin`) before it sleeps in the semaphore: a
futex sleep and the kernel wake-up cost tens of microseconds per hop, more than copying a 1 MiB
tensor. Spinning only pays on a core nobody else needs, so it is off unless the caller turns it
on (pipeline.py turns it on for replicas pinned to cores of their own).

Slots are sized by each tensor's element type (``TensorSpec.dtype``): a quantized graph hands
uint8/int8/int32 tensors between stages as such, a quarter of the float32 bytes for 8-bit ones;
writing a tensor the slot's type cannot hold exactly (int32 into int8 or float32) is an error,
never a silent cast.

Names: a ring's segment and its two semaphores are ``edgedeploy_<tag>-<pid>-<hex>`` in /dev/shm
(``sem.`` in front for the semaphores), ``<tag>`` being the bundle (:func:`set_owner_tag`) and
``<pid>`` the creating process. A SIGKILL of the whole process group - systemd's final kill, an
OOM kill of the cgroup, the deployer's KILL of a stuck runner - takes multiprocessing's resource
tracker along, and nothing would unlink them; /dev/shm is RAM on a board. The names let the next
runner of the bundle find its dead predecessor's entries and unlink them (:func:`reclaim_stale`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from .errors import ExecutionError, InputError

ALIGN = 64
HEADER_BYTES = 64
#: Slot flags: a frame, the end of the stream, or a statistics mark (see pipeline.py).
DATA, EOS, MARK = 1, 2, 4
#: Set on DATA slots whose timings stages leave out of their statistics.
WARMUP = 8
#: Prefix of every segment this module creates, so tests and operators can find leaks.
SHM_PREFIX = "edgedeploy_"
#: Default spin budget of a waiting stage with cores of its own (see :class:`Spin`).
DEFAULT_SPIN_S = 200e-6
#: Where POSIX shared memory and named semaphores appear (Linux).
SHM_DIR = "/dev/shm"
#: ``[sem.]edgedeploy_<tag>-<pid>-<hex>``: which bundle and which process created an entry.
_OWNED = re.compile(r"^(?:sem\.)?" + SHM_PREFIX + r"([A-Za-z0-9]+)-([0-9]+)-[0-9a-f]+$")
_tag = "anon"


def _clean_tag(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", tag)[:16] or "anon"


def set_owner_tag(tag: str) -> str:
    """Name this process's rings after ``tag`` (the runner passes its bundle's name) so that
    :func:`reclaim_stale` of a later runner of the same bundle finds them; returns the tag as
    used (letters and digits, at most 16)."""
    global _tag
    _tag = _clean_tag(tag)
    return _tag


def _name_prefix() -> str:
    return f"{SHM_PREFIX}{_tag}-{os.getpid()}-"


def owned_name() -> str:
    """A fresh ``edgedeploy_<tag>-<pid>-<hex>`` name: :func:`reclaim_stale` finds it."""
    return _name_prefix() + secrets.token_hex(6)


def _pid_gone(pid: int) -> bool:
    """No such process, or a zombie (dead, its mappings gone; only its exit status is left)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # another user's live process
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def reclaim_stale(tag: str | None = None, shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink the segments and semaphores that dead processes of ``tag`` (default: this
    process's tag) left in ``shm_dir``; returns their names.

    Only entries whose creating pid is gone are touched: a live runner's rings - this bundle's
    under another install, or another bundle's - are never unlinked. A recycled pid only delays
    the reclaim of an entry to a later start.
    """
    want = _clean_tag(tag) if tag is not None else _tag
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return []
    gone: list[str] = []
    for name in sorted(names):
        match = _OWNED.match(name)
        if not match or match.group(1) != want:
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or not _pid_gone(pid):
            continue
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.unlink(os.path.join(shm_dir, name))
            gone.append(name)
    return gone


def _semaphore(ctx: Any, value: int) -> Any:
    """``ctx.Semaphore(value)`` named ``sem.<prefix><hex>`` instead of ``sem.mp-<random>``.

    multiprocessing draws the name from ``SemLock._make_name``; it is replaced on this instance
    only, before the constructor runs, so the object is still a plain Semaphore (children
    unpickle it without importing this module, i.e. before numpy loads). Where that hook does not
    exist the semaphore keeps multiprocessing's name (and is not reclaimable).
    """
    from multiprocessing import synchronize

    if ctx.get_start_method() == "fork":  # unlinked at once: no name to leak
        return ctx.Semaphore(value)
    sem = synchronize.Semaphore.__new__(synchronize.Semaphore)
    sem._make_name = lambda: "/" + _name_prefix() + secrets.token_hex(4)
    synchronize.Semaphore.__init__(sem, value, ctx=ctx)
    return sem


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one tensor crossing a ring (fixed per ring: slots are fixed-size)."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def as_tuple(self) -> tuple[tuple[int, ...], str]:
        return (tuple(int(d) for d in self.shape), str(np.dtype(self.dtype)))


def _fits(src: np.dtype, dst: np.dtype) -> bool:
    """Whether a ring slot of ``dst`` holds ``src`` values: float to float as before (float64
    frames into float32 rings), anything involving integers only without loss (int8 into an
    int8 or float32 slot, never int32 into int8 or float32)."""
    if src == dst or (src.kind == "f" and dst.kind == "f"):
        return True
    return bool(np.can_cast(src, dst, "safe"))


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def slot_layout(specs: Sequence[TensorSpec]) -> tuple[list[int], int]:
    """Byte offsets of each tensor inside a slot and the (aligned) slot size."""
    offsets, pos = [], HEADER_BYTES
    for spec in specs:
        offsets.append(pos)
        pos = _align(pos + max(spec.nbytes, 1))
    return offsets, pos


class Spin:
    """Bounded, adaptive spin-then-block acquisition of a semaphore (one per waiting side).

    The spin polls the semaphore without blocking (``sem_trywait``: a shared-memory atomic, no
    system call), yielding the core between polls, for at most ``budget_s``; then it blocks as
    before. It adapts like an adaptive mutex so that a stage whose input comes later than the
    budget does not burn a spin on every frame: each spin that fails doubles the number of
    following waits that skip the spin (1, 2, 4 ... 64); a spin that catches the data resets it.
    So a waiting side burns at most ``budget_s`` per wait, and about ``budget_s / 64`` per wait
    once waits are regularly longer than the budget. ``budget_s=0`` is a plain blocking wait.
    """

    MAX_SKIP = 64

    def __init__(self, budget_s: float = 0.0) -> None:
        self.budget_s = max(float(budget_s), 0.0)
        self._skip = 0  # waits left that go straight to the blocking wait
        self._backoff = 1
        self.spins = self.caught = 0  # counters, for tests and tuning

    def acquire(self, sem: Any, timeout: float) -> bool:
        """Acquire ``sem`` within about ``budget_s + timeout`` seconds; False on expiry."""
        if sem.acquire(False):
            return True
        if self.budget_s <= 0.0:
            return sem.acquire(True, timeout)
        if self._skip > 0:
            self._skip -= 1
            return sem.acquire(True, timeout)
        self.spins += 1
        clock = time.perf_counter
        end = clock() + self.budget_s
        while clock() < end:
            os.sched_yield()
            if sem.acquire(False):
                self.caught += 1
                self._backoff = 1
                return True
        self._skip, self._backoff = self._backoff, min(2 * self._backoff, self.MAX_SKIP)
        return sem.acquire(True, timeout)


class Ring:
    """A bounded SPSC ring of tensor slots in shared memory (parent creates, children attach).

    Usage on the producer side: ``slot = ring.reserve(timeout)`` then write into
    ``ring.tensors(slot)`` (or :meth:`write`), then :meth:`publish`. Consumer side:
    ``slot = ring.take(timeout)``, read ``ring.header(slot)`` and ``ring.tensors(slot)``, then
    :meth:`release`. Each side keeps its own slot counter, which is why there is one producer and
    one consumer per ring.
    """

    def __init__(self, shm: shared_memory.SharedMemory, capacity: int,
                 specs: Sequence[TensorSpec], free: Any, filled: Any, owner: bool) -> None:
        self._shm = shm
        self.name = shm.name
        self.capacity = capacity
        self.specs = tuple(specs)
        self._free, self._filled = free, filled
        self._owner = owner
        self._next_reserve = 0
        self._next_take = 0
        self._spin_free = self._spin_filled = Spin(0.0)
        offsets, self.slot_bytes = slot_layout(self.specs)
        buf = shm.buf
        self._headers = [np.ndarray((4,), np.int64, buf, s * self.slot_bytes)
                         for s in range(capacity)]
        self._views = [
            [np.ndarray(sp.shape, np.dtype(sp.dtype), buf, s * self.slot_bytes + off)
             for sp, off in zip(self.specs, offsets, strict=False)]
            for s in range(capacity)
        ]

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, ctx: Any, capacity: int, specs: Sequence[TensorSpec]) -> Ring:
        """Allocate a ring; ``ctx`` is the multiprocessing context its semaphores must match."""
        if capacity < 1:
            raise InputError(f"ring capacity must be >= 1, got {capacity}")
        _, slot_bytes = slot_layout(specs)
        name = owned_name()
        shm = shared_memory.SharedMemory(name=name, create=True, size=capacity * slot_bytes)
        return cls(shm, capacity, specs, _semaphore(ctx, capacity), _semaphore(ctx, 0),
                   owner=True)

    def handle(self) -> tuple:
        """Plain tuple to hand to a child at spawn time (unpickling it needs no numpy)."""
        return (self.name, self.capacity, tuple(s.as_tuple() for s in self.specs),
                self._free, self._filled)

    @classmethod
    def attach(cls, handle: tuple) -> Ring:
        """Open a ring created by another process from its :meth:`handle`."""
        name, capacity, specs, free, filled = handle
        shm = shared_memory.SharedMemory(name=name)
        return cls(shm, capacity, [TensorSpec(tuple(s), d) for s, d in specs], free, filled,
                   owner=False)

    def set_spin(self, budget_s: float) -> None:
        """Spin up to ``budget_s`` before blocking in :meth:`reserve` and :meth:`take` (this side
        only: each process sets it on its own attached copy)."""
        self._spin_free, self._spin_filled = Spin(budget_s), Spin(budget_s)

    def resource_names(self) -> list[str]:
        """Entries this ring holds in /dev/shm: the segment and its two named semaphores."""
        names = [self.name]
        for sem in (self._free, self._filled):
            sem_name = getattr(getattr(sem, "_semlock", None), "name", None)
            if sem_name:
                names.append("sem." + sem_name.lstrip("/"))
        return names

    # -- producer -----------------------------------------------------------------------------
    def reserve(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for a free slot; its number, or None on timeout."""
        if not self._spin_free.acquire(self._free, timeout):
            return None
        slot = self._next_reserve % self.capacity
        self._next_reserve += 1
        return slot

    def write(self, slot: int, tensors: Sequence[np.ndarray] | np.ndarray) -> None:
        """Copy ``tensors`` into a reserved slot, checking them against the ring's specs."""
        if isinstance(tensors, np.ndarray):  # a stage returning one bare array
            tensors = [tensors]
        views = self._views[slot]
        if len(tensors) != len(views):
            raise ExecutionError(f"expected {len(views)} tensors, got {len(tensors)}")
        for k, (dst, src) in enumerate(zip(views, tensors, strict=False)):
            src = np.asarray(src)
            if src.shape != dst.shape:
                raise ExecutionError(
                    f"tensor {k} has shape {src.shape}, the ring expects {dst.shape}")
            if not _fits(src.dtype, dst.dtype):
                raise ExecutionError(
                    f"tensor {k} is {src.dtype}, the ring carries {dst.dtype}",
                    hint="declare the boundary tensor's element type in its TensorSpec "
                         "(quantized graphs hand uint8/int8/int32 tensors between stages)")
            np.copyto(dst, src, casting="same_kind")

    def publish(self, slot: int, index: int, seq: int, flags: int) -> None:
        """Fill the slot's header, stamp it with the time, and hand it to the consumer."""
        header = self._headers[slot]
        header[0], header[1], header[2] = index, seq, flags
        header[3] = time.monotonic_ns()
        self._filled.release()

    # -- consumer -----------------------------------------------------------------------------
    def take(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for a filled slot; its number, or None on timeout."""
        if not self._spin_filled.acquire(self._filled, timeout):
            return None
        slot = self._next_take % self.capacity
        self._next_take += 1
        return slot

    def take_ready(self) -> int | None:
        """A filled slot if one is already waiting (no wait, no spin); else None."""
        if not self._filled.acquire(False):
            return None
        slot = self._next_take % self.capacity
        self._next_take += 1
        return slot

    def header(self, slot: int) -> tuple[int, int, int]:
        """(index, seq, flags) of a taken slot."""
        h = self._headers[slot]
        return int(h[0]), int(h[1]), int(h[2])

    def published_s(self, slot: int) -> float:
        """When the producer published a taken slot (``time.monotonic``, one clock for every
        process of the host): when its frame was done, however late the consumer took it."""
        return float(self._headers[slot][3]) * 1e-9

    def tensors(self, slot: int) -> list[np.ndarray]:
        """Views into the slot (valid until :meth:`release`; copy what must outlive it)."""
        return self._views[slot]

    def release(self, slot: int) -> None:
        """Give a taken slot back to the producer."""
        self._free.release()

    # -- teardown -----------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the views and close the mapping; the creating side also unlinks the segment."""
        self._headers, self._views = [], []
        with contextlib.suppress(BufferError, OSError):
            self._shm.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()
        self._free = self._filled = None
