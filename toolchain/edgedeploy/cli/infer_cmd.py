"""`edgedeploy infer`: send frames through the deployed runner and show (or save) its outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgedeploy.cli import complete, output


def register(app: typer.Typer) -> None:
    @app.command()
    def infer(
        source: Path = typer.Argument(..., metavar="INPUT",
                                      help="An .npz/.npy of frames, an image, or a folder of "
                                           "images (preprocessed as the manifest's io says)."),
        manifest: Path = typer.Option(None, "--manifest", "-m",
                                      help="Manifest (default: ./edgedeploy.yaml)."),
        target: str = typer.Option("local", "--target", "-t", autocompletion=complete.targets,
                                   help="Target alias whose runner answers."),
        out: Path = typer.Option(None, "--output", "-o",
                                 help="Write the outputs to this .npz (arrays by output name, "
                                      "frames first)."),
        host: str = typer.Option(None, "--host", help="The host of a fleet to use."),
        window: int = typer.Option(8, "--window", min=1, max=256,
                                   help="Frames in flight (pipelined, in order)."),
        accept_new: bool = typer.Option(False, "--accept-new-host-keys",
                                        help="Trust and record unknown SSH host keys."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    ) -> None:
        """Run frames through the runner deployed to a target and print the top outputs.

        A target on this machine is reached through the runner's Unix socket; an SSH board
        through an SSH channel to its socket (no port is opened on the board). Exit 2: a frame
        the model cannot take; 4: no runner answers (is it pushed and serving?).

        Example: edgedeploy infer -m edgedeploy.yaml --target jetson frames.npz -o out.npz
        """
        from edgedeploy import api

        result = api.infer(manifest, target, source, output=out, host=host, window=window,
                           accept_new_host_keys=accept_new)
        data = result.to_dict()
        if as_json:
            output.emit_json(data)
            return
        _render(data)


def _render(data: dict[str, Any]) -> None:
    rows = []
    for r in data["results"]:
        for name, o in r["outputs"].items():
            top = ", ".join(f"{i}:{v:.4g}" for i, v in o["top"][:3])
            rows.append([r["label"], name, "x".join(map(str, o["shape"])), top])
    output.table(f"{data['frames']} frame(s) through {data['target']}",
                 ["frame", "output", "shape", "top (index:value)"], rows)
    line = f"{data['frames']} frames in {data['seconds']:.3f} s"
    if data.get("fps"):
        line += f" ({data['fps']:.1f} fps)"
    if data.get("output_file"):
        line += f"; outputs written to {data['output_file']}"
    print(line)
