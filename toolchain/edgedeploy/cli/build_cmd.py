"""`edgedeploy build`: a plan (or, until one exists, a model) -> a deterministic runner bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy.cli import complete, output


def register(app: typer.Typer) -> None:
    @app.command()
    def build(
        source: Path = typer.Argument(..., help="A .plan.json lockfile, a manifest or a model."),
        out_dir: Path = typer.Option(None, "-o", "--output", help="Bundle folder to write."),
        target: str = typer.Option(None, "--target", autocompletion=complete.targets,
                                   help="Manifest target alias, or the board for a model."),
        family: str = typer.Option(None, "--family",
                                   help="Template family override: linux, jetson or rpi."),
        input_shape: str = typer.Option(None, "--input-shape",
                                        help="The input's shape for models with dynamic "
                                        "dimensions, in the model's own layout (N,C,H,W for "
                                        "ONNX images, N,H,W,C for TFLite)."),
        as_json: bool = typer.Option(False, "--json", help="Print the bundle facts as JSON."),
    ) -> None:
        """Build the runner bundle (scripts, config, weights, segments, runtime, SHA256SUMS).

        Example: edgedeploy build plans/demo.local.plan.json -o build/demo
        """
        from edgedeploy.api import build as build_from_path

        info = build_from_path(source, out_dir, target=target, family=family,
                               input_shape=input_shape)
        data = info.to_dict()
        if as_json:
            output.emit_json(data)
            return
        output.info(f"built {data['files']} files ({data['bytes'] / 1e6:.1f} MB)")
        print(f"bundle {data['id']} ({data['family']}) -> {data['bundle']}")
