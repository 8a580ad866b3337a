"""`edgedeploy init`: scaffold edgedeploy.yaml and the Makefile include in a firmware repo."""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy.cli import output


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        directory: Path = typer.Argument(Path("."), help="Folder to scaffold (default: here)."),
        model: Path = typer.Option(None, "--model", help="The model file the manifest names."),
        board: str = typer.Option(None, "--board", help="Add a device target for this board."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
        as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    ) -> None:
        """Write a starter edgedeploy.yaml and edgedeploy.mk (never overwrites without --force).

        Example: edgedeploy init --model net.onnx --board jetson-tx2
        """
        from edgedeploy.api import init as init_project

        result = init_project(directory, model=model, board=board, force=force)
        if as_json:
            output.emit_json(result.to_dict())
            return
        for name in result.written:
            print(result.directory / name)
        if not result.validated:
            output.info("note: the model file does not exist yet; edit model.path, then run "
                        "`edgedeploy validate edgedeploy.yaml`")
        output.info("add `include edgedeploy.mk` to your Makefile, then `make edgedeploy-plan`")
