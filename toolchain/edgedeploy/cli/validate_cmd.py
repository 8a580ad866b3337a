"""``edgedeploy validate FILE``: check a manifest (or a plan lockfile) without planning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgedeploy import api
from edgedeploy.cli import output
from edgedeploy.errors import InputError


def _where(ref: dict[str, Any]) -> str:
    if ref["hosts"]:
        return f"{ref['board']} via {ref['transport']} {','.join(ref['hosts'])}"
    return ref["board"] if ref["transport"] == "local" else f"{ref['board']}, {ref['transport']}"


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate_cmd(
        manifest: Path = typer.Argument(..., help="Manifest YAML file (or a .plan.json)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    ) -> None:
        """Check a manifest: schema, model file, boards; errors name file:line:column (exit 2).
        A plan lockfile is recognised and checked as one (schema, engines, model).

        Example: edgedeploy validate plans/demo.yaml
        """
        try:
            result = api.validate(manifest)
        except InputError as exc:
            if not as_json:
                raise
            issues = getattr(exc, "issues", None) or [
                {"file": str(manifest), "line": None, "column": None, "field": "",
                 "message": exc.message, "hint": exc.hint}]
            output.emit_json({"ok": False, "file": str(manifest), "errors": issues,
                              "error": output.error_object(exc.exit_code, exc.message, exc.hint,
                                                           type(exc).__name__)})
            raise  # the CLI edge prints it on stderr and exits 2
        if as_json:
            output.emit_json(result)
            return
        if result["kind"] == "plan":
            t = result["target"]
            print(f"OK {manifest}: plan lockfile of {result['name']} for {t.get('alias')} "
                  f"({t.get('board')}): {result['stages']} stage(s), engines "
                  f"{', '.join(result['engines'])}")
            for w in result["warnings"]:
                output.info(f"note: {w}")
            return
        targets = ", ".join(f"{alias} ({_where(ref)})" for alias, ref in result["targets"].items())
        print(f"OK {manifest}: {result['name']}: model {Path(result['model']['path']).name} "
              f"({result['model']['format']}), objective {result['objective']}; "
              f"targets: {targets}")
