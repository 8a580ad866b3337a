"""stdin/stdout <-> the runner's Unix socket: how a host reaches a board's service over SSH.

The host opens an SSH exec channel running ``python -m edgedeploy.runtime.bridge SOCKET`` with
the board's interpreter (the bundle's ``runner/`` on PYTHONPATH) and speaks the wire protocol
(wire.py) through it. No port is opened on the board and everything that reaches the board over
SSH (ProxyJump, ssh-agent, ~/.ssh/config) reaches the service the same way. Stdlib only, so the
bridge starts quickly; it copies bytes and understands nothing of what it copies.

Exit codes: 0 when either side closed; 3 when no runner serves on SOCKET (said on stderr).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Iterator

CHUNK = 1 << 18
#: sockaddr_un holds 108 bytes with the NUL; longer paths go through /proc/self/fd.
MAX_UNIX_PATH = 100
NO_SERVICE = 3


@contextlib.contextmanager
def unix_path(path: str) -> Iterator[str]:
    """A name ``bind``/``connect`` accept for ``path``, even past the sockaddr_un limit: for a
    long path, ``/proc/self/fd/N/NAME`` through an open descriptor of its folder (Linux)."""
    if len(os.fsencode(path)) <= MAX_UNIX_PATH:
        yield path
        return
    folder, name = os.path.split(os.path.abspath(path))
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def connect_unix(path: str, timeout: float | None = 10.0) -> socket.socket:
    """A connected stream socket to ``path`` (blocking once connected)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        with unix_path(path) as name:
            sock.connect(name)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _upstream(sock: socket.socket, fd_in: int) -> None:
    """stdin -> socket; at stdin's end, half-close so the runner still sends what it owes."""
    try:
        while data := os.read(fd_in, CHUNK):
            sock.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def pump(sock: socket.socket, fd_in: int = 0, fd_out: int = 1) -> None:
    """Copy both ways until the socket's end (the runner closed, or answered all and we closed)."""
    threading.Thread(target=_upstream, args=(sock, fd_in), name="bridge-up", daemon=True).start()
    try:
        while data := sock.recv(CHUNK):
            _write_all(fd_out, data)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edgedeploy.runtime.bridge SOCKET", file=sys.stderr)
        return 2
    try:
        sock = connect_unix(args[0])
    except OSError as exc:
        print(f"edgedeploy bridge: no runner serves on {args[0]}: {exc.strerror or exc}",
              file=sys.stderr)
        return NO_SERVICE
    with sock:
        pump(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
