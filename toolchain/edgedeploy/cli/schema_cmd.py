"""``edgedeploy schema manifest|target|plan``: JSON Schema for editors and tools."""

from __future__ import annotations

import json
from enum import Enum

import typer

from edgedeploy import api


class SchemaName(str, Enum):
    manifest = "manifest"
    target = "target"
    plan = "plan"


def register(app: typer.Typer) -> None:
    @app.command("schema")
    def schema_cmd(
        which: SchemaName = typer.Argument(..., help="manifest, target or plan."),
    ) -> None:
        """Print the JSON Schema (draft-7) of a manifest, a board descriptor or a plan lockfile.

        Example: edgedeploy schema manifest > manifest.schema.json
        """
        print(json.dumps(api.json_schema(which.value), indent=2))
