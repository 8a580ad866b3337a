"""``edgedeploy validate MANIFEST``: check a manifest, its model and boards, without planning."""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy.cli import output
from edgedeploy.errors import InputError
from edgedeploy.schemas.loader import load_manifest
from edgedeploy.schemas.manifest import Manifest, TargetRef


def summary(manifest: Manifest) -> dict:
    """What ``validate --json`` prints for a valid manifest."""
    return {
        "ok": True,
        "file": str(manifest.source) if manifest.source else None,
        "name": manifest.name,
        "model": {"path": str(manifest.model.path), "format": manifest.model.format},
        "objective": manifest.objective,
        "targets": {alias: {"board": ref.board, "transport": ref.transport,
                            "hosts": ref.all_hosts}
                    for alias, ref in manifest.targets.items()},
    }


def _where(ref: TargetRef) -> str:
    if ref.all_hosts:
        return f"{ref.board} via {ref.transport} {','.join(ref.all_hosts)}"
    return ref.board if ref.transport == "local" else f"{ref.board}, {ref.transport}"


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate_cmd(
        manifest: Path = typer.Argument(..., help="Manifest YAML file."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    ) -> None:
        """Check a manifest: schema, model file, boards; errors name file:line:column (exit 2).

        Example: edgedeploy validate plans/demo.yaml
        """
        try:
            loaded = load_manifest(manifest)
        except InputError as exc:
            if not as_json:
                raise
            issues = getattr(exc, "issues", None) or [
                {"file": str(manifest), "line": None, "column": None, "field": "",
                 "message": exc.message, "hint": exc.hint}]
            output.emit_json({"ok": False, "file": str(manifest), "errors": issues})
            raise  # the CLI edge prints it on stderr and exits 2
        if as_json:
            output.emit_json(summary(loaded))
            return
        targets = ", ".join(f"{alias} ({_where(ref)})" for alias, ref in loaded.targets.items())
        print(f"OK {manifest}: {loaded.name}: model {loaded.model.path.name} "
              f"({loaded.model.format}), objective {loaded.objective}; targets: {targets}")
