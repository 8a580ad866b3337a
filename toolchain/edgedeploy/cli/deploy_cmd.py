"""Deployer commands: status, logs, stop, rollback, releases, doctor; each parses, calls the
verb of the same name in :mod:`edgedeploy.api` and renders (push renders with
:func:`render_result`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from edgedeploy import api
from edgedeploy.cli import complete, output
from edgedeploy.errors import EdgeDeployError, InputError

if TYPE_CHECKING:
    from edgedeploy.deploy.doctor import DoctorReport
    from edgedeploy.deploy.fleet import DeployResult
    from edgedeploy.schemas.manifest import TargetRef

DEFAULT_MANIFEST = api.DEFAULT_MANIFEST

MANIFEST_OPT = typer.Option(None, "--manifest", "-m", help="Manifest (default: ./edgedeploy.yaml;"
                            " without one, target 'local' is this host's ~/edgedeploy).")
#: The manifest named as `plan` and `bench` take it, first on the line (or with -m).
MANIFEST_ARG = typer.Argument(None, metavar="[MANIFEST]", show_default=False,
                              help="The manifest, as `plan` takes it (or -m).")
TARGET_OPT = typer.Option("local", "--target", "-t", autocompletion=complete.targets,
                          help="Target alias from the manifest.")
JSON_OPT = typer.Option(False, "--json", help="One JSON object on stdout.")
ACCEPT_OPT = typer.Option(False, "--accept-new-host-keys",
                          help="Trust and record unknown SSH host keys (never changed ones).")


def manifest_of(named: Path | None, option: Path | None) -> Path | None:
    """The manifest given first on the line or with -m: a user who plans with `plan M.yaml`
    pushes with `push M.yaml`. Both given, they must agree."""
    if named is not None and option is not None and named != option:
        raise InputError(f"two manifests given: {named} and -m {option}",
                         hint="name the manifest once, first on the line or with -m")
    return named if named is not None else option


def resolve_cli_target(manifest: Path | None, alias: str) -> TargetRef:
    """The TargetRef for ``--target ALIAS`` (kept for callers of this name; the logic is
    :func:`edgedeploy.api.resolve_target`)."""
    return api.resolve_target(manifest, alias)


def render_result(result: DeployResult, as_json: bool, title: str | None = None) -> None:
    """Per-host outcome table (or JSON) for push, stop and rollback."""
    if as_json:
        output.emit_json(result.to_dict())
        return
    cols, rows = result.table()
    output.table(title or f"{result.op} {result.target}", cols, rows)
    for host in result.hosts:
        if host.dry_run:
            output.info(f"[{host.host}] DRY RUN - nothing was changed; would run:")
            for command in host.commands:
                output.info(f"  {command}")


def _finish(result: DeployResult, as_json: bool) -> None:
    render_result(result, as_json)
    if not result.ok:
        result.raise_for_status()


def register(app: typer.Typer) -> None:
    app.command("status")(status_cmd)
    app.command("logs")(logs_cmd)
    app.command("stop")(stop_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("releases")(releases_cmd)
    app.command("journal")(journal_cmd)
    app.command("doctor")(doctor_cmd)


def status_cmd(manifest_arg: Path | None = MANIFEST_ARG,
               manifest: Path | None = MANIFEST_OPT, target: str = TARGET_OPT,
               as_json: bool = JSON_OPT, accept_new: bool = ACCEPT_OPT) -> None:
    """Show each host's current release, runner pid, uptime and last health check.

    Example: edgedeploy status -m edgedeploy.yaml --target jetson --json
    """
    manifest = manifest_of(manifest_arg, manifest)
    rows = api.status(manifest, target, accept_new_host_keys=accept_new)
    if as_json:
        output.emit_json({"target": target, "exit_code": rows.exit_code, "hosts": rows})
        rows.raise_for_status()
        return
    output.table(f"status {target}", ["host", "current", "running", "pid", "uptime_s", "health",
                                      "plan", "fps", "latency p50 ms", "power W", "mJ/frame"],
                 [[r["host"], r.get("current") or "-", r.get("running") or "-",
                   r.get("pid") or "-", r.get("uptime_s") if r.get("uptime_s") is not None
                   else "-", _health(r), *_runner(r)] for r in rows])
    from rich.markup import escape

    served = [r for r in rows if (r.get("runner") or {}).get("io")]
    if served:  # what the runner serves: where it listens and whom
        output.table(f"io {target}", ["host", "source", "listen", "clients", "served",
                                      "rejected", "refused"],
                     [[r["host"], *_io(r["runner"]["io"])] for r in served])
    for r in rows:
        note = (r.get("runner") or {}).get("power_note")
        if note:  # why power is null (or partial): said once per host, under the table
            output.info(escape(f"[{r['host']}] power: {note}"))
        columns, switches = api.status_timeline(r["runner"]) if r.get("runner") else ([], [])
        if switches:
            output.table(f"{r['host']}: plan switches (runtime manager)", columns, switches)
    rows.raise_for_status()  # every host is shown first; the worst one sets the exit code


def _io(io: dict[str, Any]) -> list[Any]:
    """The runner's io block: its source, listen addresses and client counters (``-``: none)."""
    listen = io.get("listen")
    return [io.get("source", "-"), ", ".join(listen) if listen else "-",
            *(io.get(k, "-") for k in ("clients", "served", "rejected", "refused"))]


