"""The inference service's wire protocol: length-prefixed messages over a byte stream.

The stream is a Unix socket (the default: the runner's ``runner.sock`` in its state dir, mode
0600), a TCP socket (only when the bundle asks, and then with a shared token), or an SSH exec
channel running :mod:`edgedeploy.runtime.bridge` on the board, which copies bytes between the
channel and the Unix socket. Stdlib and numpy only: the same module runs on the board and in the
client library.

Why a small protocol of our own rather than ZeroMQ: it needs no native library on the board
(boards have Python and numpy, and pyzmq wheels are missing for several of them); its framing is
plain bytes, so it passes unchanged through an SSH exec channel, which is how a host reaches a
board through ProxyJump without opening a port there; and backpressure is one rule (below) rather
than high-water marks that drop or block per socket type.

Every message (integers big-endian)::

    u32 length   bytes that follow (type + body); a receiver refuses a length above its limit
                 before reading the body
    u8  type     HELLO 1, WELCOME 2, FRAME 3, RESULT 4, ERROR 5, SLOT_FRAME 6, SLOT_RESULT 7
    body

* HELLO, the client's first message: JSON ``{"protocol": 1, "window": W, "client": "...",
  "token": "...", "slots": true}`` (``token`` only for TCP listeners; compared in constant time,
  never logged. ``slots`` only from a client on the runner's machine, over its Unix socket).
* WELCOME, the server's answer to a valid HELLO: JSON ``{"protocol": 1, "name": ...,
  "inputs": [{"name", "shape", "dtype"}], "outputs": [...], "window": granted,
  "max_frame_bytes": M}``. A client learns nothing about the model before it is admitted. When
  the HELLO asked for slots and the server grants them, the WELCOME also carries ``"slots":
  {"count", "slot_bytes", "align"}`` and, as SCM_RIGHTS ancillary data on its first byte, the
  descriptor of the shared memory file (frame_slots.py says the layout).
* SLOT_FRAME (client) and SLOT_RESULT (server): ``u64 index, u32 slot``: the frame's inputs, or
  its outputs, lie in that slot of the shared memory. A client that got no descriptor (a socket
  forwarded by another process drops it) sends FRAMEs; the server answers each kind in kind.
* FRAME (client) and RESULT (server): ``u64 index, u16 count``, then ``count`` tensors, each
  ``u8 n, dtype (n ASCII bytes: numpy's dtype.str, e.g. "<f4"), u8 ndim, ndim x u32 dims``,
  zero padding up to the next multiple of 8 bytes from the body's start, then the C-order data
  (prod(dims) x itemsize bytes). A FRAME carries one tensor per model input, in input order; a
  RESULT one per output, with the frame's index.
* ERROR: JSON ``{"index": k or null, "code": "...", "message": "...", "fatal": bool}``. After a
  fatal error the server closes the connection (``unauthorized``, ``busy``, ``too_large``,
  ``protocol``, ``failed``); a frame error (``shape``, ``dtype``, ``count``) answers that frame
  and the connection goes on.

Order and backpressure: the server answers every FRAME with exactly one RESULT or ERROR carrying
its index, in the order the frames were sent, and reads a client's next frame only while fewer
than ``window`` of its frames await their answer. A client sending faster than it reads blocks in
its own send: memory stays bounded on both ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgedeploy.runtime.errors import EdgeDeployError, ExitCode
from edgedeploy.runtime.ir import TensorInfo

PROTOCOL = 1
HELLO, WELCOME, FRAME, RESULT, ERROR, SLOT_FRAME, SLOT_RESULT = 1, 2, 3, 4, 5, 6, 7
TYPES = {HELLO: "HELLO", WELCOME: "WELCOME", FRAME: "FRAME", RESULT: "RESULT", ERROR: "ERROR",
         SLOT_FRAME: "SLOT_FRAME", SLOT_RESULT: "SLOT_RESULT"}
HEAD = struct.Struct("!IB")
INDEX = struct.Struct("!QH")
SLOT = struct.Struct("!QI")
DIM = struct.Struct("!I")
#: HELLO, WELCOME and ERROR bodies are small JSON objects.
MAX_CONTROL_BYTES = 1 << 16
MAX_NDIM = 32
ALIGN = 8
#: The dtypes a frame may carry (numpy names; either byte order).
DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                    "uint64", "float16", "float32", "float64"})
#: Error codes after which the server closes the connection.
FATAL_CODES = frozenset({"unauthorized", "busy", "too_large", "protocol", "failed", "version"})
UNIX_SOCKET = "runner.sock"


class ServiceError(EdgeDeployError):
    """Talking to the inference service failed (a broken connection, a protocol violation)."""


class ServiceUnavailableError(ServiceError):
    """No service answered, or it refused us (no runner, wrong token, too many clients)."""

    exit_code = ExitCode.UNREACHABLE


class FrameRejectedError(ServiceError):
    """The service (or the client, before sending) refused a frame: its shape, dtype or size."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str, hint: str | None = None, *, index: int | None = None,
                 code: str = "shape") -> None:
        super().__init__(message, hint)
        self.index = index
        self.code = code


