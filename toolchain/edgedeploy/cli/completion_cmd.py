"""`edgedeploy completion SHELL`: print a shell completion script."""

from __future__ import annotations

import typer

from edgedeploy.errors import InputError

SHELLS = ("bash", "zsh", "fish")


def register(app: typer.Typer) -> None:
    @app.command()
    def completion(shell: str = typer.Argument(..., help="bash, zsh or fish")) -> None:
        """Print the completion script for SHELL.

        Example: edgedeploy completion bash >> ~/.bashrc
        """
        from typer._completion_shared import get_completion_script

        if shell not in SHELLS:
            raise InputError(f"unknown shell {shell!r}", hint=f"use one of: {', '.join(SHELLS)}")
        print(get_completion_script(prog_name="edgedeploy",
                                    complete_var="_EDGEDEPLOY_COMPLETE", shell=shell))