def _runner(row: dict[str, Any]) -> list[Any]:
    """Active plan, measured throughput/latency and board power (W, mJ per frame; ``-`` where
    unknown) from the runner's own status file."""
    runner = row.get("runner") or {}
    return [runner.get("active", "-"), runner.get("throughput_fps", "-"),
            runner.get("latency_ms_p50", "-"), _num(runner.get("power_w"), 2),
            _num(runner.get("energy_mj"), 1)]


def _num(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def _health(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"error: {row['error'].splitlines()[0]}"
    health = row.get("health")
    return "-" if not health else ("ok" if health["ok"] else f"failing ({health['exit_code']})")


def logs_cmd(manifest_arg: Path | None = MANIFEST_ARG,
             manifest: Path | None = MANIFEST_OPT, target: str = TARGET_OPT,
             lines: int = typer.Option(100, "--lines", "-n", min=1, help="Lines per host."),
             as_json: bool = JSON_OPT, accept_new: bool = ACCEPT_OPT) -> None:
    """Print the newest lines of the runner log on each host.

    Example: edgedeploy logs --target jetson -n 50
    """
    manifest = manifest_of(manifest_arg, manifest)
    rows = api.logs(manifest, target, lines=lines, accept_new_host_keys=accept_new)
    if as_json:
        output.emit_json({"target": target, "exit_code": rows.exit_code, "hosts": rows})
    else:
        for row in rows:
            if len(rows) > 1:
                print(f"==> {row['host']} <==")
            print(row.get("log", f"error: {row.get('error')}\n"), end="")
    rows.raise_for_status()


def journal_cmd(manifest_arg: Path | None = MANIFEST_ARG,
                manifest: Path | None = MANIFEST_OPT, target: str = TARGET_OPT,
                entries: int = typer.Option(20, "--lines", "-n", min=1,
                                            help="Newest entries per host."),
                local: bool = typer.Option(False, "--local",
                                           help="Read this machine's copy (no connection)."),
                as_json: bool = JSON_OPT, accept_new: bool = ACCEPT_OPT) -> None:
    """Show each host's deploy journal: push, rollback and stop steps with their outcomes.

    Read on the board (what every machine that deployed there wrote), or this machine's copy
    with --local (no connection needed).

    Example: edgedeploy journal --target jetson -n 50
    """
    manifest = manifest_of(manifest_arg, manifest)
    rows = api.journal(manifest, target, entries=entries, local=local,
                       accept_new_host_keys=accept_new)
    if as_json:
        output.emit_json({"target": target, "exit_code": rows.exit_code, "hosts": rows})
    else:
        table = [[row["host"], e.get("ts", ""), e.get("op", ""), e.get("step", ""),
                  e.get("outcome", ""), e.get("duration_s", ""),
                  (e.get("error") or (e.get("detail") or {}).get("error") or "")]
                 for row in rows for e in row.get("entries", [])]
        output.table(f"journal {target}", ["host", "time", "op", "step", "outcome", "s",
                                           "error"], table)
        for row in rows:
            if "error" in row:
                output.error(f"{row['host']}: {row['error']}")
    rows.raise_for_status()


def stop_cmd(manifest_arg: Path | None = MANIFEST_ARG,
             manifest: Path | None = MANIFEST_OPT, target: str = TARGET_OPT,
             dry_run: bool = typer.Option(False, "--dry-run", help="Show what would run."),
             as_json: bool = JSON_OPT, accept_new: bool = ACCEPT_OPT) -> None:
    """Stop the runner on each host (the release stays current).

    Example: edgedeploy stop --target jetson
    """
    manifest = manifest_of(manifest_arg, manifest)
    _finish(api.stop(manifest, target, dry_run=dry_run, accept_new_host_keys=accept_new,
                     check=False), as_json)


def rollback_cmd(manifest_arg: Path | None = MANIFEST_ARG,
                 manifest: Path | None = MANIFEST_OPT, target: str = TARGET_OPT,
                 to: str | None = typer.Option(None, "--to", help="Release id (default: the "
                                               "previously active one)."),
                 dry_run: bool = typer.Option(False, "--dry-run", help="Show what would run."),
                 as_json: bool = JSON_OPT, accept_new: bool = ACCEPT_OPT) -> None:
    """Switch each host back to its previous release, restart it and check its health.

    Example: edgedeploy rollback --target jetson
    """
    manifest = manifest_of(manifest_arg, manifest)
    _finish(api.rollback(manifest, target, to=to, dry_run=dry_run,
                         accept_new_host_keys=accept_new, check=False), as_json)


def releases_cmd(manifest_arg: Path | None = MANIFEST_ARG,
                 manifest: Path | None = MANIFEST_OPT, target: str = TARGET_OPT,
                 as_json: bool = JSON_OPT, accept_new: bool = ACCEPT_OPT) -> None:
    """List the releases kept on each host, newest first, marking the current one.

    Example: edgedeploy releases --target jetson --json
    """
    manifest = manifest_of(manifest_arg, manifest)
    rows = api.releases(manifest, target, accept_new_host_keys=accept_new)
    if as_json:
        output.emit_json({"target": target, "exit_code": rows.exit_code, "hosts": rows})
    else:
        output.table(f"releases {target}", ["host", "release", "current"],
                     [[r["host"], rid, "*" if rid == r.get("current") else ""]
                      for r in rows for rid in r.get("releases", [])]
                     + [[r["host"], f"error: {r['error'].splitlines()[0]}", ""]
                        for r in rows if "error" in r])
    rows.raise_for_status()


def doctor_cmd(manifest_arg: Path | None = MANIFEST_ARG,
               manifest: Path | None = MANIFEST_OPT, target: str = TARGET_OPT,
               python: str = typer.Option(None, "--python",
                                          help="Python on the board (default: the target's, "
                                               "as push uses it)."),
               require: list[str] = typer.Option(
                   None, "--require", help="What the bundle needs: a distribution name, or "
                   "provider:<Name> for an onnxruntime execution provider (default: what the "
                   "target's lockfile needs, else numpy)."),
               as_json: bool = JSON_OPT, accept_new: bool = ACCEPT_OPT) -> None:
    """Show what each host has (architecture, Python, numpy, onnxruntime and its execution
    providers, LiteRT) and lacks.

    Example: edgedeploy doctor --target jetson --require provider:CUDAExecutionProvider
    """
    manifest = manifest_of(manifest_arg, manifest)
    reports = api.doctor(manifest, target, python=python,
                         requires=tuple(require) if require else None,
                         accept_new_host_keys=accept_new)
    if as_json:
        output.emit_json({"target": target, "ok": all(r.ok for r in reports),
                          "hosts": [r.to_dict() for r in reports]})
    else:
        output.table(f"doctor {target}",
                     ["host", "arch", "python", "numpy", "onnxruntime", "providers", "litert",
                      "missing"],
                     [[r.host, r.arch or "-", r.python or "-", r.numpy or "-",
                       r.onnxruntime or "-", _providers(r), r.litert or "-",
                       "; ".join(r.missing) or "nothing"] for r in reports])
    reports.raise_for_status()  # an unreachable host (exit 4) outranks a missing package
    if not all(r.ok for r in reports):
        raise EdgeDeployError("some hosts lack what a bundle needs (see `missing`)")


def _providers(report: DoctorReport) -> str:
    """The providers cell: what onnxruntime offers, or why it could not say."""
    if report.providers is not None:
        return ", ".join(report.providers) or "none"
    return f"- ({report.providers_error})" if report.providers_error else "-"
