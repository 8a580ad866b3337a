"""Library verbs of the deployer; the CLI's push/status/logs/stop/rollback/releases/doctor call
exactly these (parse, call, render).

A target is a manifest :class:`TargetRef` (one host, a fleet, or local) or a host spec string:
``local``, ``local:/some/dir``, or ``[user@]host[:port]``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from edgedeploy.deploy.board import Board
from edgedeploy.deploy.bundle import load_bundle
from edgedeploy.deploy.doctor import DoctorReport
from edgedeploy.deploy.doctor import doctor as _doctor
from edgedeploy.deploy.fleet import MAX_PARALLEL, DeployResult, HostAnswers, run_fleet
from edgedeploy.deploy.journal import Journal, local_journal_path, read_journal
from edgedeploy.deploy.local import LocalTransport
from edgedeploy.deploy.release import (
    HostResult,
    ReleaseOptions,
    host_status,
    push_release,
    rollback_release,
    stop_release,
)
from edgedeploy.deploy.transport import Transport, TransportOptions
from edgedeploy.errors import EdgeDeployError, InputError
from edgedeploy.schemas.manifest import TargetRef

T = TypeVar("T")
LOCAL = "local"


def resolve_target(target: TargetRef | str, *, path: str | None = None) -> TargetRef:
    """A TargetRef from a manifest entry or a host spec; ``path`` overrides the install path."""
    if isinstance(target, TargetRef):
        return target.model_copy(update={"path": path}) if path else target
    data: dict[str, Any] = {}
    if target == LOCAL or target.startswith(LOCAL + ":"):
        data["transport"] = "local"
        if target.startswith(LOCAL + ":"):
            data["path"] = target[len(LOCAL) + 1:]
    else:
        user, _, hostport = target.rpartition("@")
        host, _, port = hostport.partition(":")
        data.update(host=host, user=user or None)
        if port:
            if not port.isdigit():
                raise InputError(f"bad host spec {target!r}: the port must be a number")
            data["port"] = int(port)
    if path:
        data["path"] = path
    try:
        return TargetRef.model_validate(data)
    except ValueError as exc:
        raise InputError(f"bad host spec {target!r}: {exc}") from None


def hosts_of(ref: TargetRef) -> list[str]:
    return ref.all_hosts or [LOCAL]


def canary_of(ref: TargetRef) -> str:
    """The host a target is measured on: a fleet's canary, else its first host."""
    return ref.canary_host or hosts_of(ref)[0]


def open_transport(ref: TargetRef, host: str, *, dry_run: bool = False,
                   access: TransportOptions | None = None) -> Transport:
    """The transport for one host of a target (not yet connected)."""
    if ref.transport == "local":
        return LocalTransport(dry_run=dry_run)
    if ref.transport != "ssh":
        raise InputError(f"transport {ref.transport!r} cannot be deployed to by this deployer")
    from edgedeploy.deploy.ssh import SshTransport

    access = access or TransportOptions()
    if ref.host_key_policy == "accept-new" and not access.accept_new_host_keys:
        access = TransportOptions(**{**access.__dict__, "accept_new_host_keys": True})
    return SshTransport(host, user=ref.user, port=ref.port, identity_file=ref.identity_file,
                        options=access, dry_run=dry_run)


def _access(accept_new_host_keys: bool, access: TransportOptions | None) -> TransportOptions:
    access = access or TransportOptions()
    if accept_new_host_keys:
        access = TransportOptions(**{**access.__dict__, "accept_new_host_keys": True})
    return access


def push_bundle(bundle_dir: str | Path, target: TargetRef | str, *, alias: str = "target",
                path: str | None = None, dry_run: bool = False,
                accept_new_host_keys: bool = False, access: TransportOptions | None = None,
                options: ReleaseOptions | None = None, serial: int | None = None,
                max_fail_percent: float = 100.0, check: bool = True) -> DeployResult:
    """Push a built bundle to every host of ``target``; with ``check`` raise the mapped error
    (it carries ``.result``) when a host failed: exit 4 unreachable, 5 rolled back, 6 broken."""
    bundle = load_bundle(bundle_dir)
    ref = resolve_target(target, path=path)
    access = _access(accept_new_host_keys, access)
    options = options or ReleaseOptions()
    if options.python is None:  # the target's one interpreter, for doctor, serve and health
        options = replace(options, python=board_python(ref))

    def one(host: str) -> HostResult:
        transport = open_transport(ref, host, dry_run=dry_run, access=access)
        try:
            return push_release(transport, ref.path, bundle, options)
        finally:
            transport.close()

    result = run_fleet(alias, "push", hosts_of(ref), one, serial=serial,
                       max_fail_percent=max_fail_percent)
    if check:
        result.raise_for_status()
    return result


def _per_host(target: TargetRef | str, op: str, fn: Callable[[Transport, str], HostResult], *,
              alias: str, dry_run: bool, access: TransportOptions | None,
              check: bool) -> DeployResult:
    ref = resolve_target(target)

    def one(host: str) -> HostResult:
        transport = open_transport(ref, host, dry_run=dry_run, access=access)
        try:
            return fn(transport, ref.path)
        finally:
            transport.close()

    result = run_fleet(alias, op, hosts_of(ref), one)
    if check:
        result.raise_for_status()
    return result


