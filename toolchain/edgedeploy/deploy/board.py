"""The install folder on a board and the primitive operations on it.

Layout under the install root (the target's ``path``)::

    releases/<id>/        one folder per release, verified against its SHA256SUMS
    releases/.incoming-*  uploads in progress (renamed into place only once complete)
    current -> releases/<id>
    run/runner.pid, run/runner.release, run/health.status, run/health.out
    run/supervisor.pid, run/restarts   the supervisor (no systemd) and its restart count
    run/python                         the board's interpreter, chosen at deploy time
    logs/runner.log
    journal.jsonl

Every operation is one argv through :meth:`Transport.run` with a fixed script from
:mod:`edgedeploy.deploy.scripts`; user data travels only as arguments.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgedeploy.deploy import scripts, unit
from edgedeploy.deploy.bundle import RELEASE_ID, Bundle
from edgedeploy.deploy.journal import parse_journal
from edgedeploy.deploy.transport import Transport
from edgedeploy.errors import EdgeDeployError

#: An ``.incoming-*`` upload folder in which nothing changed for this long was abandoned (a
#: dropped connection); ``prune`` removes it. Uploads in progress write into theirs continuously.
ABANDONED_UPLOAD_MIN = 10


def choose_python(configured: str | None, descriptor: str | None, *, remote: bool) -> str:
    """The rule for the board's interpreter, in one place: what the target configures, else on
    this host (the local transport) this interpreter, which has numpy and the engines, else the
    board descriptor's ``ssh.python``, else ``python3`` from the board's PATH. A host path is
    never chosen for a remote board."""
    if configured:
        return configured
    if not remote:
        return sys.executable or "python3"
    return descriptor or "python3"


class HealthError(EdgeDeployError):
    """The runner did not become healthy (check failed, timed out, or the runner died)."""


@dataclass
class DeployHooks:
    """Test seams between steps (how the fault tests drop links and corrupt uploads)."""

    after_file_uploaded: Callable[[str], None] | None = None
    before_verify: Callable[[Transport, str], None] | None = None


@dataclass
class BoardState:
    """What :data:`scripts.PROBE` found."""

    facts: dict[str, str] = field(default_factory=dict)

    @property
    def current(self) -> str | None:
        link = self.facts.get("current", "")
        name = link.rsplit("/", 1)[-1]
        return name if link.startswith("releases/") and RELEASE_ID.match(name) else None

    @property
    def alive(self) -> bool:
        return self.facts.get("alive") == "1"

    @property
    def running(self) -> str | None:
        return self.facts.get("running") if self.alive else None

    @property
    def systemd_user(self) -> bool:
        return self.facts.get("systemd_user") == "1"

    @property
    def supervised(self) -> bool:
        """The supervisor (no systemd) is alive: a dead runner is about to be restarted."""
        return self.facts.get("supervised") == "1"

    @property
    def runner_state(self) -> str:
        """``running``; ``restarting`` (runner dead, its supervisor waiting out the back-off);
        ``dead`` (a runner was started and nothing runs or restarts it); ``stopped`` (none was
        started, or ``stop`` stopped it)."""
        if self.alive:
            return "running"
        if self.supervised:
            return "restarting"
        return "dead" if "pid" in self.facts else "stopped"

    def int_fact(self, key: str) -> int | None:
        value = self.facts.get(key, "")
        return int(value) if value.isdigit() else None


def parse_health(output: str) -> Any:
    """The last line of a health script's output that is JSON, else the raw text."""
    for line in reversed(output.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return output.strip()[-500:]


class Board:
    """One install root on one board, reached through a transport."""

    def __init__(self, transport: Transport, root: str, *, use_systemd: bool | None = None) -> None:
        self.t = transport
        self.root = root
        self.use_systemd = use_systemd
        self.unit = "edgedeploy-" + hashlib.sha256(root.encode()).hexdigest()[:12]

    def _sh(self, script: str, *args: str, what: str, changes: bool = True,
            check: bool = True, timeout: float | None = 60.0) -> Any:
        return self.t.run(["sh", "-c", script, "edgedeploy", self.root, *args], what=what,
                          changes=changes, check=check, timeout=timeout)

    def probe(self) -> BoardState:
        res = self._sh(scripts.PROBE, what="probing the board", changes=False)
        facts = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        return BoardState(facts)

    def prepare(self) -> None:
        dirs = [f"{self.root}/{d}" for d in ("releases", "logs", "run")]
        self.t.run(["mkdir", "-p", "--", *dirs], what="creating the install folders")

    def upload(self, bundle: Bundle, hooks: DeployHooks | None = None) -> str:
        """Copy the bundle into a fresh ``releases/.incoming-*`` folder; return its path."""
        tmp = f"{self.root}/releases/.incoming-{bundle.id}-{secrets.token_hex(4)}"
        subdirs = sorted({f"{tmp}/{f.path.rsplit('/', 1)[0]}" for f in bundle.files
                          if "/" in f.path})
        self.t.run(["mkdir", "-p", "--", tmp, *subdirs], what="creating the upload folder")
        for item in bundle.files:
            self.t.put(bundle.root / item.path, f"{tmp}/{item.path}")
            if hooks and hooks.after_file_uploaded:
                hooks.after_file_uploaded(item.path)
        if "SHA256SUMS" not in {f.path for f in bundle.files}:
            self.t.put(bundle.root / "SHA256SUMS", f"{tmp}/SHA256SUMS")
        return tmp

    def verify(self, tmp: str) -> None:
        res = self.t.run(["sh", "-c", scripts.VERIFY, "edgedeploy", tmp], check=False,
                         what="verifying checksums", timeout=300)
        if not res.ok:
            raise EdgeDeployError(f"{self.t.label}: the upload does not match its SHA256SUMS "
                                  f"(corrupted in transit or on the board's storage):\n"
                                  f"{res.tail()}")

    def install(self, tmp: str, release_id: str) -> None:
        final = f"{self.root}/releases/{release_id}"
        self.t.run(["rm", "-rf", "--", final], what="removing a stale copy")
        self.t.run(["mv", "-T", "--", tmp, final], what="moving the release into place")

    def discard(self, tmp: str) -> None:
        self.t.run(["rm", "-rf", "--", tmp], check=False, what="removing the partial upload")

    def switch(self, release_id: str) -> None:
        """Point ``current`` at the release atomically (rename of a new symlink)."""
        link = f".current-{secrets.token_hex(4)}"
        self._sh(scripts.SWITCH, release_id, link, what=f"switching current to {release_id}")
        self.t.run(["touch", "-c", "--", f"{self.root}/releases/{release_id}"],
                   check=False, what="marking the release as activated")

    def unlink_current(self) -> None:
        self.t.run(["rm", "-f", "--", f"{self.root}/current"], what="removing current")

    def read_meta(self, release_id: str) -> dict[str, Any]:
        res = self.t.run(["cat", "--", f"{self.root}/releases/{release_id}/bundle.json"],
                         changes=False, what=f"reading {release_id}/bundle.json")
        try:
            meta = json.loads(res.stdout) if not res.dry_run else {}
        except ValueError as exc:
            raise EdgeDeployError(f"{self.t.label}: release {release_id} has a broken "
                                  f"bundle.json: {exc}") from exc
        return meta if isinstance(meta, dict) else {}

    def uses_systemd(self, state: BoardState) -> bool:
        return state.systemd_user if self.use_systemd is None else self.use_systemd

    def set_python(self, python: str | None) -> None:
        """Record the interpreter for this install (run.sh and health.sh read ``run/python``);
        None removes it (they fall back on the bundle's default)."""
        if python is None:
            self.t.run(["rm", "-f", "--", f"{self.root}/run/python"], what="forgetting python")
            return
        self._sh(scripts.SET_PYTHON, python, what="recording the board's interpreter")

    def start(self, release_id: str, entry: str, state: BoardState) -> str:
        """Start the runner detached from this connection, restarted when it fails; returns how.

        Under systemd --user the unit restarts it (Restart=on-failure); elsewhere the START
        script's supervisor loop does (see :data:`scripts.START`).
        """
        self.t.run(["rm", "-f", "--", f"{self.root}/run/restarts"], what="resetting restarts")
        args = ["sh", "-c", scripts.START, "edgedeploy-runner", self.root, release_id, entry]
        home = state.facts.get("home", "")
        if self.uses_systemd(state) and state.facts.get("linger") == "yes" and home:
            path = unit.unit_path(home, self.unit)
            self._sh(scripts.INSTALL_UNIT, scripts.START, path, unit.render(self.root, entry),
                     self.unit, what="installing and starting the systemd user unit")
            return f"systemd --user ({self.unit}, enabled at boot, Restart=on-failure)"
        if self.uses_systemd(state):
            self.t.run(["systemd-run", "--user", "--quiet", "--collect", f"--unit={self.unit}",
                        "--property=Restart=on-failure", "--property=RestartSec=2",
                        "--property=RestartPreventExitStatus=2", *args, "once"],
                       what="starting the runner under systemd --user")
            return f"systemd --user ({self.unit}, Restart=on-failure)"
        self.t.run(["setsid", "-f", *args, "supervise"], what="starting the runner")
        return "supervised process (setsid; restarted on failure)"

    def stop(self, state: BoardState | None = None) -> None:
        if state is not None and self.uses_systemd(state):
            home = state.facts.get("home", "")
            if home:
                self.t.run(["sh", "-c", scripts.REMOVE_UNIT, "edgedeploy",
                            unit.unit_path(home, self.unit), self.unit], check=False,
                           what="disabling the installed systemd unit")
            self.t.run(["systemctl", "--user", "stop", self.unit], check=False,
                       what="stopping the systemd unit")
        self._sh(scripts.STOP, what="stopping the runner", timeout=30)

    def health_once(self, release_id: str, health: str, timeout_s: float) -> tuple[int, str]:
        res = self._sh(scripts.HEALTH, release_id, health, str(max(1, round(timeout_s))),
                       what="health check", check=False, timeout=timeout_s + 30)
        return res.exit_code, (res.stdout + res.stderr)

    def wait_healthy(self, release_id: str, health: str, *, timeout_s: float, settle_s: float,
                     poll_s: float, script_timeout_s: float) -> Any:
        """Poll the health script until it passes with the runner alive for ``settle_s``."""
        if self.t.dry_run:
            return None
        start = time.monotonic()
        last = (0, "")
        while True:
            code, out = self.health_once(release_id, health, script_timeout_s)
            elapsed = time.monotonic() - start
            if code == 90:
                raise HealthError(f"{self.t.label}: the runner of {release_id} exited after "
                                  f"start ({elapsed:.1f} s in)\n{self.logs(15)}")
            if code == 0 and elapsed >= settle_s:
                return parse_health(out)
            if code != 0:
                last = (code, out)
            if elapsed > timeout_s:
                raise HealthError(f"{self.t.label}: release {release_id} is not healthy after "
                                  f"{timeout_s:g} s (health.sh exit {last[0]}): "
                                  f"{last[1].strip()[-600:]}")
            time.sleep(poll_s)

    def runner_status(self) -> dict[str, Any] | None:
        """The runner's own status file (throughput, latency, active plan, plan switches), which
        it rewrites every second under ``<root>/run``; None when there is none or it is torn."""
        res = self.t.run(["cat", f"{self.root}/run/runner.status.json"], what="reading status",
                         changes=False, check=False)
        if res.exit_code != 0:
            return None
        try:
            data = json.loads(res.stdout)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def logs(self, lines: int = 100) -> str:
        res = self._sh(scripts.LOGS, str(int(lines)), what="reading logs", changes=False,
                       check=False)
        return res.stdout

    def journal(self, entries: int = 50) -> list[dict[str, Any]]:
        """The newest ``entries`` of the board's deploy journal (``<root>/journal.jsonl``)."""
        res = self.t.run(["tail", "-n", str(int(entries)), "--", f"{self.root}/journal.jsonl"],
                         what="reading the deploy journal", changes=False, check=False)
        return parse_journal(res.stdout)

    def releases(self) -> list[tuple[int, str]]:
        """(activation time, id), newest first."""
        res = self._sh(scripts.LIST, what="listing releases", changes=False)
        out = []
        for line in res.stdout.splitlines():
            stamp, _, name = line.partition(" ")
            if stamp.isdigit() and RELEASE_ID.match(name):
                out.append((int(stamp), name))
        return out

    def prune(self, keep: int, protect: set[str],
              abandoned_min: int = ABANDONED_UPLOAD_MIN) -> list[str]:
        """Delete all but the ``keep`` newest releases (never a protected one), and upload
        folders abandoned ``abandoned_min`` minutes ago; returns what was removed."""
        doomed = [rid for _, rid in self.releases()[max(keep, 1):] if rid not in protect]
        if doomed:
            self.t.run(["rm", "-rf", "--", *(f"{self.root}/releases/{r}" for r in doomed)],
                       what="pruning old releases")
        res = self._sh(scripts.PRUNE_INCOMING, str(max(1, int(abandoned_min))),
                       what="removing abandoned uploads")
        return doomed + res.stdout.split()
