"""Atomic releases on one host: upload, verify, switch, start, prove healthy - or roll back.

The order is what keeps a board working: everything that can fail slowly (upload, checksum,
doctor) happens while the previous release keeps running; the switch of ``current`` is one rename;
and any failure after it stops the new runner, points ``current`` back and restarts and re-checks
the previous release. Only when that recovery fails too is the host reported as broken (exit 6).
Functions here never raise for a host's failure: they return a :class:`HostResult`, so a fleet can
carry on; :meth:`HostResult.raise_for_status` turns one into the mapped error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedeploy.deploy.board import Board, BoardState, DeployHooks, choose_python
from edgedeploy.deploy.bundle import Bundle
from edgedeploy.deploy.doctor import doctor, require
from edgedeploy.deploy.journal import Journal
from edgedeploy.deploy.transport import Transport
from edgedeploy.errors import (
    DeployError,
    EdgeDeployError,
    RollbackFailedError,
    UnreachableError,
)


@dataclass
class ReleaseOptions:
    """How a push behaves on each host."""

    keep: int = 3  # releases kept on the board (current and previous always are)
    health_timeout_s: float = 30.0  # until the new release must be healthy
    settle_s: float = 2.0  # the runner must stay up this long with health passing
    poll_s: float = 0.3
    health_script_timeout_s: float = 10.0  # one run of health.sh
    use_systemd: bool | None = None  # None: systemd --user where the board has it
    check_doctor: bool = True
    #: The board's interpreter (``deploy.api.board_python`` of the target); None: the rule of
    #: :func:`~edgedeploy.deploy.board.choose_python` on the bundle's own default.
    python: str | None = None
    journal_dir: Path | None = None
    hooks: DeployHooks | None = None


@dataclass
class HostResult:
    """What one operation did on one host: asked, resolved, and how it ended."""

    host: str
    op: str
    path: str
    outcome: str = "pending"  # deployed, unchanged, rolled-back, rollback-failed, unreachable,
    #                           refused, failed, dry-run, skipped, ok
    release: str | None = None
    previous: str | None = None
    current: str | None = None  # what `current` points at afterwards
    runner: str | None = None
    health: Any = None
    message: str = ""
    exit_code: int = 0
    dry_run: bool = False
    commands: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: EdgeDeployError | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def fail(self, outcome: str, error: EdgeDeployError) -> HostResult:
        self.outcome, self.error = outcome, error
        self.exit_code, self.message = error.exit_code, str(error)
        return self

    def raise_for_status(self) -> None:
        if self.error is not None:
            self.error.result = self  # type: ignore[attr-defined]
            raise self.error

    def to_dict(self) -> dict[str, Any]:
        keys = ("host", "op", "path", "outcome", "release", "previous", "current", "runner",
                "health", "message", "exit_code", "dry_run", "commands", "steps")
        return {k: getattr(self, k) for k in keys}


def _finish(result: HostResult, journal: Journal, transport: Transport) -> HostResult:
    if result.outcome != "unreachable":
        journal.flush_remote(transport)
    result.steps = journal.entries
    if transport.dry_run:
        result.commands = [c.command for c in transport.history if c.dry_run]
    return result


def _connect(transport: Transport, path: str, journal: Journal) -> Board:
    with journal.step("connect", transport=transport.capabilities.name) as d:
        transport.open()
        root = transport.expand(path)
        d["root"] = root
    journal.root = root
    return Board(transport, root)


def _describe(bundle: Bundle) -> str:
    """``bundle NAME (release ID, plan SHA)``: which plan a refusal is about."""
    plan = f", plan {bundle.plan_sha256[:12]}" if bundle.plan_sha256.strip("0") else ""
    return f"bundle {bundle.name} (release {bundle.id}{plan})"


def push_release(transport: Transport, path: str, bundle: Bundle,
                 opts: ReleaseOptions | None = None) -> HostResult:
    """Deploy ``bundle`` to ``path`` on the board behind ``transport``."""
    opts = opts or ReleaseOptions()
    dry = transport.dry_run
    journal = Journal(transport.label, path, "push", local_dir=opts.journal_dir, dry_run=dry)
    result = HostResult(transport.label, "push", path, release=bundle.id, dry_run=dry)
    tmp: str | None = None
    try:
        board = _connect(transport, path, journal)
        board.use_systemd = opts.use_systemd
        result.path = board.root
        with journal.step("probe") as d:
            state = board.probe()
            d.update(current=state.current, running=state.running, systemd=state.systemd_user)
        result.previous = result.current = state.current
        python = choose_python(opts.python, bundle.python, remote=transport.capabilities.remote)
        if opts.check_doctor:
            with journal.step("doctor", requires=list(bundle.requires), python=python) as d:
                report = doctor(transport, python, bundle.requires)
                d["missing"] = report.missing
                if report.providers is not None:
                    d["providers"] = report.providers
                require(report, _describe(bundle))
        if (state.current == bundle.id and state.running == bundle.id
                and state.facts.get("python") == python):
            result.outcome, result.message = "unchanged", f"{bundle.id} is already running"
            journal.record("unchanged", "ok", release=bundle.id)
            return _finish(result, journal, transport)
        with journal.step("prepare"):
            board.prepare()
        with journal.step("upload", files=len(bundle.files), bytes=bundle.total_bytes):
            tmp = board.upload(bundle, opts.hooks)
        if opts.hooks and opts.hooks.before_verify and not dry:
            opts.hooks.before_verify(transport, tmp)
        with journal.step("verify"):
            if not dry:
                board.verify(tmp)
        with journal.step("install", release=bundle.id):
            board.install(tmp, bundle.id)
            tmp = None
    except UnreachableError as exc:
        kept = f"{result.previous} is still current" if result.previous else "nothing changed"
        exc.message += f" (before the switch: {kept})"
        return _finish(result.fail("unreachable", exc), journal, transport)
    except EdgeDeployError as exc:
        if exc.exit_code == 2:  # doctor refused, bad input: nothing was touched
            return _finish(result.fail("refused", exc), journal, transport)
        if tmp is not None:
            board.discard(tmp)
        kept = (f"{result.previous} is still current and untouched" if result.previous
                else "the board had no release and still has none")
        err = DeployError(f"push of {bundle.id} to {transport.label} failed before the switch: "
                          f"{exc.message}; {kept}", hint=exc.hint)
        return _finish(result.fail("rolled-back", err), journal, transport)
    _switch_phase(board, bundle, state, opts, journal, result, python)
    return _finish(result, journal, transport)


def _switch_phase(board: Board, bundle: Bundle, state: BoardState, opts: ReleaseOptions,
                  journal: Journal, result: HostResult, python: str | None = None) -> None:
    """Stop, switch, start, prove healthy; ``python`` (a push's interpreter) is recorded with
    the switch, so a push that fails earlier leaves the board's interpreter as it was."""
    try:
        with journal.step("stop-previous", running=state.running):
            board.stop(state)
        with journal.step("switch", release=bundle.id, previous=state.current) as d:
            board.switch(bundle.id)
            result.current = bundle.id
            if python is not None:
                board.set_python(python)
                d["python"] = python
        with journal.step("start", release=bundle.id) as d:
            result.runner = d["mode"] = board.start(bundle.id, bundle.entry, state)
            note = linger_note(board, state)
            if note:
                d["linger"] = note
        with journal.step("health", release=bundle.id) as d:
            result.health = d["health"] = board.wait_healthy(
                bundle.id, bundle.health, timeout_s=opts.health_timeout_s,
                settle_s=opts.settle_s, poll_s=opts.poll_s,
                script_timeout_s=opts.health_script_timeout_s)
    except Exception as exc:  # anything after the switch: restore the previous release
        cause = exc if isinstance(exc, EdgeDeployError) else EdgeDeployError(repr(exc))
        _recover(board, state, bundle.id, cause, opts, journal, result,
                 restore_python=python is not None)
        return
    result.outcome = "dry-run" if board.t.dry_run else "deployed"
    result.message = f"{bundle.id} is running" + (" (dry run)" if board.t.dry_run else "")
    if note:
        result.message += f"; {note}"
    try:
        with journal.step("prune", keep=opts.keep) as d:
            d["removed"] = board.prune(opts.keep, {bundle.id, *filter(None, [state.current])})
    except EdgeDeployError:
        pass  # old releases left behind never make a deploy fail


def linger_note(board: Board, state: BoardState) -> str | None:
    """What to run when the runner is a systemd --user unit but the user's manager stops with
    the last login session (lingering off): the runner would die when SSH disconnects."""
    if not board.uses_systemd(state) or state.facts.get("linger") != "no":
        return None
    user = state.facts.get("user") or "USER"
    return (f"lingering is off for {user}: systemd stops the runner when {user}'s last session "
            f"ends and nothing starts it at boot; run `loginctl enable-linger {user}` on the "
            f"board and push again (the push then installs a unit enabled at boot)")


def _recover(board: Board, state: BoardState, failed: str, cause: EdgeDeployError,
             opts: ReleaseOptions, journal: Journal, result: HostResult, *,
             restore_python: bool = False) -> None:
    prev = state.current
    try:
        if isinstance(cause, UnreachableError):
            board.t.close()
            board.t.open()
        with journal.step("rollback", to=prev, failed=failed) as d:
            board.stop(state)
            if restore_python:  # the previous release restarts on its own interpreter
                board.set_python(state.facts.get("python"))
            if prev is None:
                board.unlink_current()
                d["health"] = None
            else:
                board.switch(prev)
                d["health"] = _restart(board, prev, state, opts)
        result.current = prev
        where = (f"rolled back to {prev}" + (" (running, healthy)" if state.alive else "")
                 if prev else "no previous release to restore: nothing is running")
        result.fail("rolled-back", DeployError(
            f"deploy of {failed} to {board.t.label} failed: {cause.message}; {where}",
            hint=cause.hint or "see `edgedeploy logs` and the journal"))
    except Exception as exc:
        result.fail("rollback-failed", RollbackFailedError(
            f"deploy of {failed} to {board.t.label} failed ({cause.message}) and restoring "
            f"{prev or 'the empty state'} failed too: {exc}",
            hint="the board may be on the new release; inspect it with `edgedeploy status`"))


def _restart(board: Board, release_id: str, state: BoardState, opts: ReleaseOptions) -> Any:
    """Start ``release_id`` again if a runner was running before, and prove it healthy."""
    if not state.alive:
        return None
    meta = board.read_meta(release_id)
    board.start(release_id, str(meta.get("entry", "run.sh")), state)
    return board.wait_healthy(release_id, str(meta.get("health", "health.sh")),
                              timeout_s=opts.health_timeout_s, settle_s=opts.settle_s,
                              poll_s=opts.poll_s, script_timeout_s=opts.health_script_timeout_s)


def rollback_release(transport: Transport, path: str, to: str | None = None,
                     opts: ReleaseOptions | None = None) -> HostResult:
    """Switch back to ``to`` (default: the most recently active other release) and restart."""
    opts = opts or ReleaseOptions()
    journal = Journal(transport.label, path, "rollback", local_dir=opts.journal_dir,
                      dry_run=transport.dry_run)
    result = HostResult(transport.label, "rollback", path, dry_run=transport.dry_run)
    try:
        board = _connect(transport, path, journal)
        result.path = board.root
        state = board.probe()
        result.previous = result.current = state.current
        others = [rid for _, rid in board.releases() if rid != state.current]
        target = to or (others[0] if others else None)
        if target is None or (to is not None and to not in others):
            raise DeployError(f"{transport.label}: no release to roll back to "
                              f"(current: {state.current}; others: {others or 'none'})")
        result.release = target
    except UnreachableError as exc:
        return _finish(result.fail("unreachable", exc), journal, transport)
    except EdgeDeployError as exc:
        return _finish(result.fail("failed", exc), journal, transport)
    fake = Bundle(root=Path("."), id=target, name=target, target="", plan_sha256="",
                  entry=str(board.read_meta(target).get("entry", "run.sh")),
                  health=str(board.read_meta(target).get("health", "health.sh")),
                  python="python3", requires=(), files=())
    forced = BoardState({**state.facts, "alive": "1"})  # a rollback always ends running
    _switch_phase(board, fake, forced, opts, journal, result)
    if result.ok:
        result.outcome = "dry-run" if transport.dry_run else "ok"
        result.message = f"rolled back from {state.current} to {target}"
    return _finish(result, journal, transport)


def stop_release(transport: Transport, path: str, opts: ReleaseOptions | None = None
                 ) -> HostResult:
    """Stop the runner (``current`` is kept, so ``push`` or a restart brings it back)."""
    opts = opts or ReleaseOptions()
    journal = Journal(transport.label, path, "stop", local_dir=opts.journal_dir,
                      dry_run=transport.dry_run)
    result = HostResult(transport.label, "stop", path, dry_run=transport.dry_run)
    try:
        board = _connect(transport, path, journal)
        result.path = board.root
        state = board.probe()
        result.current, result.release = state.current, state.running
        with journal.step("stop", running=state.running):
            board.stop(state)
        result.outcome = "dry-run" if transport.dry_run else "ok"
        result.message = f"stopped {state.running}" if state.running else "nothing was running"
    except UnreachableError as exc:
        return _finish(result.fail("unreachable", exc), journal, transport)
    except EdgeDeployError as exc:
        return _finish(result.fail("failed", exc), journal, transport)
    return _finish(result, journal, transport)


def host_status(transport: Transport, path: str) -> dict[str, Any]:
    """Current release, runner pid and liveness, uptime, restarts, last health, releases.

    ``state`` tells a live runner from a dead one (see :attr:`BoardState.runner_state`); a runner
    that is not running although one was started (``dead``, ``restarting``) has ``health.ok``
    false whatever its last check said, and ``exit_code`` 1 (an operational failure), which the
    CLI returns.
    """
    from edgedeploy.deploy.board import parse_health

    transport.open()
    board = Board(transport, transport.expand(path))
    state = board.probe()
    started, now = state.int_fact("started"), state.int_fact("now")
    health_raw = state.facts.get("health", "").split()
    health = None
    if len(health_raw) >= 2 and health_raw[0].lstrip("-").isdigit():
        health = {"ok": health_raw[0] == "0", "exit_code": int(health_raw[0]),
                  "checked_at": int(health_raw[1]) if health_raw[1].isdigit() else None,
                  "release": health_raw[2] if len(health_raw) > 2 else None,
                  "output": parse_health(state.facts.get("health_out", ""))}
    runner_state = state.runner_state
    failing = runner_state in ("dead", "restarting")
    if failing:
        health = {"ok": False, "exit_code": 90, "checked_at": now,
                  "release": state.facts.get("running"),
                  "output": f"runner (pid {state.int_fact('pid')}) is not running"
                            + (": its supervisor restarts it" if state.supervised else ""),
                  "last_check": health}
    return {"host": transport.label, "path": board.root, "current": state.current,
            "running": state.running, "pid": state.int_fact("pid"), "alive": state.alive,
            "state": runner_state, "restarts": state.int_fact("restarts"),
            "uptime_s": (now - started) if state.alive and started and now else None,
            "health": health, "systemd_user": state.systemd_user,
            "python": state.facts.get("python"),
            "runner": board.runner_status() if state.alive else None,
            "releases": [rid for _, rid in board.releases()], "checked_at": time.time(),
            "exit_code": 1 if failing else 0}
