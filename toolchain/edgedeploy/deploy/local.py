"""The ``local`` transport: a folder on this host laid out exactly like a board.

Used by ``make demo`` and by tests that need no SSH. Commands run from argv lists without a shell,
so they see the same argv an SSH board would (where ``shlex.join`` quotes them for the login
shell).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgedeploy.deploy.transport import Capabilities, Transport
from edgedeploy.errors import EdgeDeployError


class LocalTransport(Transport):
    """This host as a board."""

    capabilities = Capabilities(name="local", remote=False)

    def __init__(self, *, dry_run: bool = False) -> None:
        super().__init__("local", dry_run=dry_run)

    def home(self) -> str:
        return os.path.expanduser("~")

    def _exec(self, argv: list[str], command: str,
              timeout: float | None) -> tuple[int, str, str]:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except FileNotFoundError:
            return 127, "", f"{argv[0]}: command not found"
        except subprocess.TimeoutExpired as exc:
            raise EdgeDeployError(f"local: `{command}` timed out after {timeout} s") from exc
        return proc.returncode, proc.stdout, proc.stderr

    def _put(self, local: Path, remote: str) -> None:
        try:
            shutil.copy2(local, remote)
        except OSError as exc:
            raise EdgeDeployError(f"local: cannot write {remote}: {exc.strerror or exc}") from exc
