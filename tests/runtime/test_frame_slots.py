"""Frame slots: a client on the runner's machine passes frames and results through memory shared
with the runner alone. Against a real ``main.py serve``: the same answers as inline frames and as
onnxruntime, a region no client can shrink, misuse refused without harm to others, and a socket
forwarded by another process (which drops the descriptor) falling back to inline frames."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.runtime.serving import assert_close, frames, served_bundle

from edgedeploy.client import Client
from edgedeploy.runtime import frame_slots, wire
from edgedeploy.runtime.wire import ServiceError

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not frame_slots.supported(), reason="no memfd on this platform")]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with served_bundle(tmp_path_factory.mktemp("slots")) as pair:
        yield pair


def test_a_local_client_passes_frames_in_shared_memory_with_the_same_answers(served) -> None:
    runner, reference = served
    xs = frames(20, seed=21)
    with Client.unix(runner.socket) as shared, Client.unix(runner.socket, slots=False) as inline:
        assert shared.shared_memory and not inline.shared_memory
        assert_close(shared.infer(xs[0]), reference(xs[0]))
        a = [outs for _, outs in shared.stream(xs)]
        b = [outs for _, outs in inline.stream(xs)]
    for x, got, ref in zip(xs, a, b, strict=True):
        assert_close(got, reference(x))
        for u, v in zip(got, ref, strict=True):
            np.testing.assert_array_equal(u, v)


def test_results_outlive_their_slot(served) -> None:
    """A result is the client's own array: later frames through the same slot leave it be."""
    runner, reference = served
    xs = frames(12, seed=22)
    with Client.unix(runner.socket) as c:
        kept = [c.infer(x) for x in xs]  # one at a time: every frame reuses one slot
    for x, outs in zip(xs, kept, strict=True):
        assert_close(outs, reference(x))


