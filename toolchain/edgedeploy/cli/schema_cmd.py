"""``edgedeploy schema manifest|target``: JSON Schema for editors' YAML completion."""

from __future__ import annotations

import json
from enum import Enum

import typer

from edgedeploy.schemas import json_schema


class SchemaName(str, Enum):
    manifest = "manifest"
    target = "target"


def register(app: typer.Typer) -> None:
    @app.command("schema")
    def schema_cmd(
        which: SchemaName = typer.Argument(..., help="manifest or target."),
    ) -> None:
        """Print the JSON Schema (draft-7) of a manifest or a board descriptor on stdout.

        Example: edgedeploy schema manifest > manifest.schema.json
        """
        print(json.dumps(json_schema(which.value), indent=2))
