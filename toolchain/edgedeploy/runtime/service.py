"""The runner's inference service: applications send frames (wire.py) and get results in order.

The runner listens on a Unix socket in its state dir (mode 0600: the board's file permissions are
the access control) and, only when the bundle's ``io.listen`` asks, on TCP, where a client is
admitted only with the shared token from a file on the board (compared in constant time; the
token is never logged). Every client gets two threads:

* a reader: the handshake, then frames -- checked against the model's inputs (a wrong count,
  shape or dtype is answered with an error and the connection goes on; a frame announced over the
  size limit is refused before its body is read, and the connection closed) -- handed straight to
  the attached feed (service_feed.py), which submits them into the pipeline and blocks while it
  is full. It reads the next frame only while fewer than ``window`` of this client's frames are
  unanswered, so a client that does not read its results stops being read;
* a writer: the answers, in the client's frame order. The feed's collecting thread sends a
  result itself when it is next in line and the socket takes it at once (the common case), so
  a frame crosses no thread hand-off but the pipeline's own; the writer sends the rest.

A client on this machine may ask for frame slots (frame_slots.py): its frames and results then
lie in memory shared with that client alone, and only their slot numbers cross the socket.

A client that disconnects loses its own unanswered frames, nobody else's.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedeploy.runtime import frame_slots, wire
from edgedeploy.runtime.listeners import Listener, listen_tcp, listen_unix

__all__ = ["Listener", "Request", "Service", "ServiceSpec", "Session", "listen_tcp", "listen_unix"]

LogFn = Callable[[str], None]


def stderr_log(message: str) -> None:
    """The runner log is the runner's stderr."""
    print(f"edgedeploy: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ServiceSpec:
    """What the service advertises and enforces."""

    name: str
    inputs: tuple[wire.TensorDesc, ...]
    outputs: tuple[wire.TensorDesc, ...]
    window: int = 8
    max_clients: int = 16
    #: 0: twice the model's input bytes plus headroom (a frame of the right shape in a wider
    #: dtype still gets a dtype error rather than a closed connection).
    max_frame_bytes: int = 0
    hello_timeout_s: float = 10.0

    @property
    def frame_limit(self) -> int:
        if self.max_frame_bytes:
            return self.max_frame_bytes
        return 2 * sum(t.nbytes for t in self.inputs) + 4096 + 64 * len(self.inputs)

    @property
    def message_bytes(self) -> int:
        """The larger of a frame's and a result's tensor bytes."""
        return max(sum(t.nbytes for t in self.inputs), sum(t.nbytes for t in self.outputs))

    def welcome(self, window: int) -> dict[str, Any]:
        return {"protocol": wire.PROTOCOL, "name": self.name, "window": window,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "max_frame_bytes": self.frame_limit}

    def check(self, arrays: Sequence[np.ndarray]) -> tuple[str, str] | None:
        """``(code, message)`` when a frame does not fit the model's inputs, else None."""
        if len(arrays) != len(self.inputs):
            return "count", (f"the frame has {len(arrays)} tensors; the model takes "
                             f"{len(self.inputs)} ({', '.join(t.name for t in self.inputs)})")
        for arr, want in zip(arrays, self.inputs, strict=True):
            if arr.dtype != np.dtype(want.dtype):
                return "dtype", (f"input {want.name!r}: dtype {arr.dtype.str}, expected "
                                 f"{np.dtype(want.dtype).str} ({want.dtype})")
            if tuple(arr.shape) != want.shape:
                return "shape", (f"input {want.name!r}: shape {list(arr.shape)}, expected "
                                 f"{list(want.shape)}")
        return None


@dataclass
class Request:
    """One accepted frame on its way through the pipeline."""

    session: Session
    entry: _Entry
    tensors: list[np.ndarray]
    t_in: float

    @property
    def alive(self) -> bool:
        """False once its client is gone (its result is dropped)."""
        return self.session.open

    def complete(self, outputs: Sequence[np.ndarray]) -> None:
        """Answer with ``outputs`` (views the caller may reuse once this returns)."""
        self.session.service.served += 1  # only the feed's collecting thread completes
        self.session.answer(self.entry, self.session.result_parts(self.entry, outputs))


class _Entry:
    """A client's frame awaiting its answer (``parts``), in the client's order; ``slot`` when
    its inputs came in a frame slot (and its outputs go back in it)."""

    __slots__ = ("fatal", "index", "parts", "slot")

    def __init__(self, index: int | None, slot: int | None = None) -> None:
        self.index = index
        self.slot = slot
        self.parts: list[bytes | memoryview] | None = None
        self.fatal = False


class Session:
    """One connected client: a reader thread and a writer thread (see the module doc)."""

    def __init__(self, service: Service, sock: socket.socket, peer: str, token: bytes | None,
                 number: int) -> None:
        self.service = service
        self.sock = sock
        self.peer = peer
        self.number = number
        self._token = token
        self._pending: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._writing = False  # an answer is going out (by the writer, or sent directly)
        self._buf = bytearray()
        self._eof = False
        self.open = True
        self.admitted = False
        self.window = service.spec.window
        self.frames = 0
        self.slots: frame_slots.Slots | None = None
        self._busy: set[int] = set()  # slots holding a frame not yet answered

    def start(self) -> None:
        threading.Thread(target=self._read_loop, name=f"edgedeploy-client{self.number}-in",
                         daemon=True).start()

    # -- reading ----------------------------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            if not self._handshake():
                self._close()
                return
            threading.Thread(target=self._write_loop, daemon=True,
                             name=f"edgedeploy-client{self.number}-out").start()
            while self._wait_for_room():
                try:
                    kind, size = wire.read_head(self.sock, self.service.spec.frame_limit)
                except wire.TooLarge as exc:
                    self._fatal("too_large", f"{exc}; the model takes "
                                f"{sum(t.nbytes for t in self.service.spec.inputs)} bytes a frame")
                    break
                if kind == wire.SLOT_FRAME and self.slots is not None:
                    self._on_slot_frame(self._receive(size), self.slots)
                elif kind == wire.FRAME:
                    self._on_frame(self._receive(size))
                else:
                    self._fatal("protocol", f"expected a FRAME, got {wire.TYPES[kind]}")
                    break
        except wire.ProtocolError as exc:
            self._fatal("protocol", str(exc))
        except (OSError, EOFError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _receive(self, size: int) -> memoryview:
        """A frame's body, read into this client's buffer: reused, since the pipeline has copied
        a frame into its rings when the feed's ``submit`` returns (a 1 MiB allocation per frame
        costs page faults on every frame)."""
        if len(self._buf) < size:
            self._buf = bytearray(size)
        view = memoryview(self._buf)[:size]
        wire.recv_into_exact(self.sock, view)
        return view

    def _wait_for_room(self) -> bool:
        with self._cond:
            while self.open and len(self._pending) >= self.window:
                self._cond.wait(0.5)
            return self.open

    def _handshake(self) -> bool:
        spec = self.service.spec
        self.sock.settimeout(spec.hello_timeout_s)
        try:
            kind, body = wire.read_message(self.sock, 0)
            hello = wire.parse_control(body) if kind == wire.HELLO else None
        except wire.ProtocolError as exc:
            return self._refuse("protocol", f"bad HELLO: {exc}")
        except (OSError, EOFError):
            self.service.log(f"client {self.peer} left before its HELLO")
            return False
        if hello is None:
            return self._refuse("protocol", f"expected HELLO, got {wire.TYPES[kind]}")
        if hello.get("protocol") != wire.PROTOCOL:
            return self._refuse("version", f"protocol {hello.get('protocol')!r} is not "
                                f"supported (this runner speaks {wire.PROTOCOL})")
        if self._token is not None:
            given = hello.get("token")
            ok = isinstance(given, str) and hmac.compare_digest(given.encode(), self._token)
            if not ok:
                why = "no token" if given is None else "a wrong token"
                self.service.log(f"refused client {self.peer}: {why}")
                return self._refuse("unauthorized", "a valid token is required")
        if not self.service.admit(self):
            return self._refuse("busy", f"the runner serves {spec.max_clients} clients already")
        try:
            self.window = max(1, min(int(hello.get("window") or spec.window), spec.window))
        except (TypeError, ValueError):
            self.window = spec.window
        self.sock.settimeout(None)
        welcome = spec.welcome(self.window)
        fds = self._grant_slots(welcome) if hello.get("slots") is True else []
        try:
            message = wire.control(wire.WELCOME, welcome)
            if fds:
                socket.send_fds(self.sock, [message], fds)
            else:
                wire.send_parts(self.sock, [message])
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _grant_slots(self, welcome: dict[str, Any]) -> list[int]:
        """Frame slots for a client on this machine (a Unix socket), when the platform has
        them; the descriptor goes with the WELCOME. Without them the client sends FRAMEs."""
        if self.sock.family != socket.AF_UNIX or not frame_slots.supported():
            return []
        spec = self.service.spec
        layout = frame_slots.SlotLayout(self.window, spec.inputs, spec.outputs)
        try:
            self.slots, fd = frame_slots.Slots.create(layout)
        except OSError as exc:
            self.service.log(f"client {self.peer}: no frame slots ({exc.strerror or exc}); "
                             "frames go through the socket")
            return []
        welcome["slots"] = layout.to_dict()
        return [fd]

    def _refuse(self, code: str, message: str) -> bool:
        self.service.refused += 1
        with contextlib.suppress(OSError):
            self.sock.settimeout(1.0)
            wire.send_parts(self.sock, [wire.error_message(code, message)])
        return False

    def _on_frame(self, body: memoryview) -> None:
        index, arrays = wire.parse_tensors(body)
        entry = _Entry(index)
        with self._cond:
            self._pending.append(entry)
        problem = self.service.spec.check(arrays)
        if problem is not None:
            self.service.rejected += 1
            self.answer(entry, [wire.error_message(problem[0], problem[1], index)])
            return
        self.frames += 1
        self.service.dispatch(Request(self, entry, arrays, time.perf_counter()))

    def _on_slot_frame(self, body: memoryview, slots: frame_slots.Slots) -> None:
        index, slot = wire.parse_slot(body, slots.count)
        entry = _Entry(index, slot)
        with self._cond:
            if slot in self._busy:
                raise wire.ProtocolError(f"frame {index} in slot {slot}, which still holds an "
                                         "unanswered frame")
            self._busy.add(slot)
            self._pending.append(entry)
        self.frames += 1
        self.service.dispatch(Request(self, entry, slots.inputs(slot), time.perf_counter()))

    def result_parts(self, entry: _Entry, outputs: Sequence[np.ndarray]
                     ) -> list[bytes | memoryview]:
        """A frame's answer: its outputs written into its slot when it came in one (and they
        have the advertised shapes), else a RESULT carrying them."""
        slots, slot = self.slots, entry.slot
        if slot is not None and slots is not None and entry.index is not None:
            views = slots.outputs(slot)
            fits = len(views) == len(outputs) and all(
                v.shape == np.shape(o) and v.dtype == np.asarray(o).dtype
                for v, o in zip(views, outputs, strict=False))
            with self._cond:
                self._busy.discard(slot)
            if fits:
                for v, o in zip(views, outputs, strict=True):
                    np.copyto(v, o)
                return [wire.slot_message(wire.SLOT_RESULT, entry.index, slot)]
        owned = [np.array(o) for o in outputs]  # the answer may wait for the writer thread
        return wire.tensor_parts(wire.RESULT, entry.index, owned)  # type: ignore[arg-type]

    def _fatal(self, code: str, message: str) -> None:
        """Answer what was accepted, then this error, then close (through the writer)."""
        self.service.log(f"client {self.peer}: {code}: {message}")
        if code == "protocol":
            self.service.count_protocol_error()
        entry = _Entry(None)
        entry.fatal = True
        with self._cond:
            self._pending.append(entry)
        self.answer(entry, [wire.error_message(code, message)])

    # -- writing ----------------------------------------------------------------------------
    def answer(self, entry: _Entry, parts: list[bytes | memoryview]) -> None:
        """``entry``'s answer is ready. When it is next in line and nothing else is being
        written, it goes out here at once, as far as the socket takes it without blocking (the
        common case: no hand-off to the writer thread); the writer sends whatever remains."""
        with self._cond:
            entry.parts = parts
            direct = (self.open and not self._writing and not entry.fatal
                      and bool(self._pending) and self._pending[0] is entry)
            if not direct:
                self._cond.notify_all()
                return
            self._writing = True
        rest: list[memoryview] | None = None
        with contextlib.suppress(OSError):  # a broken socket: the writer finds it and closes
            rest = wire.send_nowait(self.sock, parts)
        with self._cond:
            self._writing = False
            if rest == []:
                self._pending.popleft()
            elif rest:
                entry.parts = list(rest)
            self._cond.notify_all()

    def _write_loop(self) -> None:
        try:
            while (entry := self._next_answer()) is not None:
                wire.send_parts(self.sock, entry.parts or [])
                with self._cond:
                    self._pending.popleft()
                    self._writing = False
                    self._cond.notify_all()
                if entry.fatal:
                    break
        except OSError:
            pass
        finally:
            self._close()

    def _next_answer(self) -> _Entry | None:
        """The next answer to send (marking it being written), or None when done."""
        with self._cond:
            while self.open:
                if not self._writing:
                    if self._pending and self._pending[0].parts is not None:
                        self._writing = True
                        return self._pending[0]
                    if self._eof and not self._pending:
                        return None
                self._cond.wait(0.5)
            return None

    def abort(self, code: str, message: str) -> None:
        """The service stops: tell the client (if the socket takes it) and close."""
        with self._cond:
            self.open = False
            self._cond.notify_all()
            deadline = time.monotonic() + 2.0
            while self._writing and time.monotonic() < deadline:
                self._cond.wait(0.1)
            idle, self._writing = not self._writing, True
        if idle:
            with contextlib.suppress(OSError):
                self.sock.settimeout(1.0)
                wire.send_parts(self.sock, [wire.error_message(code, message)])
        self._close()

    def _close(self) -> None:
        with self._cond:
            was_open, self.open = self.open, False
            self.slots = None  # unmapped when the last view of it goes
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.admitted:
            self.service.leave(self, was_open)


class Service:
    """Accepts clients on ``listeners`` and hands their frames to a feed; see the module doc."""

    def __init__(self, spec: ServiceSpec, listeners: Sequence[Listener], *,
                 log: LogFn | None = None) -> None:
        if not listeners:
            raise wire.ServiceError("the service needs at least one listener")
        self.spec = spec
        self.listeners = list(listeners)
        self.log = log or stderr_log
        self._feed: Callable[[Request], bool] | None = None
        self._feed_cond = threading.Condition()
        self._sessions: set[Session] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._numbers = itertools.count(1)
        self.served = self.rejected = self.refused = 0
        #: Clients closed for breaking the protocol (a malformed message, a slot misused).
        self.protocol_errors = 0

    @property
    def addresses(self) -> list[str]:
        return [lst.address for lst in self.listeners]

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._sessions)

    def start(self) -> Service:
        for lst in self.listeners:
            lst.sock.settimeout(0.2)
            threading.Thread(target=self._accept_loop, args=(lst,), daemon=True,
                             name=f"edgedeploy-accept-{lst.address}").start()
        self.log(f"serving {self.spec.name} on {', '.join(self.addresses)}")
        return self

    def _accept_loop(self, lst: Listener) -> None:
        while not self._closed.is_set():
            try:
                conn, addr = lst.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                time.sleep(0.1)  # EMFILE and friends: do not spin
                continue
            conn.settimeout(None)
            wire.size_buffers(conn, self.spec.message_bytes)
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else lst.address
            Session(self, conn, peer, lst.token, next(self._numbers)).start()

    def admit(self, session: Session) -> bool:
        with self._lock:
            if self._closed.is_set() or len(self._sessions) >= self.spec.max_clients:
                return False
            self._sessions.add(session)
            session.admitted = True
        return True

    def leave(self, session: Session, was_open: bool) -> None:
        with self._lock:
            self._sessions.discard(session)

    def attach(self, feed: Callable[[Request], bool] | None) -> None:
        """Frames go to ``feed`` from now on; with None they wait (a plan switch)."""
        with self._feed_cond:
            self._feed = feed
            self._feed_cond.notify_all()

    def dispatch(self, request: Request) -> None:
        """Hand a frame to the attached feed, in its client's reader thread: the feed blocks
        while the pipeline is full (backpressure) and says False when it takes no more, and
        then the frame waits for the next feed."""
        while request.session.open and not self._closed.is_set():
            feed = self._feed
            if feed is not None and feed(request):
                return
            with self._feed_cond:
                if self._feed is feed:
                    self._feed_cond.wait(0.2)

    def count_protocol_error(self) -> None:
        with self._lock:
            self.protocol_errors += 1

    def stats(self) -> dict[str, Any]:
        return {"listen": self.addresses, "clients": self.clients, "served": self.served,
                "rejected": self.rejected, "refused": self.refused,
                "protocol_errors": self.protocol_errors}

    def close(self, code: str = "failed", message: str = "the runner stopped") -> None:
        """Stop accepting, tell every client ``message`` (fatal), close every socket."""
        if self._closed.is_set():
            return
        self._closed.set()
        for lst in self.listeners:
            lst.close()
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.abort(code, message)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
