"""The ``ssh`` transport: Fabric over Paramiko, with strict host-key checking that Fabric lacks.

Fabric honours ~/.ssh/config (HostName, Port, User, IdentityFile, ProxyJump), ssh-agent and
identity files, but it creates every client - ProxyJump hops included - with Paramiko's
``AutoAddPolicy`` and never loads known_hosts, i.e. it trusts any server. Here every client of the
chain gets known_hosts loaded and a rejecting policy: an unknown key is refused with the exact
line to add (or ``--accept-new-host-keys``, which appends it, as OpenSSH's ``accept-new`` does); a
changed key raises Paramiko's BadHostKeyException whatever the policy, and is always refused.
No password is ever passed, so nothing can prompt.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from edgedeploy.deploy.transport import (
    Capabilities,
    ConnectionLostError,
    LineSink,
    Transport,
    TransportOptions,
)
from edgedeploy.errors import EdgeDeployError, UnreachableError

log = logging.getLogger("edgedeploy.deploy")
_KNOWN_HOSTS_LOCK = threading.Lock()  # fleets trust several hosts at once
LINK_SETTLE_S = 2.0  # how long a failed transfer waits to see whether the link died


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class UnknownHostKeyError(paramiko.SSHException):
    """Raised from the strict policy; carries what the user needs to decide."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"unknown host key for {hostname}")
        self.hostname = hostname
        self.key = key


class StrictPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse servers whose key is not in known_hosts (OpenSSH StrictHostKeyChecking=yes)."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise UnknownHostKeyError(hostname, key)


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Trust a first-seen key and append it to known_hosts (OpenSSH ``accept-new``)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _KNOWN_HOSTS_LOCK:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self.known_hosts.open("a") as fh:
                fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("trusted new host key for %s (%s %s), recorded in %s", hostname,
                    key.get_name(), fingerprint(key), self.known_hosts)


def _known_hosts_path(conn: Connection, options: TransportOptions) -> Path:
    if options.known_hosts is not None:
        return Path(options.known_hosts).expanduser()
    configured = conn.ssh_config.get("userknownhostsfile")
    if configured:
        return Path(str(configured).split()[0]).expanduser()
    return Path("~/.ssh/known_hosts").expanduser()


def _harden(conn: Connection, options: TransportOptions) -> None:
    """Give ``conn`` and every ProxyJump hop known_hosts and a strict policy."""
    hop: Any = conn
    while isinstance(hop, Connection):
        path = _known_hosts_path(hop, options)
        if path.is_file():
            hop.client.load_host_keys(str(path))
        if Path("/etc/ssh/ssh_known_hosts").is_file():
            hop.client.load_system_host_keys("/etc/ssh/ssh_known_hosts")
        policy: paramiko.MissingHostKeyPolicy = (
            AcceptNewPolicy(path) if options.accept_new_host_keys else StrictPolicy())
        hop.client.set_missing_host_key_policy(policy)
        hop = hop.gateway


def _chain(conn: Connection) -> list[Connection]:
    """``conn`` and its ProxyJump hops, nearest first (the last one is dialled directly)."""
    hops: list[Connection] = []
    hop: Any = conn
    while isinstance(hop, Connection):
        hops.append(hop)
        hop = hop.gateway
    return hops


def _host_id(hop: Connection) -> str:
    """The hop's name in known_hosts (``[host]:port`` off port 22)."""
    return hop.host if hop.port == 22 else f"[{hop.host}]:{hop.port}"


def _reason(exc: BaseException) -> str:
    """Why a connect failed, as the OS says it ("Connection refused (127.0.0.1:2222)"), not
    Paramiko's "[Errno None] Unable to connect to port ..."."""
    errors = getattr(exc, "errors", None)  # paramiko's NoValidConnectionsError
    if isinstance(errors, dict) and errors:
        return "; ".join(sorted({f"{err.strerror or err} ({addr[0]}:{addr[1]})"
                                 for addr, err in errors.items()}))
    return str(exc) or type(exc).__name__


