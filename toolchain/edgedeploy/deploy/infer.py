"""Reaching a deployed runner's service from the host.

A target on this machine (the local transport) is reached through its Unix socket directly. An
SSH board is reached through an exec channel on the deployer's own connection running the bundle's
bridge (``python -m edgedeploy.runtime.bridge SOCKET`` with the target's interpreter), which copies
the wire protocol between the channel and the socket: no port is opened on the board, and
whatever reaches the board for a push (ProxyJump, ssh-agent, ~/.ssh/config) reaches its service.
"""

from __future__ import annotations

import posixpath
from typing import Any

from edgedeploy.client import Client
from edgedeploy.deploy.api import board_python, hosts_of, open_transport
from edgedeploy.deploy.transport import Transport, TransportOptions
from edgedeploy.errors import InputError
from edgedeploy.runtime.wire import UNIX_SOCKET
from edgedeploy.schemas.io import Io
from edgedeploy.schemas.manifest import TargetRef

#: The runner's state dir under the install root (deploy/board.py's layout).
RUN_DIR = "run"


def service_socket(transport: Transport, root: str, io: Io) -> str:
    """The runner's socket on the board: ``io.listen``'s ``unix://`` path (absolute, ``~`` or
    relative to the state dir) or ``<root>/run/runner.sock``."""
    run = posixpath.join(root, RUN_DIR)
    if io.listen.startswith("unix://"):
        path = io.listen[len("unix://"):]
        return transport.expand(path) if path.startswith("~") else posixpath.join(run, path)
    return posixpath.join(run, UNIX_SOCKET)


def choose_host(ref: TargetRef, alias: str, host: str | None) -> str:
    hosts = hosts_of(ref)
    if host is None:
        if len(hosts) > 1:
            raise InputError(f"target {alias!r} has {len(hosts)} hosts; say which one to use",
                             hint=f"--host {hosts[0]} (hosts: {', '.join(hosts)})")
        return hosts[0]
    if host not in hosts and ref.transport != "local":
        raise InputError(f"{host!r} is not a host of target {alias!r}",
                         hint=f"hosts: {', '.join(hosts)}")
    return host


class _Owned:
    """A stream that closes its SSH connection with it (the client owns both)."""

    def __init__(self, stream: Any, transport: Transport) -> None:
        self._stream = stream
        self._transport = transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._transport.close()


def open_client(ref: TargetRef, alias: str, io: Io, *, host: str | None = None,
                window: int = 8, access: TransportOptions | None = None) -> Client:
    """A :class:`Client` connected to the runner serving on ``host`` of ``ref``."""
    chosen = choose_host(ref, alias, host)
    transport = open_transport(ref, chosen, access=access)
    try:
        transport.open()
        root = transport.expand(ref.path)
        sock = service_socket(transport, root, io)
        if not transport.capabilities.remote:
            transport.close()
            return Client.unix(sock, window=window)
        runner = posixpath.join(root, "current", "runner")
        argv = ["env", f"PYTHONPATH={runner}", board_python(ref), "-m",
                "edgedeploy.runtime.bridge", sock]
        stream = _Owned(transport.stream(argv, what="service bridge"), transport)
    except BaseException:
        transport.close()
        raise
    return Client(stream, window=window, label=f"{transport.label}:{sock}")