def _raw_hello(path: Path, window: int = 4) -> tuple[socket.socket, dict, list[int]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    hello = {"protocol": wire.PROTOCOL, "window": window, "slots": True}
    wire.send_parts(sock, [wire.control(wire.HELLO, hello)])
    kind, body, fds = wire.read_message_fds(sock, wire.MAX_CONTROL_BYTES)
    assert kind == wire.WELCOME
    return sock, wire.parse_control(body), fds


def test_the_shared_region_is_sealed_against_shrinking(served) -> None:
    runner, _ = served
    sock, welcome, fds = _raw_hello(runner.socket)
    try:
        assert len(fds) == 1 and welcome["slots"]["count"] == 4
        size = os.fstat(fds[0]).st_size
        assert size == welcome["slots"]["count"] * welcome["slots"]["slot_bytes"]
        with pytest.raises(PermissionError):
            os.ftruncate(fds[0], 0)  # would fault the runner when it next touched the region
        with pytest.raises(PermissionError):
            os.ftruncate(fds[0], 2 * size)
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()


@pytest.mark.parametrize("slot", [4, 1 << 31])
def test_a_slot_that_does_not_exist_closes_that_client_only(served, slot: int) -> None:
    runner, reference = served
    x = frames(1, seed=23)[0]
    sock, _, fds = _raw_hello(runner.socket)
    with Client.unix(runner.socket) as other:
        try:
            sock.sendall(wire.slot_message(wire.SLOT_FRAME, 0, slot))
            kind, body = wire.read_message(sock, 1 << 20)
            error = wire.parse_control(body)
            assert kind == wire.ERROR and error["code"] == "protocol" and error["fatal"]
            assert "does not exist" in error["message"]
        finally:
            for fd in fds:
                os.close(fd)
            sock.close()
        assert_close(other.infer(x), reference(x))
    # the runner's status counts the clients it closed for breaking the protocol
    runner.wait_for(lambda s: s["io"]["protocol_errors"] >= 1)


def _children(pid: int) -> list[int]:
    """Every process below ``pid`` (the pipeline's workers), from /proc."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out + [g for c in out for g in _children(c)]


@contextlib.contextmanager
def stopped_workers(pid: int) -> Iterator[None]:
    """The runner's pipeline held still (SIGSTOP): a frame it took cannot be answered."""
    workers = _children(pid)
    assert workers
    for w in workers:
        os.kill(w, signal.SIGSTOP)
    try:
        yield
    finally:
        for w in workers:
            os.kill(w, signal.SIGCONT)


def _unread(sock: socket.socket) -> int:
    """Bytes this end sent that the peer has not read yet (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def test_a_slot_reused_before_its_answer_is_a_protocol_error(served) -> None:
    runner, _ = served
    sock, _, fds = _raw_hello(runner.socket)
    try:
        # the first frame cannot be answered while the workers are stopped, so its slot is
        # still held when the second frame names it (a loaded host could otherwise answer the
        # first before the runner reads the second, which makes the reuse legitimate)
        with stopped_workers(runner.proc.pid):
            sock.sendall(wire.slot_message(wire.SLOT_FRAME, 0, 1)
                         + wire.slot_message(wire.SLOT_FRAME, 1, 1))
            deadline = time.monotonic() + 10
            while _unread(sock):  # the runner has read both frames ...
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(0.2)  # ... and checked the second's slot (microseconds after reading)
        answers = [wire.read_message(sock, 1 << 20) for _ in range(2)]
        assert answers[0][0] in (wire.SLOT_RESULT, wire.RESULT)  # the first frame is answered
        error = wire.parse_control(answers[1][1])
        assert answers[1][0] == wire.ERROR and error["code"] == "protocol"
        assert "still holds" in error["message"]
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()


@contextlib.contextmanager
def forwarded(path: Path) -> Iterator[socket.socket]:
    """A Unix socket whose bytes another process's worth of code copies to the runner's socket
    (as ``ssh -L`` or a bridge does): descriptors passed by the runner do not come through."""
    near, far = socket.socketpair()
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.connect(str(path))

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):  # recv drops SCM_RIGHTS: the kernel closes them
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    threads = [threading.Thread(target=pump, args=pair, daemon=True)
               for pair in ((far, upstream), (upstream, far))]
    for t in threads:
        t.start()
    try:
        yield near
    finally:
        for s in (near, far, upstream):
            s.close()


def test_a_forwarded_socket_falls_back_to_inline_frames(served) -> None:
    runner, reference = served
    xs = frames(6, seed=24)
    with forwarded(runner.socket) as sock:
        c = Client(sock, window=4, slots=True)
        try:
            assert not c.shared_memory  # asked, granted, but no descriptor arrived
            for index, outs in c.stream(xs):
                assert_close(outs, reference(xs[index]))
        finally:
            c.close()


def test_an_unsealed_region_is_not_attached() -> None:
    shape = (1, 3, 8, 8)
    layout = frame_slots.SlotLayout(2, (wire.TensorDesc("x", shape),),
                                    (wire.TensorDesc("y", (1, 10)),))
    fd = os.memfd_create("unsealed")
    os.ftruncate(fd, layout.total_bytes)
    assert frame_slots.Slots.attach(layout, fd) is None  # a client could shrink it under us
    with pytest.raises(OSError):
        os.fstat(fd)  # attach closed it either way


def test_a_region_too_small_for_the_layout_is_not_attached() -> None:
    small = frame_slots.SlotLayout(1, (wire.TensorDesc("x", (4,)),), ())
    big = frame_slots.SlotLayout(8, (wire.TensorDesc("x", (1 << 16,)),), ())
    _, fd = frame_slots.Slots.create(small)
    assert frame_slots.Slots.attach(big, fd) is None


_tensor = st.builds(lambda n, shape, dt: wire.TensorDesc(f"t{n}", tuple(shape), dt),
                    st.integers(0, 99), st.lists(st.integers(1, 7), min_size=0, max_size=4),
                    st.sampled_from(["float32", "uint8", "int32", "float16", "int64"]))


@given(st.integers(1, 4), st.lists(_tensor, min_size=1, max_size=4),
       st.lists(_tensor, min_size=0, max_size=3))
def test_every_tensor_of_every_slot_has_its_own_aligned_bytes(count, inputs, outputs) -> None:
    layout = frame_slots.SlotLayout(count, tuple(inputs), tuple(outputs))
    slots, fd = frame_slots.Slots.create(layout)
    os.close(fd)
    views = [v for k in range(count) for v in slots.inputs(k) + slots.outputs(k)]
    for k, v in enumerate(views):
        assert v.ctypes.data % frame_slots.ALIGN == 0
        v[...] = k + 1  # every view written with its own number ...
    for k, v in enumerate(views):
        assert (v == np.asarray(k + 1).astype(v.dtype)).all()  # ... and none overwrote another


def test_parse_slot_checks_length_and_range() -> None:
    msg = wire.slot_message(wire.SLOT_RESULT, 7, 3)
    assert wire._head(msg[:wire.HEAD.size], 0) == (wire.SLOT_RESULT, wire.SLOT.size)
    assert wire.parse_slot(msg[wire.HEAD.size:], 4) == (7, 3)
    with pytest.raises(ServiceError, match="does not exist"):
        wire.parse_slot(msg[wire.HEAD.size:], 3)
    with pytest.raises(ServiceError, match="bytes"):
        wire.parse_slot(msg[wire.HEAD.size:-1], 4)