class ProtocolError(ServiceError):
    """The peer sent something this protocol does not allow."""


@dataclass(frozen=True)
class TensorDesc(TensorInfo):
    """One model input or output as the service advertises it: the IR's tensor description,
    parsed strictly when it comes off the wire."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorDesc:
        try:
            return cls(str(d["name"]), tuple(int(x) for x in d["shape"]),
                       str(np.dtype(d.get("dtype", "float32"))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed tensor description {d!r}: {exc}") from None


class Stream(Protocol):
    """What the protocol needs of a byte stream (a socket; an SSH channel adapter)."""

    def sendall(self, data: bytes | memoryview, /) -> Any: ...

    def recv_into(self, buffer: memoryview, nbytes: int = 0, /) -> int: ...


# --- sending ----------------------------------------------------------------------------------
#: Socket buffers are sized to hold this many of the largest messages (at most MAX_BUFFER).
BUFFERED_MESSAGES = 2
MAX_BUFFER = 8 << 20


def size_buffers(stream: Any, message_bytes: int) -> None:
    """Socket buffers that take a whole message or two. A 1 MiB frame through the default
    ~200 KiB buffers crosses in a dozen sender/receiver wake-ups; sized buffers halve the CPU
    of a round trip and cut its time threefold (measured on Linux; the kernel caps the value at
    net.core.wmem_max). Backpressure stays bounded: a couple of messages, not a queue."""
    if not isinstance(stream, socket.socket):
        return
    size = min(MAX_BUFFER, max(1 << 18, BUFFERED_MESSAGES * message_bytes + (1 << 16)))
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):  # without the option the defaults still work
            stream.setsockopt(socket.SOL_SOCKET, opt, size)


def send_parts(stream: Any, parts: Sequence[bytes | memoryview]) -> None:
    """Write ``parts`` back to back; ``sendmsg`` on a socket (no joined copy)."""
    if not isinstance(stream, socket.socket):
        for part in parts:
            stream.sendall(part)
        return
    views = _views(parts)
    while views:
        _advance(views, stream.sendmsg(views))


def send_nowait(sock: socket.socket, parts: Sequence[bytes | memoryview]
                ) -> list[memoryview]:
    """Send what the socket takes without blocking; return the rest (empty: all sent)."""
    views = _views(parts)
    while views:
        try:
            sent = sock.sendmsg(views, [], socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        _advance(views, sent)
    return views


def _views(parts: Sequence[bytes | memoryview]) -> list[memoryview]:
    return [memoryview(p).cast("B") for p in parts if len(p)]


def _advance(views: list[memoryview], sent: int) -> None:
    while views and sent >= len(views[0]):
        sent -= len(views[0])
        views.pop(0)
    if sent:
        views[0] = views[0][sent:]


def control(kind: int, data: dict[str, Any]) -> bytes:
    """A HELLO, WELCOME or ERROR message."""
    body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    if len(body) > MAX_CONTROL_BYTES:
        raise ProtocolError(f"{TYPES[kind]} message too large ({len(body)} bytes)")
    return HEAD.pack(len(body) + 1, kind) + body


def slot_message(kind: int, index: int, slot: int) -> bytes:
    """A SLOT_FRAME or SLOT_RESULT message."""
    return HEAD.pack(SLOT.size + 1, kind) + SLOT.pack(index, slot)


def parse_slot(body: bytes | bytearray | memoryview, count: int) -> tuple[int, int]:
    """``(index, slot)`` of a SLOT_FRAME or SLOT_RESULT; ``slot`` checked against ``count``."""
    if len(body) != SLOT.size:
        raise ProtocolError(f"a slot message has {len(body)} bytes, not {SLOT.size}")
    index, slot = SLOT.unpack_from(body, 0)
    if slot >= count:
        raise ProtocolError(f"slot {slot} does not exist (there are {count})")
    return index, slot


def error_message(code: str, message: str, index: int | None = None) -> bytes:
    return control(ERROR, {"code": code, "message": message, "index": index,
                           "fatal": code in FATAL_CODES})


def tensor_parts(kind: int, index: int, arrays: Sequence[np.ndarray]) -> list[bytes | memoryview]:
    """A FRAME or RESULT as a list of buffers (headers as bytes, data as views of the arrays)."""
    if len(arrays) > 0xFFFF:
        raise ProtocolError(f"too many tensors in one message ({len(arrays)})")
    parts: list[bytes | memoryview] = [b""]
    pending = INDEX.pack(index, len(arrays))
    pos = len(pending)
    for arr in arrays:
        arr = np.asarray(arr)
        arr = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
        _check_dtype(arr.dtype)
        if arr.ndim > MAX_NDIM:
            raise ProtocolError(f"a tensor has {arr.ndim} dimensions (at most {MAX_NDIM})")
        code = arr.dtype.str.encode()
        meta = (bytes([len(code)]) + code + bytes([arr.ndim])
                + b"".join(DIM.pack(d) for d in arr.shape))
        meta += b"\0" * (-(pos + len(meta)) % ALIGN)
        parts.append(pending + meta)
        pending = b""
        pos += len(meta) + arr.nbytes
        if arr.nbytes:
            parts.append(memoryview(arr.reshape(-1)).cast("B"))
    if pending:
        parts.append(pending)
    parts[0] = HEAD.pack(pos + 1, kind)
    return parts


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.name not in DTYPES:
        raise ProtocolError(f"dtype {dtype} cannot travel (allowed: {', '.join(sorted(DTYPES))})")


# --- receiving --------------------------------------------------------------------------------
def recv_exact(stream: Any, n: int) -> bytearray:
    """Exactly ``n`` bytes; EOFError when the peer closed before the first byte or midway."""
    buf = bytearray(n)
    recv_into_exact(stream, memoryview(buf))
    return buf


def recv_into_exact(stream: Any, view: memoryview) -> None:
    """Fill ``view`` from the stream (EOFError when it ends first)."""
    got, n = 0, len(view)
    while got < n:
        k = stream.recv_into(view[got:], n - got)
        if not k:
            raise EOFError(f"connection closed after {got} of {n} bytes")
        got += k


def read_head(stream: Any, limit: int) -> tuple[int, int]:
    """``(type, body length)`` of the next message; TooLarge before reading a body over
    ``limit`` (FRAME/RESULT) or over :data:`MAX_CONTROL_BYTES` (the others)."""
    return _head(recv_exact(stream, HEAD.size), limit)


def _head(raw: bytes | bytearray, limit: int) -> tuple[int, int]:
    length, kind = HEAD.unpack(raw)
    if kind not in TYPES or length < 1:
        raise ProtocolError(f"unknown message type {kind} (length {length})")
    size = length - 1
    cap = limit if kind in (FRAME, RESULT) else MAX_CONTROL_BYTES
    if size > cap:
        raise TooLarge(kind, size, cap)
    return kind, size


class TooLarge(ProtocolError):
    """A message announced a body above the receiver's limit (nothing of it was read)."""

    def __init__(self, kind: int, size: int, cap: int) -> None:
        super().__init__(f"{TYPES[kind]} of {size} bytes is over the limit of {cap} bytes")
        self.kind, self.size, self.cap = kind, size, cap


