"""``edgedeploy costmodel eval|predict``: how good the cost model is, and what it predicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer

from edgedeploy.cli import output

costmodel_app = typer.Typer(help="Evaluate the cost model or print its predictions.",
                            no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(costmodel_app, name="costmodel")


@costmodel_app.command("eval")
def eval_cmd(
    target: str = typer.Option("local", "--target", "-t", help="Board to evaluate on (local)."),
    budget_s: float | None = typer.Option(
        None, "--budget-s", min=0.1,
        help="Profile this long first (default: reuse the stored profile, or 60 s if none)."),
    heldout_budget_s: float = typer.Option(90.0, "--heldout-budget-s", min=0.0,
                                           help="Time for measuring held-out layers."),
    transfer_from: Path | None = typer.Option(
        None, "--transfer-from", help="Profile of another board: fit there, transfer here."),
    samples: int = typer.Option(20, "--samples", min=0, help="Samples of this board (transfer)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a predicted-vs-measured PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Accuracy on held-out zoo layers: mape, kendall_tau, top1_within_10pct, n_fit, n_heldout.

    Example: edgedeploy costmodel eval --target local --budget-s 60 --plot eval.png --json
    """
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.cli.profile_cmd import progress_reporter
    from edgedeploy.costmodel.evaluate import evaluate

    tgt = load_target(target)
    with progress_reporter("evaluating") as cb:
        report = evaluate(tgt, budget_s=budget_s, heldout_budget_s=heldout_budget_s,
                          transfer_from=transfer_from, samples=samples, plot=plot,
                          progress=cb)  # type: ignore[arg-type]
    if as_json:
        output.emit_json(report)
        return
    rows = [[k, _fmt(report[k])] for k in ("mape", "kendall_tau", "top1_within_10pct", "n_fit",
                                           "n_heldout", "n_heldout_layers")]
    rows += [[f"prior only: {k}", _fmt(v)] for k, v in report["prior_only"].items()]
    output.table(f"cost model on {report['target']} ({report['mode']})", ["figure", "value"],
                 rows)


@costmodel_app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="An .onnx or .tflite model file."),
    target: str = typer.Option("local", "--target", "-t", help="Board name, path or local."),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="Shape for dynamic input dims, e.g. 1,3,224,224."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Predicted ms of every layer x primitive x core configuration (profile-calibrated).

    Example: edgedeploy costmodel predict resnet50.onnx --target jetson-tx2
    """
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import CostModel
    from edgedeploy.importers import load_model, parse_shape

    tgt = load_target(target)
    graph = load_model(model, input_shape=parse_shape(input_shape) if input_shape else None)
    cm = CostModel.for_target(tgt)
    table = cm.predict_table(graph)
    best = np.where(np.isfinite(table.ms), table.ms, np.inf).min(axis=1)  # (layers, configs)
    best = np.where(np.isfinite(best), best, 0.0)
    report: dict[str, Any] = {
        "model": str(model), "target": tgt.name, "source": cm.source,
        "configs": [c.key for c in table.configs], "primitives": table.primitives,
        "layers": [{"name": name, "op": graph.layers[i].op, "ms": table.to_dict()[name]}
                   for i, name in enumerate(table.layers)],
        "best_total_ms": {c.key: round(float(best[:, k].sum()), 4)
                          for k, c in enumerate(table.configs)},
    }
    if as_json:
        output.emit_json(report)
        return
    rows = []
    for i, name in enumerate(table.layers):
        for j, prim in enumerate(table.primitives):
            vals = table.ms[i, j]
            if np.isfinite(vals).any():
                rows.append([name, prim, *(_fmt(float(v)) for v in vals)])
    output.table(f"{graph.name} on {tgt.name} (predicted ms; {cm.source})",
                 ["layer", "primitive", *report["configs"]], rows)
    print("best total ms: " + ", ".join(f"{k} {v:.2f}" for k, v in report["best_total_ms"].items()))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if not np.isfinite(v) else f"{v:.3f}"
    return str(v)
