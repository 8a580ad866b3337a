"""`edgedeploy zoo list|export`: the reference models, built as ONNX with seeded weights."""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy import api
from edgedeploy.cli import complete, output

zoo_app = typer.Typer(
    name="zoo", no_args_is_help=True,
    help="Reference CNNs built as ONNX with seeded weights (no download).\n\n"
         "Example: edgedeploy zoo export resnet50 -o resnet50.onnx")


@zoo_app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """List the zoo's models with their published MACs and parameter counts.

    Example: edgedeploy zoo list --json
    """
    models = api.zoo_models()
    if as_json:
        output.emit_json({"models": models})
        return
    rows = [[m["name"], f"3x{m['input_size']}x{m['input_size']}",
             f"{m['published_macs'] / 1e9:.3f}", f"{m['published_params'] / 1e6:.2f}",
             m["description"]] for m in models]
    output.table("edgedeploy zoo (published figures at the input size shown)",
                 ["model", "input", "GMACs", "params (M)", "description"], rows,
                 justify={"GMACs": "right", "params (M)": "right"})


@zoo_app.command("export")
def export_cmd(
    name: str = typer.Argument(..., help="Model name (see `edgedeploy zoo list`).",
                               autocompletion=complete.zoo_models),
    out: Path = typer.Option(..., "--output", "-o", help="Where to write the .onnx file."),
    size: int | None = typer.Option(None, "--size", min=1,
                                    help="Input height and width (default: 224; 416 for "
                                         "yolo_tiny)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the weights."),
    batch: int = typer.Option(1, "--batch", min=1, help="Batch dimension of the input."),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1,
                                           help="Classes of the head (default: the model's)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Build a zoo model with seeded He-initialised weights and write it as ONNX (opset 17).

    The same name, size, seed and batch always give a byte-identical file.

    Example: edgedeploy zoo export resnet50 -o models/resnet50.onnx --size 224 --seed 0
    """
    summary = api.zoo_export(name, out, size=size, seed=seed, batch=batch,
                             num_classes=num_classes)
    side = summary["size"]
    _log_line(f"wrote {summary['path']}: {name} {side}x{side} batch {batch} seed {seed}, "
              f"{summary['macs'] / 1e9:.3f} GMAC/sample, {summary['params'] / 1e6:.2f} M params, "
              f"{summary['bytes'] / 2**20:.1f} MiB")
    if as_json:
        output.emit_json(summary)


def _log_line(message: str) -> None:
    """One unwrapped, unstyled line on stderr (output.info wraps at 80 columns off a terminal)."""
    if output.settings.verbosity >= 0:
        output.stderr().print(message, soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")
