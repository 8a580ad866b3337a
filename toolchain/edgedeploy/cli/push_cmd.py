"""`edgedeploy push`: plan if stale, build, deploy with health check and automatic rollback."""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy.cli import output


def register(app: typer.Typer) -> None:
    @app.command()
    def push(
        manifest: Path = typer.Option(None, "--manifest", "-m",
                                      help="Manifest (default: ./edgedeploy.yaml)."),
        target: str = typer.Option("local", "--target", "-t", help="Target alias."),
        no_refine: bool = typer.Option(False, "--no-refine",
                                       help="Skip the online refinement after the deploy."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change."),
        accept_new: bool = typer.Option(False, "--accept-new-host-keys",
                                        help="Trust and record unknown SSH host keys."),
        serial: int = typer.Option(None, "--serial", min=1, help="Hosts per batch (fleets)."),
        max_fail: float = typer.Option(100.0, "--max-fail", min=0, max=100,
                                       help="Stop after more than P % of a batch failed."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    ) -> None:
        """Deploy a manifest's target: plan if stale, build, upload, switch, health-check.

        The bundle is uploaded into releases/<id> and verified; `current` is switched
        atomically, the runner started and its health checked. Any failure rolls back to the
        previous release (exit 4 unreachable, 5 rolled back, 6 rollback failed). Then the
        plan is refined on the device within the manifest's refine budget, and a refined plan
        that measures faster is deployed as a new release (--no-refine skips this).

        Example: edgedeploy push -m edgedeploy.yaml --target jetson
        """
        from edgedeploy import api
        from edgedeploy.cli.deploy_cmd import DEFAULT_MANIFEST, render_result
        from edgedeploy.errors import EdgeDeployError, InputError

        path = manifest or DEFAULT_MANIFEST
        if not path.is_file():
            raise InputError(f"no manifest at {path}",
                             hint="pass -m MANIFEST or create one with `edgedeploy init`")
        progress = None if as_json else output.info
        try:
            outcome = api.push(path, target, dry_run=dry_run, accept_new_host_keys=accept_new,
                               serial=serial, max_fail_percent=max_fail,
                               refine=not no_refine, progress=progress)
        except EdgeDeployError as exc:
            if getattr(exc, "result", None) is not None:
                render_result(exc.result, as_json)
            raise
        if as_json:
            output.emit_json(outcome.to_dict())
        else:
            render_result(outcome.deploy, False)