def read_message(stream: Any, limit: int) -> tuple[int, bytearray]:
    kind, size = read_head(stream, limit)
    return kind, recv_exact(stream, size)


def read_message_fds(sock: socket.socket, limit: int, max_fds: int = 1
                     ) -> tuple[int, bytearray, list[int]]:
    """:func:`read_message` that also takes the descriptors passed with the message's first
    byte (SCM_RIGHTS). The caller owns (and closes) what comes back."""
    head = bytearray()
    fds: list[int] = []
    try:
        while len(head) < HEAD.size:
            data, got, _flags, _addr = socket.recv_fds(sock, HEAD.size - len(head), max_fds)
            fds += got
            if not data:
                raise EOFError(f"connection closed after {len(head)} of {HEAD.size} bytes")
            head += data
        kind, size = _head(head, limit)
        return kind, recv_exact(sock, size), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def parse_control(body: bytes | bytearray) -> dict[str, Any]:
    try:
        data = json.loads(bytes(body).decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"control message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("control message is not a JSON object")
    return data


def parse_tensors(body: bytearray | memoryview) -> tuple[int, list[np.ndarray]]:
    """``(index, arrays)`` of a FRAME or RESULT body; the arrays are views of ``body``."""
    if len(body) < INDEX.size:
        raise ProtocolError("message body shorter than its index")
    index, count = INDEX.unpack_from(body, 0)
    pos = INDEX.size
    out = []
    for _ in range(count):
        dtype, shape, pos = _tensor_head(body, pos)
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        nbytes = n * dtype.itemsize
        if pos + nbytes > len(body):
            raise ProtocolError(f"tensor data runs past the message ({pos + nbytes} > "
                                f"{len(body)} bytes)")
        out.append(np.frombuffer(body, dtype=dtype, count=n, offset=pos).reshape(shape))
        pos += nbytes
    if pos != len(body):
        raise ProtocolError(f"{len(body) - pos} stray bytes after the last tensor")
    return index, out


def _tensor_head(body: bytearray | memoryview, pos: int) -> tuple[np.dtype, tuple[int, ...], int]:
    try:
        n = body[pos]
        code = bytes(body[pos + 1:pos + 1 + n]).decode("ascii")
        pos += 1 + n
        ndim = body[pos]
        pos += 1
    except (IndexError, UnicodeDecodeError):
        raise ProtocolError("truncated or malformed tensor header") from None
    if ndim > MAX_NDIM or pos + ndim * DIM.size > len(body):
        raise ProtocolError(f"bad tensor rank {ndim}")
    shape = tuple(DIM.unpack_from(body, pos + k * DIM.size)[0] for k in range(ndim))
    pos += ndim * DIM.size
    pos += -pos % ALIGN
    try:
        dtype = np.dtype(code)
    except TypeError:
        raise ProtocolError(f"unknown dtype {code!r}") from None
    if len(code) > 8 or dtype.name not in DTYPES:
        raise ProtocolError(f"dtype {code!r} is not allowed")
    return dtype, shape, pos


# --- addresses --------------------------------------------------------------------------------
def parse_address(address: str) -> tuple[str, str, int]:
    """``("unix", path, 0)`` or ``("tcp", host, port)`` from ``unix:///p``, a path, or
    ``tcp://host:port`` (IPv6 hosts in brackets)."""
    if address.startswith("tcp://"):
        rest = address[len("tcp://"):].rstrip("/")
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ServiceError(f"bad service address {address!r}",
                               hint="use tcp://HOST:PORT, unix:///PATH or a socket path")
        return "tcp", host, int(port)
    if address.startswith("unix://"):
        address = address[len("unix://"):]
    if not address:
        raise ServiceError("empty service address", hint="give the runner's socket path")
    return "unix", address, 0


def describe_address(kind: str, host_or_path: str, port: int = 0) -> str:
    if kind == "unix":
        return f"unix://{host_or_path}"
    host = f"[{host_or_path}]" if ":" in host_or_path else host_or_path
    return f"tcp://{host}:{port}"
