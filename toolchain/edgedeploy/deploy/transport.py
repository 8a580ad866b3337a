"""One interface for every way of reaching a board, and one seam for every command sent to it.

Modelled on Zephyr's west runners: back-ends declare what they can do as data
(:class:`Capabilities`), and the public methods here check and log before calling a back-end hook.
Every command is an argv list, quoted with :func:`shlex.join` where a shell will read it, logged,
recorded in :attr:`Transport.history`, and skipped under dry-run when it would change the board.
"""

from __future__ import annotations

import logging
import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedeploy.errors import EdgeDeployError, UnreachableError

log = logging.getLogger("edgedeploy.deploy")

#: How much of a failed command's output an error shows.
TAIL_CHARS = 1200


@dataclass(frozen=True)
class Capabilities:
    """What a transport can do, as data (the release logic asks, never checks types)."""

    name: str
    remote: bool
    #: Upload keeps file modes (executable scripts stay executable).
    preserves_modes: bool = True
    #: Commands survive the connection: a dropped link leaves started processes running.
    detached_processes: bool = True
    #: :meth:`Transport.stream` can run a command as a byte stream (the service bridge).
    streams: bool = False


@dataclass
class CommandResult:
    """What was asked (argv, the shell line) and what came back."""

    argv: list[str]
    command: str
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self) -> str:
        text = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()
        return text[-TAIL_CHARS:]


class CommandError(EdgeDeployError):
    """A command on the board exited non-zero; shows the command, its code and output tail."""

    def __init__(self, host: str, result: CommandResult, what: str | None = None) -> None:
        head = f"{what}: " if what else ""
        tail = result.tail()
        super().__init__(f"{head}on {host}: `{result.command}` exited {result.exit_code}"
                         + (f"\n{tail}" if tail else ""))
        self.result = result


class ConnectionLostError(UnreachableError):
    """The link to the board broke mid-operation (the host itself may be fine)."""