def rollback(target: TargetRef | str, *, to: str | None = None, alias: str = "target",
             dry_run: bool = False, access: TransportOptions | None = None,
             options: ReleaseOptions | None = None, check: bool = True) -> DeployResult:
    """Return every host to its previous release (or ``to``), restarted and health-checked.

    ``to`` is checked on every host before any host changes: an id a board does not hold (or
    its current release) is a usage error (exit 2) naming the releases the board has, journalled
    there -- a typo must not read as a failed deploy, nor roll part of a fleet back.
    """
    if to is not None:
        refused = _refuse_unknown_release(target, to, alias=alias, dry_run=dry_run,
                                          access=access, options=options)
        if refused is not None:
            if check:
                refused.raise_for_status()
            return refused
    return _per_host(target, "rollback",
                     lambda t, p: rollback_release(t, p, to, options), alias=alias,
                     dry_run=dry_run, access=access, check=check)


def _refuse_unknown_release(target: TargetRef | str, to: str, *, alias: str, dry_run: bool,
                            access: TransportOptions | None,
                            options: ReleaseOptions | None) -> DeployResult | None:
    """The refusal of ``rollback --to`` when some host cannot switch to ``to``; None when
    every host that answered holds it (an unreachable host is left to the rollback to report)."""
    opts = options or ReleaseOptions()
    result = _per_host(target, "rollback", lambda t, p: _check_release(t, p, to, opts),
                       alias=alias, dry_run=dry_run, access=access, check=False)
    if result.ok:
        return None
    for host in result.hosts:
        if host.ok:
            host.outcome = "skipped"
            host.message = f"not attempted: release {to!r} is unknown on another host"
    return result


def _check_release(transport: Transport, path: str, to: str,
                   opts: ReleaseOptions) -> HostResult:
    """A pending HostResult when the board can switch to release ``to``, else a refused one
    (InputError, exit 2) listing what the board has; the refusal is journalled."""
    result = HostResult(transport.label, "rollback", path, release=to,
                        dry_run=transport.dry_run)
    try:
        transport.open()
        board = Board(transport, transport.expand(path))
        current = board.probe().current
        have = [rid for _, rid in board.releases()]
    except EdgeDeployError:
        return result  # unreachable or unreadable: the rollback itself reports this host
    if to in have and to != current:
        return result
    listed = ", ".join(f"{rid} (current)" if rid == current else rid for rid in have) or "none"
    why = (f"{transport.label}: release {to!r} is already the current one" if to == current
           else f"{transport.label}: no release {to!r} on this board")
    error = InputError(f"{why}; releases there: {listed}",
                       hint="pass one of the others to --to, or omit --to to return to the "
                            "previous release")
    journal = Journal(transport.label, board.root, "rollback", local_dir=opts.journal_dir,
                      dry_run=transport.dry_run)
    journal.refused(transport, "check-release", error.message, to=to, current=current,
                    releases=have)
    result.path, result.current, result.previous = board.root, current, current
    result.steps = journal.entries
    return result.fail("refused", error)


def stop(target: TargetRef | str, *, alias: str = "target", dry_run: bool = False,
         access: TransportOptions | None = None, options: ReleaseOptions | None = None,
         check: bool = True) -> DeployResult:
    """Stop the runner on every host (the release stays current)."""
    return _per_host(target, "stop", lambda t, p: stop_release(t, p, options), alias=alias,
                     dry_run=dry_run, access=access, check=check)


def _query(target: TargetRef | str, fn: Callable[[Transport, str], T],
           access: TransportOptions | None) -> list[tuple[str, T | EdgeDeployError]]:
    """Run a read-only ``fn`` on every host in parallel; errors are returned, not raised."""
    ref = resolve_target(target)

    def one(host: str) -> tuple[str, T | EdgeDeployError]:
        transport = open_transport(ref, host, access=access)
        try:
            return transport.label, fn(transport, ref.path)
        except EdgeDeployError as exc:
            return transport.label, exc
        finally:
            transport.close()

    hosts = hosts_of(ref)
    with ThreadPoolExecutor(max_workers=min(len(hosts), MAX_PARALLEL)) as pool:
        return list(pool.map(one, hosts))


def _rows(pairs: list[tuple[str, Any]], key: str, *, alias: str, op: str,
          single_raises: bool = True) -> HostAnswers[dict]:
    """The answers as rows; a host that could not answer gets ``error`` and ``exit_code`` in
    its row and counts in the result's exit code (one host alone raises its error)."""
    if single_raises and len(pairs) == 1 and isinstance(pairs[0][1], EdgeDeployError):
        raise pairs[0][1]
    rows = []
    failures: list[tuple[str, EdgeDeployError]] = []
    for host, value in pairs:
        if isinstance(value, EdgeDeployError):
            rows.append({"host": host, "error": str(value), "exit_code": value.exit_code})
            failures.append((host, value))
        elif isinstance(value, dict):
            rows.append(value)
        else:
            rows.append({"host": host, key: value})
    return HostAnswers(alias, op, rows, failures)