class SshTransport(Transport):
    """A board over SSH (one Fabric Connection, reused for every command and upload)."""

    capabilities = Capabilities(name="ssh", remote=True, streams=True)

    def __init__(self, host: str, *, user: str | None = None, port: int | None = None,
                 identity_file: Path | None = None, options: TransportOptions | None = None,
                 dry_run: bool = False) -> None:
        self.options = options or TransportOptions()
        config = (Config(runtime_ssh_path=str(self.options.ssh_config))
                  if self.options.ssh_config else Config())
        connect_kwargs: dict[str, Any] = {"allow_agent": True}
        if identity_file is not None:
            connect_kwargs["key_filename"] = [str(identity_file)]
        self.conn = Connection(host, user=user, port=port, config=config,
                               connect_timeout=int(self.options.connect_timeout_s),
                               connect_kwargs=connect_kwargs)
        _harden(self.conn, self.options)
        label = f"{self.conn.user}@{host}" + (f":{self.conn.port}" if self.conn.port != 22 else "")
        super().__init__(label, dry_run=dry_run)

    def open(self) -> None:
        """Connect hop by hop, the farthest ProxyJump host first (Fabric reuses an open hop), so
        a refusal names the hop it happened on: a bastion's unknown key is not the board's, and
        the key to trust or remove differs."""
        for hop in reversed(_chain(self.conn)):
            self._open_hop(hop)

    def _open_hop(self, hop: Connection) -> None:
        board = hop is self.conn
        where = self.label if board else (
            f"{self.label}: jump host {hop.original_host} ({hop.host}:{hop.port})")
        what = "the board" if board else "the jump host"
        try:
            hop.open()
        except UnknownHostKeyError as exc:
            raise UnreachableError(
                f"{where}: unknown host key {exc.key.get_name()} {fingerprint(exc.key)} for "
                f"{exc.hostname}; refusing to connect (strict host-key checking)",
                hint=(f"if that fingerprint is {what}'s, trust it with `ssh-keyscan -p "
                      f"{hop.port} {hop.host} >> ~/.ssh/known_hosts`, or rerun with "
                      "--accept-new-host-keys (or host_key_policy: accept-new)")) from None
        except paramiko.BadHostKeyException as exc:
            raise UnreachableError(
                f"{where}: HOST KEY CHANGED for {exc.hostname}: known_hosts has "
                f"{fingerprint(exc.expected_key)}, the server offers {fingerprint(exc.key)}; "
                "refusing to connect (this can be an attack)",
                hint=(f"if {what} was reinstalled, remove the old key with `ssh-keygen -R "
                      f"'{_host_id(hop)}'` and trust the new one")) from None
        except paramiko.PasswordRequiredException:
            raise UnreachableError(f"{where}: the identity file is passphrase-protected",
                                   hint="load the key into ssh-agent (ssh-add KEY)") from None
        except paramiko.AuthenticationException as exc:
            raise UnreachableError(
                f"{where}: authentication failed ({exc})",
                hint="edgedeploy uses keys only: load one into ssh-agent, or set identity_file "
                     "or IdentityFile in ~/.ssh/config") from None
        except paramiko.ChannelException as exc:  # the jump host could not open the tunnel
            via = hop.gateway.original_host if isinstance(hop.gateway, Connection) else "?"
            raise UnreachableError(
                f"{where}: the jump host {via} cannot reach "
                f"{hop.host}:{hop.port} ({exc.text})",
                hint="check that the board is up and reachable from the jump host") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise UnreachableError(f"{where}: cannot connect: {_reason(exc)}",
                                   hint=f"check that {what} is up, its host, port and the "
                                        f"network (ssh -v {hop.original_host})") from None
        except ValueError as exc:  # fabric: ambiguous settings
            raise UnreachableError(f"{where}: {exc}") from None

    def close(self) -> None:
        """Close the board's connection, then every jump host's: Fabric's close leaves a
        ProxyJump gateway connected, one more bastion session per command for the process's
        life."""
        for hop in _chain(self.conn):
            try:
                hop.close()
            except Exception as exc:  # closing a dead link must not mask the real error
                log.debug("closing %s: %s", self.label, exc)

    def _alive(self) -> bool:
        transport = self.conn.client.get_transport()
        return transport is not None and transport.is_active()

    def _link_broke(self, exc: BaseException) -> bool:
        """Whether a failed transfer means the link broke rather than the file was refused.
        The server's refusals carry an errno (EACCES, ENOSPC, ...); anything else is judged
        by whether the link dies within a moment."""
        if getattr(exc, "errno", None) is not None:
            return not self._alive()
        return self._dies()

    def _dies(self) -> bool:
        """Whether the link is dead or dies within ``LINK_SETTLE_S``: Paramiko closes a dead
        transport's channels ("Socket is closed", exit -1) before it marks it inactive."""
        deadline = time.monotonic() + LINK_SETTLE_S
        while self._alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _lost(self, exc: BaseException, doing: str) -> ConnectionLostError:
        return ConnectionLostError(f"{self.label}: connection lost while {doing}: "
                                   f"{exc or type(exc).__name__}",
                                   hint="check that the board is up and rerun the command")

    def _exec(self, argv: list[str], command: str, timeout: float | None,
              sink: LineSink | None = None) -> tuple[int, str, str]:
        if not self.conn.is_connected:
            self.open()
        try:  # with a sink, Invoke copies stdout (not hidden) to it chunk by chunk
            res = self.conn.run(command, hide=True if sink is None else "err", warn=True,
                                in_stream=False, out_stream=sink, timeout=timeout)
        except CommandTimedOut as exc:
            raise EdgeDeployError(f"{self.label}: `{command}` timed out after {timeout} s") \
                from exc
        except (TimeoutError, OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(exc, f"running `{argv[0]}`") from exc
        if res.exited is None or (res.exited == -1 and self._dies()):
            raise self._lost(EOFError("channel closed"), f"running `{argv[0]}`")
        return int(res.exited), res.stdout, res.stderr

    def _exec_lines(self, argv: list[str], command: str, timeout: float | None,
                    on_line: Callable[[str], None]) -> tuple[int, str, str]:
        """Stdout's lines reach ``on_line`` as the board writes them (a probe's progress)."""
        sink = LineSink(on_line)
        try:
            return self._exec(argv, command, timeout, sink)
        finally:
            sink.close()

    def _stream(self, argv: list[str], command: str) -> ChannelStream:
        """An exec channel on the open connection (ProxyJump hops included)."""
        if not self.conn.is_connected:
            self.open()
        try:
            channel = self.conn.client.get_transport().open_session()
            channel.exec_command(command)
        except (OSError, EOFError, AttributeError, paramiko.SSHException) as exc:
            raise self._lost(exc, f"starting `{argv[0]}`") from exc
        return ChannelStream(channel)

    def _put(self, local: Path, remote: str) -> None:
        if not self.conn.is_connected:
            self.open()
        try:
            self.conn.put(os.fspath(local), remote=remote, preserve_mode=True)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if self._link_broke(exc):
                raise self._lost(exc, f"uploading {local.name}") from exc
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise EdgeDeployError(f"{self.label}: cannot write {remote}: {reason}") from exc


class ChannelStream:
    """An SSH exec channel as a byte stream (what :meth:`Transport.stream` returns): the wire
    protocol's ``sendall``/``recv_into`` over the command's stdin/stdout; its stderr and exit
    status say why it ended (``eof_reason``)."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel

    def sendall(self, data: bytes | memoryview) -> None:
        self.channel.sendall(bytes(data) if isinstance(data, memoryview) else data)

    def recv_into(self, view: memoryview, nbytes: int = 0) -> int:
        data = self.channel.recv(nbytes or len(view))
        view[:len(data)] = data
        return len(data)

    def settimeout(self, seconds: float | None) -> None:
        self.channel.settimeout(seconds)

    def eof_reason(self, wait_s: float = 2.0) -> str:
        """The command's stderr tail and exit status once it ended (or what is known)."""
        deadline = time.monotonic() + wait_s
        while not self.channel.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        err = b""
        while self.channel.recv_stderr_ready():
            err += self.channel.recv_stderr(1 << 16)
        text = err.decode("utf-8", "replace").strip()[-500:]
        if self.channel.exit_status_ready():
            text = f"{text} (exit {self.channel.recv_exit_status()})".strip()
        return text

    def close(self) -> None:
        self.channel.close()
