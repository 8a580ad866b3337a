"""``edgedeploy costmodel eval|predict``: how good the cost model is, and what it predicts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from edgedeploy.cli import complete, output

costmodel_app = typer.Typer(help="Evaluate the cost model or print its predictions.",
                            no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(costmodel_app, name="costmodel")


@costmodel_app.command("eval")
def eval_cmd(
    target: str = typer.Option("local", "--target", "-t", autocompletion=complete.targets,
                               help="Board to evaluate on (local)."),
    budget_s: float | None = typer.Option(
        None, "--budget-s", min=0.1,
        help="Profile this long first (default: reuse the stored profile, or 60 s if none)."),
    heldout_budget_s: float | None = typer.Option(
        None, "--heldout-budget-s", min=0.0,
        help="Time for measuring held-out layers not yet in the profile (default 240 s; each "
             "layer's primitives are timed in 4 interleaved rounds)."),
    transfer_from: Path | None = typer.Option(
        None, "--transfer-from", help="Profile of another board: fit there, transfer here."),
    samples: int = typer.Option(20, "--samples", min=0, help="Samples of this board (transfer)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a predicted-vs-measured PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Accuracy on held-out zoo layers: mape, kendall_tau, top1_within_10pct, n_fit, n_heldout.

    Example: edgedeploy costmodel eval --target local --budget-s 60 --plot eval.png --json
    """
    from edgedeploy import api
    from edgedeploy.cli.profile_cmd import progress_reporter

    with progress_reporter("evaluating") as cb:
        report = api.costmodel_eval(target, budget_s=budget_s, heldout_budget_s=heldout_budget_s,
                                    transfer_from=transfer_from, samples=samples, plot=plot,
                                    progress=cb)
    if as_json:
        output.emit_json(report)
        return
    rows = [[k, _fmt(report[k])] for k in ("mape", "kendall_tau", "top1_within_10pct", "n_fit",
                                           "n_heldout", "n_heldout_layers")]
    rows += [[f"prior only: {k}", _fmt(v)] for k, v in report["prior_only"].items()]
    rows += [[f"retest (the measurements' own agreement): {k}", _fmt(v)]
             for k, v in (report["retest"] or {}).items()]
    output.table(f"cost model on {report['target']} ({report['mode']})", ["figure", "value"],
                 rows)


@costmodel_app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="An .onnx or .tflite model file."),
    target: str = typer.Option("local", "--target", "-t", autocompletion=complete.targets,
                               help="Board name, path or local."),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="Shape for dynamic input dims, e.g. 1,3,224,224."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Predicted ms of every layer x primitive x core configuration (profile-calibrated).

    Example: edgedeploy costmodel predict resnet50.onnx --target jetson-tx2
    """
    from edgedeploy import api

    pred = api.costmodel_predict(model, target, input_shape=input_shape)
    report = pred.report
    if as_json:
        output.emit_json(report)
        return
    rows = [[name, prim, *(_fmt(v) for v in ms)] for name, prim, *ms in pred.rows]
    output.table(f"{pred.model_name} on {report['target']} (predicted ms; {report['source']})",
                 ["layer", "primitive", *report["configs"]], rows)
    print("best total ms: " + ", ".join(f"{k} {v:.2f}" for k, v in report["best_total_ms"].items()))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.3f}"
    return str(v)
