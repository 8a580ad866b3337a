"""``edgedeploy inspect MODEL``: every layer with its descriptor, MACs, params and bytes; totals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgedeploy.cli import output


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


def inspect(
    model: Path = typer.Argument(..., help="An .onnx or .tflite model file."),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="Shape for dynamic input dims, e.g. 1,3,224,224."),
    input_name: str | None = typer.Option(
        None, "--input-name", help="Which input --input-shape applies to (multi-input models)."),
    fmt: str | None = typer.Option(
        None, "--format", help="onnx or tflite (default: from the suffix or the file's bytes)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Import a model and show its layers (descriptor, MACs, params, bytes) and totals.

    Example: edgedeploy inspect resnet50.onnx --input-shape 1,3,224,224
    """
    from edgedeploy import api

    output.log.info("importing %s", model)
    report = api.inspect(model, input_shape, input_name=input_name, fmt=fmt)
    if as_json:
        output.emit_json(report)
        return
    _render(report)


def _render(report: dict[str, Any]) -> None:
    model = report["model"]
    rows = [_row(i, layer) for i, layer in enumerate(report["layers"])]
    columns = ["#", "name", "op", "in -> out", "k/s/g", "act", "MMACs", "params", "wKiB"]
    title = f"{model.get('name')} ({model.get('format')}, {model.get('path') or 'in memory'})"
    output.table(title, columns, rows,
                 justify={"#": "right", "MMACs": "right", "params": "right", "wKiB": "right"})
    t = report["totals"]
    ops = ", ".join(f"{op} {n}" for op, n in t["op_counts"].items())
    print(f"layers: {t['layers']}  GMACs: {t['macs'] / 1e9:.3f}  GFLOPs: {t['flops'] / 1e9:.3f}"
          f"  params: {t['params'] / 1e6:.3f} M  weights: {t['bytes_weights'] / 2**20:.2f} MiB")
    print(f"ops: {ops}")
    print(f"inputs: {_edges(report['inputs'])}")
    print(f"outputs: {_edges(report['outputs'])}")
    if model.get("batch_taken_as_1"):
        print(f"dynamic batch axis taken as 1: {', '.join(model['batch_taken_as_1'])} "
              "(--input-shape to choose another)")


def _edges(tensors: list[dict[str, Any]]) -> str:
    """Each tensor's IR shape, and the shape the runner takes it in where that differs."""
    return ", ".join(f"{x['name']} {_shape(x['shape'])}" + (
        f" (the runner's: {_shape(x['own_shape'])}, the model's own layout)"
        if x.get("own_shape", x["shape"]) != x["shape"] else "") for x in tensors)


def _row(index: int, layer: dict[str, Any]) -> list[Any]:
    d = layer["descriptor"]
    ins = " ".join(_shape(s) for s in layer["input_shapes"]) or "-"
    outs = " ".join(_shape(s) for s in layer["output_shapes"]) or "-"
    window = "-"
    if layer["op"] in ("conv2d", "maxpool", "avgpool"):
        window = f"{d['kernel_h']}x{d['kernel_w']}/{d['stride_h']}"
        if layer["op"] == "conv2d":
            window += f"/g{d['groups']}"
    op = layer["op"] if "source_op" not in layer else f"opaque:{layer['source_op']}"
    act = layer["activation"] if layer["activation"] != "none" else ""
    return [index, layer["name"], op, f"{ins} -> {outs}", window, act,
            f"{layer['macs'] / 1e6:.2f}", layer["params"], f"{layer['bytes_weights'] / 1024:.1f}"]


def _shape(shape: list[int] | None) -> str:
    return "?" if shape is None else "x".join(str(s) for s in shape)
