"""A real OpenSSH ``sshd`` on 127.0.0.1 for integration tests, shipped for users' own test suites.

Why a real daemon: the deployer's promises (strict host keys, quoting, dropped connections,
ProxyJump) are only worth what a real server does with them. The server runs as the current user
with a throw-away host key, client key, authorized_keys and known_hosts in a temporary folder;
``StrictModes no`` and ``UsePAM no`` let it run unprivileged (as root it needs ``/run/sshd``, which
is created). Use it from a conftest.py::

    pytest_plugins = ["edgedeploy.testing.sshd"]

    def test_push(sshd):  # module-scoped SshdServer
        ref = sshd.target_ref(path=str(tmp / "board"))
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd")
INSTALL_HINT = "install OpenSSH's server (Debian/Ubuntu: apt-get install openssh-server)"


def find_sshd() -> str | None:
    """Absolute path of the sshd binary (sshd refuses to start from a relative path)."""
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)


@dataclass
class SshdServer:
    """One running sshd and the client-side files that reach it."""

    root: Path
    home: Path | None = None  # sessions see this as $HOME (a separate "board" per server)
    port: int = 0
    host: str = "127.0.0.1"
    user: str = field(default_factory=getpass.getuser)
    proc: subprocess.Popen[bytes] | None = None
    extra_config: str = ""
    #: sshd's LogLevel; DEBUG1 also logs each forwarded channel (``server_request_direct_tcpip``
    #: with its target port), which is how a test proves a ProxyJump went through this server.
    log_level: str = "VERBOSE"

    @property
    def identity_file(self) -> Path:
        return self.root / "client_key"

    @property
    def host_key(self) -> Path:
        return self.root / "host_key"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def log_file(self) -> Path:
        return self.root / "sshd.log"

    @property
    def known_hosts_line(self) -> str:
        """The line ``ssh-keyscan -p PORT 127.0.0.1`` would print for this server."""
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {blob}\n"

    def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            _keygen(self.host_key, "edgedeploy-test-host")
        if not self.identity_file.exists():
            _keygen(self.identity_file, "edgedeploy-test-client")
        pub = self.identity_file.with_suffix(".pub").read_text()
        (self.root / "authorized_keys").write_text(pub)
        self.port = self.port or free_port()
        self.trust()

    def trust(self) -> None:
        """Write known_hosts with exactly this server's current key."""
        self.known_hosts.write_text(self.known_hosts_line)

    def config_text(self) -> str:
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            f"PidFile {self.root / 'sshd.pid'}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp", "MaxStartups 64", "MaxSessions 64",
            f"LogLevel {self.log_level}",
        ]
        if self.home is not None:
            lines.append(f'SetEnv HOME="{self.home}"')
        return "\n".join(lines) + "\n" + self.extra_config

    def start(self, timeout_s: float = 10.0) -> None:
        binary = find_sshd()
        if binary is None:
            raise FileNotFoundError(f"no sshd binary found; {INSTALL_HINT}")
        if os.geteuid() == 0:  # privilege separation needs its empty chroot folder
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        if self.home is not None:
            self.home.mkdir(parents=True, exist_ok=True)
        config = self.root / "sshd_config"
        config.write_text(self.config_text())
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}:\n"
                                   f"{self.log_file.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError), \
                    socket.create_connection((self.host, self.port), timeout=1) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on port {self.port} within {timeout_s} s")

    def kill(self) -> None:
        """Kill the daemon and every session it forked: open connections drop at once."""
        if self.proc is None:
            return
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def sessions(self) -> int:
        """How many sshd processes serve a connection now (0: every client has hung up)."""
        return len(_descendants(self.proc.pid)) if self.proc is not None else 0

    def rotate_host_key(self) -> None:
        """Give the server a new host key (known_hosts keeps the old one): a changed key."""
        self.stop()
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink()
        _keygen(self.host_key, "edgedeploy-test-host-rotated")
        self.start()

    def ssh_config_entry(self, alias: str, **extra: str) -> str:
        """A ~/.ssh/config block that names this server ``alias``."""
        lines = [f"Host {alias}", f"  HostName {self.host}", f"  Port {self.port}",
                 f"  User {self.user}", f"  IdentityFile {self.identity_file}",
                 "  IdentitiesOnly yes"]
        lines += [f"  {key} {value}" for key, value in extra.items()]
        return "\n".join(lines) + "\n"

    def target_ref(self, **overrides: Any) -> Any:
        """A manifest TargetRef that reaches this server."""
        from edgedeploy.schemas.manifest import TargetRef

        data: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user,
                                "identity_file": str(self.identity_file)}
        data.update(overrides)
        return TargetRef.model_validate(data)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found[::-1]


@contextlib.contextmanager
def running_sshd(root: Path, home: Path | None = None, extra_config: str = "") -> Iterator[
        SshdServer]:
    """Start an sshd under ``root`` and stop it afterwards (also usable outside pytest)."""
    server = SshdServer(root=root, home=home, extra_config=extra_config)
    server.setup()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _skip_without_sshd() -> None:
    if find_sshd() is None or shutil.which("ssh-keygen") is None:
        pytest.skip(f"no OpenSSH sshd/ssh-keygen on this machine: {INSTALL_HINT}")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """A module-scoped real sshd on 127.0.0.1 (one per test module keeps suites fast)."""
    _skip_without_sshd()
    root = tmp_path_factory.mktemp("sshd")
    with running_sshd(root / "server", home=root / "home") as server:
        yield server


@pytest.fixture
def sshd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start extra servers (each its own $HOME, i.e. its own board) for fleet tests."""
    _skip_without_sshd()
    servers: list[SshdServer] = []

    def make(name: str = "board", **settings: Any) -> SshdServer:
        """``settings``: more SshdServer fields, e.g. ``log_level="DEBUG1"`` for a bastion."""
        root = tmp_path_factory.mktemp(name)
        server = SshdServer(root=root / "server", home=root / "home", **settings)
        server.setup()
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