class Transport(ABC):
    """A board reached somehow: run argv commands on it and put files on it."""

    capabilities: Capabilities

    def __init__(self, label: str, *, dry_run: bool = False) -> None:
        self.label = label
        self.dry_run = dry_run
        self.history: list[CommandResult] = []

    # -- the one command seam -------------------------------------------------------------
    def run(self, argv: list[str], *, check: bool = True, changes: bool = True,
            timeout: float | None = 60.0, what: str | None = None,
            on_line: Callable[[str], None] | None = None) -> CommandResult:
        """Run ``argv`` on the board. ``changes=False`` marks a read-only probe, which still
        runs under dry-run so a dry run can say what would change. ``on_line`` gets each line
        of stdout as the board writes it where the back-end can stream (SSH), else when the
        command ends: the progress of a long measurement."""
        if not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a non-empty list of str")
        command = shlex.join(argv)
        if self.dry_run and changes:
            log.info("[%s] (dry run) would run: %s", self.label, _loggable(argv, what))
            result = CommandResult(argv, command, 0, dry_run=True)
            self.history.append(result)
            return result
        log.info("[%s] $ %s", self.label, _loggable(argv, what))
        start = time.monotonic()
        code, out, err = (self._exec(argv, command, timeout) if on_line is None
                          else self._exec_lines(argv, command, timeout, on_line))
        result = CommandResult(argv, command, code, out, err, time.monotonic() - start)
        self.history.append(result)
        if code != 0:
            log.debug("[%s] exit %d: %s", self.label, code, result.tail())
            if check:
                raise CommandError(self.label, result, what)
        return result

    def stream(self, argv: list[str], *, what: str | None = None) -> Any:
        """Start ``argv`` on the board with its stdin and stdout as one byte stream (an object
        with ``sendall``, ``recv_into``, ``close`` and ``eof_reason``): how a host speaks the
        runner's wire protocol through the board's bridge (runtime/bridge.py). Logged and
        recorded like :meth:`run` (exit code 0: started); it changes nothing, so it runs under
        dry-run too."""
        if not self.capabilities.streams:
            raise EdgeDeployError(f"{self.label}: the {self.capabilities.name} transport cannot "
                                  "stream a command")
        command = shlex.join(argv)
        log.info("[%s] $ %s (stream)", self.label, _loggable(argv, what))
        self.history.append(CommandResult(argv, command, 0))
        return self._stream(argv, command)

    def _stream(self, argv: list[str], command: str) -> Any:
        """Start the command as a stream, for real (transports whose capabilities stream)."""
        raise NotImplementedError

    def put(self, local: Path, remote: str) -> None:
        """Copy one file onto the board (modes kept where the capability says so)."""
        if self.dry_run:
            log.info("[%s] (dry run) would upload %s -> %s", self.label, local, remote)
            argv = ["put", str(local), remote]
            self.history.append(CommandResult(argv, shlex.join(argv), 0, dry_run=True))
            return
        log.debug("[%s] upload %s -> %s", self.label, local, remote)
        self._put(local, remote)

    def home(self) -> str:
        """The login user's home folder on the board (for ``~`` in target paths)."""
        result = self.run(["printenv", "HOME"], changes=False, what="reading $HOME")
        home = result.stdout.strip()
        if not home.startswith("/"):
            raise EdgeDeployError(f"{self.label}: $HOME is not an absolute path: {home!r}")
        return home

    def expand(self, path: str) -> str:
        """Resolve ``~`` and make the install path absolute (remote paths are never relative)."""
        if path == "~" or path.startswith("~/"):
            path = self.home() + path[1:]
        if not path.startswith("/"):
            path = self.home() + "/" + path
        return path.rstrip("/") or "/"

    # -- back-end hooks ------------------------------------------------------------------
    @abstractmethod
    def _exec(self, argv: list[str], command: str,
              timeout: float | None) -> tuple[int, str, str]:
        """Execute for real; return (exit code, stdout, stderr)."""

    @abstractmethod
    def _put(self, local: Path, remote: str) -> None:
        """Upload for real."""

    def _exec_lines(self, argv: list[str], command: str, timeout: float | None,
                    on_line: Callable[[str], None]) -> tuple[int, str, str]:
        """:meth:`_exec`, handing stdout's lines to ``on_line``; a back-end that can stream
        overrides this to hand them over as they arrive."""
        code, out, err = self._exec(argv, command, timeout)
        sink = LineSink(on_line)
        sink.write(out)
        sink.close()
        return code, out, err

    def open(self) -> None:  # noqa: B027 - optional hook: local needs no connection
        """Connect (no-op for local); raises UnreachableError."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection."""

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineSink:
    """A write-only text stream that hands each complete line to a callback (a command's
    output arrives in chunks that split lines). An exception from the callback is kept and
    raised by :meth:`close`: the stream may be written from a reader thread."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self._partial = ""
        self._error: BaseException | None = None

    def write(self, data: str) -> int:
        *lines, self._partial = (self._partial + data).split("\n")
        for line in lines:
            self._emit(line)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered but a partial line, which waits for its end."""

    def _emit(self, line: str) -> None:
        if self._error is not None:
            return
        try:
            self.on_line(line)
        except BaseException as exc:  # re-raised by close, on the caller's thread
            self._error = exc

    def close(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""
        if self._error is not None:
            raise self._error


def _loggable(argv: list[str], what: str | None) -> str:
    """The command for a log line: fixed multi-line scripts shortened to what they do."""
    shown = [f"<script: {what or 'inline'}>" if i and argv[i - 1] == "-c" and "\n" in arg
             else arg for i, arg in enumerate(argv)]
    return shlex.join(shown)


@dataclass
class TransportOptions:
    """Connection settings that do not live in the manifest (they are per user, not per board)."""

    accept_new_host_keys: bool = False
    known_hosts: Path | None = None  # default: ~/.ssh/known_hosts
    ssh_config: Path | None = None  # default: ~/.ssh/config (and /etc/ssh/ssh_config)
    connect_timeout_s: float = 10.0
    extra: dict[str, str] = field(default_factory=dict)
