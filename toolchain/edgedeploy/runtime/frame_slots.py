"""Frame slots: shared memory between the service and a client on the runner's own machine.

Over the Unix socket a frame's bytes would cross the kernel twice each way (client -> socket ->
service, then back for the result); for a 1 MiB frame that is most of a round trip. With slots,
the service creates one anonymous memory file (Linux ``memfd``) holding ``count`` slots, seals
its size so no client can shrink it under the service (a shrunk mapping faults the process that
reads it), maps it, and passes the descriptor with its WELCOME (SCM_RIGHTS: only the connected
peer receives it; nothing appears in the file system). A slot holds one frame's inputs followed
by its results, each tensor at an offset aligned to 64 bytes, in the advertised shapes and
dtypes. The client writes a frame into a free slot (the one freed last: it is still in the
caches) and sends a 12-byte SLOT_FRAME; the service copies the inputs into its pipeline, writes
the outputs into the same slot and answers with a SLOT_RESULT; the client copies them out, and
the slot is free again. The window (at most ``count`` frames unanswered) keeps a slot free for
every frame the client may send.

Stdlib and numpy only; :func:`supported` is False where the platform lacks memfd or descriptor
passing, and both sides then use inline frames.
"""

from __future__ import annotations

import mmap
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedeploy.runtime.ir import TensorInfo

try:
    import fcntl
except ImportError:  # not POSIX: inline frames only
    fcntl = None  # type: ignore[assignment]

ALIGN = 64


def supported() -> bool:
    """This platform can create, seal and pass a memory file."""
    return fcntl is not None and hasattr(fcntl, "F_ADD_SEALS") \
        and hasattr(os, "memfd_create") and hasattr(socket, "send_fds")


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class SlotLayout:
    """Where each tensor of a slot lies; the WELCOME carries it as ``slots``."""

    count: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def _offsets(self, tensors: Sequence[TensorInfo], start: int) -> list[int]:
        out, pos = [], start
        for t in tensors:
            out.append(pos)
            pos += _aligned(t.nbytes)
        return out

    @property
    def input_bytes(self) -> int:
        return sum(_aligned(t.nbytes) for t in self.inputs)

    @property
    def slot_bytes(self) -> int:
        return max(ALIGN, self.input_bytes + sum(_aligned(t.nbytes) for t in self.outputs))

    @property
    def total_bytes(self) -> int:
        return self.count * self.slot_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "slot_bytes": self.slot_bytes, "align": ALIGN}

    def matches(self, d: dict[str, Any]) -> bool:
        """The peer computed the same layout (it is derived, not negotiated)."""
        return d.get("count") == self.count and d.get("slot_bytes") == self.slot_bytes \
            and d.get("align") == ALIGN


class Slots:
    """A mapped slot region; ``inputs(k)`` and ``outputs(k)`` are views of slot ``k``. The
    mapping goes with the last reference to it (a frame in flight may still hold a view)."""

    def __init__(self, layout: SlotLayout, region: mmap.mmap) -> None:
        self.layout = layout
        self._region = region
        base = np.frombuffer(region, dtype=np.uint8, count=layout.total_bytes)
        self._in = [self._views(base, k, layout.inputs, 0) for k in range(layout.count)]
        self._out = [self._views(base, k, layout.outputs, layout.input_bytes)
                     for k in range(layout.count)]

    def _views(self, base: np.ndarray, k: int, tensors: Sequence[TensorInfo], start: int
               ) -> list[np.ndarray]:
        at = k * self.layout.slot_bytes
        return [base[at + off: at + off + t.nbytes].view(np.dtype(t.dtype)).reshape(t.shape)
                for off, t in zip(self.layout._offsets(tensors, start), tensors, strict=True)]

    @property
    def count(self) -> int:
        return self.layout.count

    def inputs(self, k: int) -> list[np.ndarray]:
        return self._in[k]

    def outputs(self, k: int) -> list[np.ndarray]:
        return self._out[k]

    @classmethod
    def create(cls, layout: SlotLayout) -> tuple[Slots, int]:
        """A new sealed region and its descriptor (the caller passes it on, then closes it)."""
        fd = os.memfd_create("edgedeploy-frames", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, layout.total_bytes)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            region = mmap.mmap(fd, layout.total_bytes)
        except BaseException:
            os.close(fd)
            raise
        return cls(layout, region), fd

    @classmethod
    def attach(cls, layout: SlotLayout, fd: int) -> Slots | None:
        """The region behind ``fd`` (closed here), or None when it is not one this layout fits:
        too small, or not sealed against shrinking."""
        try:
            sealed = fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
            if not sealed or os.fstat(fd).st_size < layout.total_bytes:
                return None
            return cls(layout, mmap.mmap(fd, layout.total_bytes))
        except OSError:
            return None
        finally:
            os.close(fd)