def status(target: TargetRef | str, *, alias: str = "target",
           access: TransportOptions | None = None) -> HostAnswers[dict]:
    """Per host: current release, pid and liveness, uptime, last health, releases. A runner
    that is dead or keeps restarting counts as a failure of its host (exit code 1)."""
    answers = _rows(_query(target, host_status, access), "status", alias=alias, op="status")
    for row in answers:
        if row.get("exit_code") and "error" not in row:
            why = (row.get("health") or {}).get("output") or f"runner {row.get('state', 'dead')}"
            answers.failures.append((str(row.get("host")), EdgeDeployError(
                f"{row.get('host')}: the runner is {row.get('state', 'not running')}: {why}",
                hint="see `edgedeploy logs`; push again or roll back")))
    return answers


def logs(target: TargetRef | str, *, lines: int = 100, alias: str = "target",
         access: TransportOptions | None = None) -> HostAnswers[dict]:
    """Per host: the newest ``lines`` of the runner log."""
    def fn(t: Transport, p: str) -> str:
        t.open()
        return Board(t, t.expand(p)).logs(lines)
    return _rows(_query(target, fn, access), "log", alias=alias, op="logs")


def journal(target: TargetRef | str, *, entries: int = 50, local: bool = False,
            alias: str = "target", access: TransportOptions | None = None) -> HostAnswers[dict]:
    """Per host: the newest ``entries`` of the deploy journal, read on the board (the history
    every machine that deployed there wrote), or ``local``: this machine's own copy, which
    needs no connection (a board that is down still has its story told)."""
    def fn(t: Transport, p: str) -> dict:
        if local:
            path = local_journal_path(t.label)
            return {"host": t.label, "source": str(path),
                    "entries": read_journal(path)[-entries:] if entries else []}
        t.open()
        board = Board(t, t.expand(p))
        return {"host": t.label, "source": f"{board.root}/journal.jsonl",
                "entries": board.journal(entries)}
    return _rows(_query(target, fn, access), "journal", alias=alias, op="journal")


def releases(target: TargetRef | str, *, alias: str = "target",
             access: TransportOptions | None = None) -> HostAnswers[dict]:
    """Per host: release ids newest first, and which one is current."""
    def fn(t: Transport, p: str) -> dict:
        t.open()
        board = Board(t, t.expand(p))
        return {"host": t.label, "path": board.root, "current": board.probe().current,
                "releases": [rid for _, rid in board.releases()]}
    return _rows(_query(target, fn, access), "releases", alias=alias, op="releases")


def doctor(target: TargetRef | str, *, python: str | None = None,
           requires: tuple[str, ...] = ("numpy",), alias: str = "target",
           access: TransportOptions | None = None,
           requires_from: str | None = None) -> HostAnswers[DoctorReport]:
    """Per host: what the board has and lacks (see :func:`edgedeploy.deploy.doctor.doctor`),
    always with the execution providers its onnxruntime offers: whether a GPU plan can run there
    is the question people ask doctor before a push. ``requires`` may hold ``provider:<Name>``.
    A host that cannot be reached is listed as lacking everything and counts in the exit code.
    ``python``: the board's interpreter to check (default: the target's, as push uses it)."""
    python = python or board_python(resolve_target(target))

    def fn(t: Transport, _p: str) -> DoctorReport:
        t.open()
        return _doctor(t, python, requires, list_providers=True, requires_from=requires_from)
    pairs = _query(target, fn, access)
    out: list[DoctorReport] = []
    failures: list[tuple[str, EdgeDeployError]] = []
    for host, value in pairs:
        if isinstance(value, EdgeDeployError):
            if len(pairs) == 1:
                raise value
            failures.append((host, value))
            value = DoctorReport(host=host, python_cmd=python, requires_from=requires_from,
                                 missing=[f"unreachable: {value}"])
        out.append(value)
    return HostAnswers(alias, "doctor", out, failures)


def board_python(ref: TargetRef, target: Any = None) -> str:
    """The Python on ``ref``'s board that runs everything there: the runner, its health check,
    ``main.py measure`` (refine, profile) and doctor - so none of them can disagree. It is
    ``targets.<alias>.python``, else for a target on this machine this interpreter, else the board
    descriptor's ``ssh.python`` (``target``: the loaded descriptor, when the caller has it), else
    ``python3``. Push records it in the install's ``run/python`` (run.sh, health.sh read it)."""
    from edgedeploy.deploy.board import choose_python

    remote = ref.transport != LOCAL
    if target is None and remote and not ref.python and ref.board != LOCAL:
        from edgedeploy.boards.catalog import load_target

        target = load_target(ref.board)
    descriptor = target.ssh.python if target is not None else None
    return choose_python(ref.python, descriptor, remote=remote)
