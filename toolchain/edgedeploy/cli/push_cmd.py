"""`edgedeploy push`: plan if stale, build, deploy with health check and automatic rollback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgedeploy.cli import complete, output
from edgedeploy.cli.deploy_cmd import MANIFEST_ARG

if TYPE_CHECKING:
    from edgedeploy.api import PushOutcome


def register(app: typer.Typer) -> None:
    @app.command()
    def push(
        manifest_arg: Path | None = MANIFEST_ARG,
        manifest: Path = typer.Option(None, "--manifest", "-m",
                                      help="Manifest (default: ./edgedeploy.yaml)."),
        target: str = typer.Option("local", "--target", "-t", autocompletion=complete.targets,
                                   help="Target alias."),
        no_refine: bool = typer.Option(False, "--no-refine",
                                       help="Skip the online refinement after the deploy."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change."),
        accept_new: bool = typer.Option(False, "--accept-new-host-keys",
                                        help="Trust and record unknown SSH host keys."),
        serial: int = typer.Option(None, "--serial", min=1, help="Hosts per batch (fleets)."),
        max_fail: float = typer.Option(100.0, "--max-fail", min=0, max=100,
                                       help="Stop after more than P % of a batch failed."),
        locked: bool = typer.Option(False, "--locked",
                                    help="Refuse a stale lockfile (exit 7) instead of "
                                         "re-planning it (for CI)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    ) -> None:
        """Deploy a manifest's target: plan if stale, build, upload, switch, health-check.

        The bundle is uploaded into releases/<id> and verified; `current` is switched
        atomically, the runner started and its health checked. Any failure rolls back to the
        previous release (exit 4 unreachable, 5 rolled back, 6 rollback failed). Then the
        plan is refined on the device within the manifest's refine budget, and a refined plan
        that measures faster is deployed as a new release (--no-refine skips this).

        Example: edgedeploy push edgedeploy.yaml --target jetson
        """
        from edgedeploy import api
        from edgedeploy.cli.deploy_cmd import DEFAULT_MANIFEST, manifest_of, render_result
        from edgedeploy.errors import EdgeDeployError, InputError

        path = manifest_of(manifest_arg, manifest) or DEFAULT_MANIFEST
        if not path.is_file():
            raise InputError(f"no manifest at {path}",
                             hint="name it (`edgedeploy push MANIFEST`) or create one with "
                                  "`edgedeploy init`")
        progress = None if as_json else output.info
        try:
            outcome = api.push(path, target, dry_run=dry_run, accept_new_host_keys=accept_new,
                               serial=serial, max_fail_percent=max_fail,
                               refine=not no_refine, locked=locked,
                               progress=progress)
        except api.RefineAfterPushError as exc:  # deployed: show it, then the refine error
            render_outcome(exc.outcome, as_json)
            raise
        except EdgeDeployError as exc:
            result = api.deploy_result(exc)  # only a deployer's per-host result is a table
            if result is not None:
                render_result(result, as_json)
            raise
        render_outcome(outcome, as_json)


def render_outcome(outcome: PushOutcome, as_json: bool) -> None:
    """The push answer: the deploy table, refinement's push when it changed the release, and
    which release runs at the end (as ``running`` in JSON)."""
    from edgedeploy.cli.deploy_cmd import render_result

    if as_json:
        output.emit_json(outcome.to_dict())
        return
    render_result(outcome.deploy, False)
    final = outcome.refine_deploy  # shown when it changed the release, or failed
    if final is not None and (not final.ok or outcome.running != outcome.bundle.id):
        render_result(final, False, title=f"refine {final.target}: release started after "
                                          "refinement")
    if outcome.running is not None:
        gain = (outcome.refine or {}).get("improvement")
        how = (f" (refined: {gain:.2f}x measured)" if outcome.running != outcome.bundle.id
               and isinstance(gain, (int, float)) else "")
        output.info(f"running: {outcome.running}{how}")
        if (line := output.baselines_line(outcome.refine or {})) is not None:
            output.info(line)
