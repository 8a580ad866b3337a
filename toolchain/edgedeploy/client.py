"""The client library of a deployed runner: frames in, results out, in order, with backpressure.

Stdlib and numpy only (plus ``edgedeploy.runtime``, which every bundle carries), so the same module
runs in an application on the board and on a host::

    from edgedeploy.client import Client

    with Client.unix("/home/pi/edgedeploy/run/runner.sock") as c:    # on the board
        outputs = c.infer(frame)                       # list of arrays, in the model's order
        named = c.infer(frame, named=True)             # {output name: array}
        for index, outputs in c.stream(frames):        # pipelined, in order, window-bounded
            ...

    Client.connect("tcp://10.0.0.7:7070", token_file="~/.edgedeploy-token")  # io.listen: tcp
    Client.connect(manifest="edgedeploy.yaml", target="jetson")  # host side: via edgedeploy.api,
                                                                 # over SSH for SSH targets

On the runner's machine (``Client.unix``) frames and results travel through memory shared with
the runner (:mod:`edgedeploy.runtime.frame_slots`; ``client.shared_memory`` says so) where the
platform allows it, and through the socket otherwise. The protocol is documented in
:mod:`edgedeploy.runtime.wire`. A frame is one array (one-input
models), a list in input order, or a dict by input name; an array lacking only the leading batch
axis of size 1 gets it, and floating-point arrays are cast to the input's dtype. Errors are
:class:`~edgedeploy.runtime.wire.ServiceError` subclasses: ``FrameRejectedError`` (a frame the
model cannot take, exit code 2), ``ServiceUnavailableError`` (no runner, refused: exit code 4).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.runtime import frame_slots, wire
from edgedeploy.runtime.bridge import connect_unix
from edgedeploy.runtime.wire import (
    FrameRejectedError,
    ProtocolError,
    ServiceError,
    ServiceUnavailableError,
    TensorDesc,
)

__all__ = ["Client", "FrameRejectedError", "ServiceError", "ServiceUnavailableError"]

DEFAULT_WINDOW = 8
#: A RESULT may be as large as the model's outputs; this caps what a client accepts.
MAX_RESULT_BYTES = 1 << 31
Frame = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


def read_token(token_file: str | os.PathLike[str]) -> str:
    """The shared token from its file (first line, stripped); the token is never printed."""
    path = Path(token_file).expanduser()
    try:
        token = path.read_text().strip().splitlines()[0].strip() if path.stat().st_size else ""
    except OSError as exc:
        raise ServiceError(f"cannot read the token file {path}: {exc.strerror or exc}",
                           hint="the token file holds one line, the runner's shared token") \
            from None
    if not token:
        raise ServiceError(f"the token file {path} is empty")
    return token


class Client:
    """One connection to a runner's service (see the module doc). Not thread-safe: one thread
    uses a client; open several clients for several threads."""

    def __init__(self, stream: Any, *, token: str | None = None, window: int = DEFAULT_WINDOW,
                 label: str = "service", slots: bool = False) -> None:
        self._stream = stream
        self.label = label
        self._next_index = 0
        self._closed = False
        self._slots: frame_slots.Slots | None = None
        #: Free slots, the last freed on top: one frame at a time reuses one slot, which stays
        #: in the caches (rotating through every slot costs a cold copy each way).
        self._free_slots: list[int] = []
        self._slot_of: dict[int, int] = {}  # frame index -> its slot, until answered
        try:
            self._hello(token, window, slots)
        except BaseException:
            self.close()
            raise

    # -- connecting -------------------------------------------------------------------------
    @classmethod
    def unix(cls, path: str | os.PathLike[str], *, window: int = DEFAULT_WINDOW,
             timeout: float | None = 10.0, slots: bool = True) -> Client:
        """The runner on this machine, through its Unix socket. With ``slots`` (the default)
        frames and results travel through memory shared with the runner where the platform
        allows it (:mod:`edgedeploy.runtime.frame_slots`); the socket carries their numbers."""
        path = os.fspath(Path(path).expanduser())
        try:
            sock = connect_unix(path, timeout)
        except OSError as exc:
            raise ServiceUnavailableError(
                f"no runner serves on {path}: {exc.strerror or exc}",
                hint="is the runner started with io.source client? (edgedeploy status)") from None
        return cls(sock, window=window, label=f"unix://{path}", slots=slots)

    @classmethod
    def tcp(cls, host: str, port: int, *, token: str | None = None,
            token_file: str | os.PathLike[str] | None = None, window: int = DEFAULT_WINDOW,
            timeout: float | None = 10.0) -> Client:
        """A runner listening on TCP (``io.listen: tcp://...``); it needs the shared token."""
        if token is None and token_file is not None:
            token = read_token(token_file)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ServiceUnavailableError(f"cannot reach {host}:{port}: {exc.strerror or exc}",
                                          hint="is the runner listening there?") from None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, token=token, window=window,
                   label=wire.describe_address("tcp", host, port))

    @classmethod
    def connect(cls, address: str | os.PathLike[str] | None = None, *,
                token_file: str | os.PathLike[str] | None = None,
                manifest: str | os.PathLike[str] | None = None, target: str | None = None,
                window: int = DEFAULT_WINDOW) -> Client:
        """``unix:///path`` or a socket path, ``tcp://host:port`` (with ``token_file``), or --
        with ``manifest`` -- the runner deployed to ``target`` (``address`` then picks one host
        of a fleet); that needs the host-side package (``edgedeploy.api.infer_client``)."""
        if manifest is not None:
            from edgedeploy import api  # host side only; a board never takes this branch

            return api.infer_client(manifest, target or "local",
                                    host=None if address is None else os.fspath(address),
                                    window=window)
        if address is None:
            raise ServiceError("Client.connect needs an address or a manifest")
        kind, where, port = wire.parse_address(os.fspath(address))
        if kind == "tcp":
            return cls.tcp(where, port, token_file=token_file, window=window)
        return cls.unix(where, window=window)

    def _hello(self, token: str | None, window: int, slots: bool) -> None:
        hello: dict[str, Any] = {"protocol": wire.PROTOCOL, "window": int(window),
                                 "client": "edgedeploy.client"}
        if token is not None:
            hello["token"] = token
        slots = slots and frame_slots.supported() and isinstance(self._stream, socket.socket) \
            and self._stream.family == socket.AF_UNIX
        if slots:
            hello["slots"] = True
        fds: list[int] = []
        try:
            self._send([wire.control(wire.HELLO, hello)])
            if slots:
                kind, body, fds = self._read_fds()
            else:
                kind, body = self._read(wire.MAX_CONTROL_BYTES)
        except ServiceError as exc:  # nothing answered: no service there
            raise ServiceUnavailableError(
                exc.message, hint="is the runner serving (io.source client)? see "
                                  "`edgedeploy status` and `edgedeploy logs`") from None
        data = wire.parse_control(body)
        if kind == wire.ERROR:
            raise self._refusal(data)
        if kind != wire.WELCOME or data.get("protocol") != wire.PROTOCOL:
            raise ProtocolError(f"{self.label}: unexpected answer to HELLO ({wire.TYPES[kind]})")
        self.name = str(data.get("name", ""))
        self.inputs = [TensorDesc.from_dict(d) for d in data.get("inputs") or []]
        self.outputs = [TensorDesc.from_dict(d) for d in data.get("outputs") or []]
        self.window = max(1, int(data.get("window") or 1))
        self.max_frame_bytes = int(data.get("max_frame_bytes") or 0)
        self._attach_slots(data.get("slots"), fds)
        wire.size_buffers(self._stream, max(sum(t.nbytes for t in self.inputs),
                                            sum(t.nbytes for t in self.outputs)))

    def _attach_slots(self, granted: Any, fds: list[int]) -> None:
        """Map the frame slots the WELCOME granted (the descriptor came with it); without one
        (the socket was forwarded by another process), frames go inline."""
        for fd in fds[1:]:
            os.close(fd)
        if not fds:
            return
        layout = frame_slots.SlotLayout(self.window, tuple(self.inputs), tuple(self.outputs))
        if isinstance(granted, Mapping) and layout.matches(dict(granted)):
            self._slots = frame_slots.Slots.attach(layout, fds[0])
            self._free_slots = list(range(layout.count))[::-1]
        else:
            os.close(fds[0])

    @property
    def shared_memory(self) -> bool:
        """Frames travel through shared memory (frame slots), not the socket."""
        return self._slots is not None

    def _refusal(self, data: Mapping[str, Any]) -> ServiceError:
        code, message = str(data.get("code")), str(data.get("message"))
        hints = {"unauthorized": "check the token file (the runner reads io.token_file)",
                 "busy": "wait for other clients to leave, or raise io.max_clients",
                 "version": "use a client of the runner's edgedeploy version"}
        return ServiceUnavailableError(f"{self.label} refused the connection: {message}",
                                       hint=hints.get(code))

    # -- frames -----------------------------------------------------------------------------
    def infer(self, frame: Frame, *, named: bool = False
              ) -> list[np.ndarray] | dict[str, np.ndarray]:
        """One frame's outputs (a list in the model's output order, or a dict by name)."""
        index = self._submit(frame)
        outs = self._answer(index)
        return self._named(outs) if named else outs

    def stream(self, frames: Iterable[Frame], *, window: int | None = None
               ) -> Iterator[tuple[int, list[np.ndarray]]]:
        """``(index, outputs)`` for every frame, in order, with up to ``window`` (default: what
        the runner granted) frames in flight: the runner's pipeline stays full while this
        process never holds more than ``window`` unanswered frames."""
        limit = max(1, min(window or self.window, self.window))
        pending: deque[int] = deque()
        try:
            for frame in frames:
                if len(pending) >= limit:
                    index = pending.popleft()
                    yield index, self._answer(index)
                pending.append(self._submit(frame))
            while pending:
                index = pending.popleft()
                yield index, self._answer(index)
        finally:
            self._settle(pending)

    def _settle(self, pending: deque[int]) -> None:
        """Read the answers still owed when a stream ends early (the consumer stopped, or a
        frame was refused), so the next call starts in step; a broken connection closes."""
        try:
            while pending and not self._closed:
                with contextlib.suppress(FrameRejectedError):
                    self._answer(pending.popleft())
        except ServiceError:
            self.close()

    def _named(self, outs: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {t.name: a for t, a in zip(self.outputs, outs, strict=True)}

    def prepare(self, frame: Frame) -> list[np.ndarray]:
        """The frame as the model's input tensors (checked here, before anything is sent)."""
        if isinstance(frame, Mapping):
            missing = [t.name for t in self.inputs if t.name not in frame]
            extra = sorted(set(frame) - {t.name for t in self.inputs})
            if missing or extra:
                raise FrameRejectedError(
                    f"the frame's names do not match the model's inputs (missing {missing}, "
                    f"unknown {extra})", hint=f"inputs: {', '.join(t.name for t in self.inputs)}",
                    code="count")
            arrays = [frame[t.name] for t in self.inputs]
        elif isinstance(frame, (list, tuple)):
            arrays = list(frame)
        else:
            arrays = [frame]  # type: ignore[list-item]
        if len(arrays) != len(self.inputs):
            raise FrameRejectedError(f"the frame has {len(arrays)} tensors; the model takes "
                                     f"{len(self.inputs)}", code="count")
        return [_fit(np.asarray(a), t) for a, t in zip(arrays, self.inputs, strict=True)]

    def _submit(self, frame: Frame) -> int:
        self._check_open()
        arrays = self.prepare(frame)
        index = self._next_index
        slots = self._slots
        if slots is not None and self._free_slots:
            slot = self._free_slots.pop()
            self._slot_of[index] = slot
            for view, arr in zip(slots.inputs(slot), arrays, strict=True):
                np.copyto(view, arr)
            self._send([wire.slot_message(wire.SLOT_FRAME, index, slot)])
        else:
            self._send(wire.tensor_parts(wire.FRAME, index, arrays))
        self._next_index += 1
        return index

    def _answer(self, index: int) -> list[np.ndarray]:
        slot = self._slot_of.pop(index, None)
        try:
            return self._answer_frame(index, slot)
        finally:  # answered or failed, the frame no longer needs its slot
            if slot is not None:
                self._free_slots.append(slot)

    def _answer_frame(self, index: int, slot: int | None) -> list[np.ndarray]:
        kind, body = self._read(MAX_RESULT_BYTES)
        if kind == wire.ERROR:
            data = wire.parse_control(body)
            code, message = str(data.get("code")), str(data.get("message"))
            if data.get("fatal"):
                self.close()
                if code == "too_large":
                    raise FrameRejectedError(f"{self.label}: {message}", index=index,
                                             code=code)
                raise ServiceError(f"{self.label} closed the connection: {message}")
            if data.get("index") != index:
                raise ProtocolError(f"{self.label}: an error for frame {data.get('index')} "
                                    f"while frame {index} was due")
            raise FrameRejectedError(f"frame {index}: {message}", index=index, code=code)
        if kind == wire.SLOT_RESULT and self._slots is not None:
            got, in_slot = wire.parse_slot(body, self._slots.count)
            if in_slot != slot:
                raise ProtocolError(f"{self.label}: frame {got}'s result in slot {in_slot}, "
                                    f"not {slot}")
            outs = [np.array(v) for v in self._slots.outputs(in_slot)]  # the slot is reused
        elif kind == wire.RESULT:
            got, outs = wire.parse_tensors(body)
        else:
            raise ProtocolError(f"{self.label}: expected a RESULT, got {wire.TYPES[kind]}")
        if got != index:
            raise ProtocolError(f"{self.label}: result for frame {got} while {index} was due")
        return outs

    # -- the stream -------------------------------------------------------------------------
    def _send(self, parts: list[bytes | memoryview]) -> None:
        try:
            wire.send_parts(self._stream, parts)
        except OSError as exc:
            self.close()
            raise ServiceError(f"{self.label}: connection lost while sending: "
                               f"{exc.strerror or exc}{self._eof_reason()}") from None

    def _read(self, limit: int) -> tuple[int, bytearray]:
        with self._reading():
            return wire.read_message(self._stream, limit)

    def _read_fds(self) -> tuple[int, bytearray, list[int]]:
        """The next (control) message and the descriptors passed with it."""
        with self._reading():
            return wire.read_message_fds(self._stream, wire.MAX_CONTROL_BYTES)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A failed read closes the client and says why."""
        try:
            yield
        except EOFError:
            self.close()
            raise ServiceError(f"{self.label} closed the connection{self._eof_reason()}",
                               hint="see the runner log (edgedeploy logs)") from None
        except OSError as exc:
            self.close()
            raise ServiceError(f"{self.label}: connection lost: {exc.strerror or exc}") from None

    def _eof_reason(self) -> str:
        why = getattr(self._stream, "eof_reason", None)
        text = why() if callable(why) else ""
        return f": {text}" if text else ""

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceError(f"{self.label}: the client is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._slots = None
        with contextlib.suppress(OSError):
            self._stream.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fit(arr: np.ndarray, want: TensorDesc) -> np.ndarray:
    """``arr`` as input ``want``: the missing batch axis of size 1 added, floats cast."""
    if arr.ndim == len(want.shape) - 1 and want.shape and want.shape[0] == 1:
        arr = arr[None]
    if tuple(arr.shape) != want.shape:
        raise FrameRejectedError(f"input {want.name!r}: shape {list(arr.shape)}, the model takes "
                                 f"{list(want.shape)}", code="shape")
    dtype = np.dtype(want.dtype)
    if arr.dtype != dtype:
        if arr.dtype.kind == "f" and dtype.kind == "f":
            arr = arr.astype(dtype)
        else:
            raise FrameRejectedError(
                f"input {want.name!r}: dtype {arr.dtype}, the model takes {dtype}",
                hint="convert and scale the frame first (io.preprocess does it for images)",
                code="dtype")
    return arr
