"""The wire protocol's framing: every allowed dtype, shape and tensor count round-trips bit for bit
through a real socket; what is malformed, oversized or not allowed is refused with a clear error;
the bridge copies the protocol between a pipe and the runner's socket, long socket paths too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgedeploy.runtime import wire
from edgedeploy.runtime.bridge import connect_unix
from edgedeploy.runtime.service import listen_unix

DTYPES = sorted(wire.DTYPES)
ENDIAN = st.sampled_from(["<", ">"])


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(draw(ENDIAN))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6))
    return draw(hnp.arrays(dtype, shape))


def _roundtrip(kind: int, index: int, arrays: list[np.ndarray]) -> tuple[int, int, list]:
    a, b = socket.socketpair()
    with a, b:
        parts = wire.tensor_parts(kind, index, arrays)
        sender = threading.Thread(target=wire.send_parts, args=(a, parts))
        sender.start()
        got_kind, body = wire.read_message(b, 1 << 24)
        sender.join()
    got_index, out = wire.parse_tensors(body)
    return got_kind, got_index, out


@given(index=st.integers(0, 2**64 - 1), arrays=st.lists(tensors(), min_size=0, max_size=4),
       kind=st.sampled_from([wire.FRAME, wire.RESULT]))
def test_frames_round_trip_bit_for_bit(index: int, arrays: list[np.ndarray], kind: int) -> None:
    got_kind, got_index, out = _roundtrip(kind, index, arrays)
    assert (got_kind, got_index, len(out)) == (kind, index, len(arrays))
    for want, got in zip(arrays, out, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == np.ascontiguousarray(want).tobytes()
        assert got.flags.aligned  # data starts 8-byte aligned in the body


def test_a_non_contiguous_view_travels_as_its_values() -> None:
    x = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    _, _, (got,) = _roundtrip(wire.FRAME, 1, [x])
    assert np.array_equal(got, x)


def test_an_oversized_message_is_refused_from_its_header_alone() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(wire.HEAD.pack(1 << 30, wire.FRAME) + b"rest")
        with pytest.raises(wire.TooLarge, match="over the limit of 1024 bytes"):
            wire.read_head(b, 1024)
        assert b.recv(16) == b"rest"  # nothing of the body was consumed
        a.sendall(wire.HEAD.pack(wire.MAX_CONTROL_BYTES + 2, wire.HELLO))
        with pytest.raises(wire.TooLarge):  # control messages have their own small limit
            wire.read_head(b, 1 << 30)


@pytest.mark.parametrize("mutate, message", [
    (lambda body: body[:5], "shorter than its index|truncated"),
    (lambda body: body + b"\0" * 8, "stray bytes"),
    (lambda body: body.replace(b"<f4", b"|O8"), "not allowed|unknown dtype"),
    (lambda body: body.replace(b"<f4", b"<U1"), "not allowed"),
    (lambda body: body[:-1], "runs past"),
])
def test_malformed_bodies_are_protocol_errors(mutate, message) -> None:  # type: ignore[no-untyped-def]
    parts = wire.tensor_parts(wire.FRAME, 3, [np.ones((2, 2), "<f4")])
    body = b"".join(bytes(p) for p in parts)[wire.HEAD.size:]
    with pytest.raises(wire.ProtocolError, match=message):
        wire.parse_tensors(bytearray(mutate(body)))


def test_objects_cannot_be_sent() -> None:
    with pytest.raises(wire.ProtocolError, match="cannot travel"):
        wire.tensor_parts(wire.FRAME, 0, [np.array(["a"], dtype=object)])


def test_control_messages_and_errors() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(wire.error_message("busy", "full"))
        kind, body = wire.read_message(b, 0)
    data = wire.parse_control(body)
    assert kind == wire.ERROR and data == {"code": "busy", "message": "full", "index": None,
                                           "fatal": True}
    with pytest.raises(wire.ProtocolError, match="not a JSON object"):
        wire.parse_control(b"[1]")


@pytest.mark.parametrize("address, parsed", [
    ("/run/x.sock", ("unix", "/run/x.sock", 0)),
    ("unix:///run/x.sock", ("unix", "/run/x.sock", 0)),
    ("tcp://127.0.0.1:7070", ("tcp", "127.0.0.1", 7070)),
    ("tcp://[::1]:7070", ("tcp", "::1", 7070)),
])
def test_addresses(address: str, parsed: tuple) -> None:
    assert wire.parse_address(address) == parsed
    assert wire.parse_address(wire.describe_address(*parsed)) == parsed


@pytest.mark.parametrize("address", ["tcp://host", "tcp://:80", "tcp://h:99999", ""])
def test_bad_addresses_are_clear_errors(address: str) -> None:
    with pytest.raises(wire.ServiceError):
        wire.parse_address(address)


def _echo_server(path: Path) -> threading.Thread:
    listener = listen_unix(path)

    def serve() -> None:
        conn, _ = listener.sock.accept()
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)
        listener.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_bridge_copies_both_ways_even_to_a_long_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "runner.sock"
    assert len(str(path)) > 108  # past sockaddr_un: bound through /proc/self/fd
    server = _echo_server(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    payload = b"".join(bytes(p) for p in wire.tensor_parts(wire.FRAME, 9, [np.arange(1 << 18)]))
    proc = subprocess.run([sys.executable, "-m", "edgedeploy.runtime.bridge", str(path)],
                          input=payload, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == payload  # all of it back, after stdin ended (half-close)
    server.join(10)


def test_the_bridge_says_when_no_runner_serves(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgedeploy.runtime.bridge",
                           str(tmp_path / "none.sock")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3 and "no runner serves" in proc.stderr


def test_a_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays: a crashed runner's socket
    live = listen_unix(path)
    try:
        with pytest.raises(wire.ServiceError, match="already serves"):
            listen_unix(path)
        connect_unix(str(path)).close()
    finally:
        live.close()
    assert not path.exists()


def test_the_client_imports_with_every_host_side_package_blocked() -> None:
    """What an application on a board has: numpy and the bundle's runtime copy."""
    from tests.runtime.test_boundary import HOST_ONLY

    code = (f"import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {HOST_ONLY!r}:\n"
            f"            raise ImportError('blocked host-side package: ' + name)\n"
            f"sys.meta_path.insert(0, Block())\nimport edgedeploy.client\n"
            f"import edgedeploy.runtime.bridge, edgedeploy.runtime.service\nprint('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
