"""Where the service listens: a Unix socket born with mode 0600, or TCP (only with a token).

A stale socket a dead runner left is replaced; a live one (another runner) is an error, and a
listener removes only its own socket file when it closes, never a successor's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Callable

from edgedeploy.runtime import wire
from edgedeploy.runtime.bridge import connect_unix, unix_path


class Listener:
    """A listening socket, its address for people, and the token its clients must show."""

    def __init__(self, sock: socket.socket, address: str, token: bytes | None = None,
                 cleanup: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.address = address
        self.token = token
        self._cleanup = cleanup

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._cleanup is not None:
            self._cleanup()


def listen_unix(path: str | os.PathLike[str], backlog: int = 64) -> Listener:
    """Listen on ``path`` with mode 0600 (a stale socket of a dead runner is replaced)."""
    path = os.fspath(path)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600: no window in which others may connect
    try:
        with unix_path(path) as name:
            sock.bind(name)
    except OSError as exc:
        sock.close()
        raise wire.ServiceError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    ino = os.stat(path).st_ino

    def cleanup() -> None:  # only our own socket: a successor may already listen there
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == ino:
                os.unlink(path)
    return Listener(sock, wire.describe_address("unix", path), None, cleanup)


def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise wire.ServiceError(f"{path} exists and is not a socket",
                                hint="remove it, or set another io.listen path")
    try:
        connect_unix(path, timeout=1.0).close()
    except OSError:  # nobody listens: a dead runner's socket
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    raise wire.ServiceError(f"another runner already serves on {path}",
                            hint="stop it first (edgedeploy stop), or set another io.listen path")


def listen_tcp(host: str, port: int, token: bytes, backlog: int = 64) -> Listener:
    """Listen on TCP ``host:port`` (0: any free port); clients must present ``token``."""
    if not token:
        raise wire.ServiceError("a TCP listener needs a token")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise wire.ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                                hint="is the port in use? choose another in io.listen") from None
    sock.listen(backlog)
    return Listener(sock, wire.describe_address("tcp", host, sock.getsockname()[1]), token)
