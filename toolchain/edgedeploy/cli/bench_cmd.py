"""`edgedeploy bench`: measured side by side in one run, never asserted as absolute times."""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy.cli import complete, output


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        what: str = typer.Argument(..., metavar="MANIFEST_OR_MODEL|layers",
                                   help="A manifest or model; or `layers` followed by a model."),
        model: Path = typer.Argument(None, help="With `layers`: the model."),
        target: str = typer.Option("local", "--target", "-t", autocompletion=complete.targets,
                                   help="Manifest target alias."),
        frames: int = typer.Option(200, "--frames", min=1, help="Frames per system."),
        rounds: int = typer.Option(4, "--rounds", min=1, help="Alternation rounds."),
        threads: int = typer.Option(1, "--threads", min=1, help="`layers`: threads per kernel."),
        runs: int = typer.Option(None, "--runs", min=1, help="`layers`: timed runs per kernel."),
        input_shape: str = typer.Option(None, "--input-shape",
                                        help="The input's shape for models with dynamic "
                                        "dimensions, in the model's own layout (N,C,H,W for "
                                        "ONNX images, N,H,W,C for TFLite)."),
        out: Path = typer.Option(None, "--out", "-o", help="Also write the JSON to this file."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
        measure_budget_s: float = typer.Option(30.0, "--measure-budget-s", min=0.0,
                                               help="Measure-to-decide seconds while planning "
                                                    "(0: plan from the cost model alone)."),
    ) -> None:
        """Measure the planned deployment beside what a user would otherwise run.

        The model is planned as `edgedeploy plan` plans it (measured on this host). The
        baselines are onnxruntime's default session and one-thread onnxruntime replicas (ONNX),
        LiteRT threaded and one-thread LiteRT replicas (TFLite); all alternate in one run, every
        system timed by the same estimator (median of the rounds; spread reported).
        `bench layers MODEL` instead times every conv layer with every primitive against
        onnxruntime's own kernel.

        Example: edgedeploy bench plans/demo.yaml --target local --json
        """
        from edgedeploy import api

        progress = None if as_json or not output.interactive() else output.info
        if what == "layers":
            if model is None:
                from edgedeploy.errors import InputError

                raise InputError("bench layers needs a model",
                                 hint="edgedeploy bench layers resnet50.onnx --threads 1")
            data = api.bench_layers(model, threads=threads, runs=runs, input_shape=input_shape,
                                    progress=progress)
        else:
            data = api.bench(Path(what), target=target, frames=frames, rounds=rounds,
                             input_shape=input_shape, measure_budget_s=measure_budget_s,
                             progress=progress)
        if out is not None:
            import json

            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(data, indent=1) + "\n")
        if as_json:
            output.emit_json(data)
        elif what == "layers":
            _render_layers(data)
        else:
            _render(data)


def _render(data: dict) -> None:
    rows = [[r["system"], r["description"], r["throughput_fps"],
             f"{r['throughput_fps_min']:.4g}..{r['throughput_fps_max']:.4g}",
             r["latency_ms_p50"], r["latency_ms_p99"]] for r in data["results"]]
    output.table(f"{data['model']} on {data['target']} (measured, alternating)",
                 ["system", "what", "fps (median)", "rounds", "latency p50 ms",
                  "latency p99 ms"], rows)
    print(f"edgedeploy / default: {data['ratio_vs_default']:.2f}x, / best baseline "
          f"({data['best_baseline']}): {data['ratio_vs_best_baseline']:.2f}x; predicted "
          f"{data['predicted_throughput_fps']:.1f} fps")
    if "best_latency_baseline" in data:  # the objective: one frame's time
        ours = next(r for r in data["results"] if r["system"] == "edgedeploy")
        best = next(r for r in data["results"] if r["system"] == data["best_latency_baseline"])
        print(f"objective latency: edgedeploy p50 {ours['latency_ms_p50']:.4g} ms, best "
              f"baseline by latency ({best['system']}) {best['latency_ms_p50']:.4g} ms: "
              f"{data['latency_ratio_vs_best_baseline']:.2f}x as fast")
    if any(s.get("inline") for s in (data.get("plan") or {}).get("stages", [])):
        print(output.INLINE_NOTE)
    if data.get("plan_is_best_baseline"):
        print(f"the plan is {data['best_baseline']}'s own configuration: that ratio is one "
              "configuration measured twice (its distance from 1.00x is this host's noise)")
    precision = data.get("precision")
    if precision:
        print(output.precision_line(precision)
              + (f"; / best int8 baseline ({data['best_int8_baseline']}): "
                 f"{data['ratio_vs_best_int8_baseline']:.2f}x"
                 if "best_int8_baseline" in data else ""))
    if data.get("winograd"):
        print(output.winograd_line(data["winograd"])
              + (f"; / best baseline on the rewritten model ({data['best_winograd_baseline']}): "
                 f"{data['ratio_vs_best_winograd_baseline']:.2f}x"
                 if "best_winograd_baseline" in data else ""))


def _render_layers(data: dict) -> None:
    rows = []
    for layer in data["layers"]:
        d = layer["descriptor"]
        shape = (f"{d['c_in']}->{d['c_out']} {d['h']}x{d['w']} k{d['kernel_h']} "
                 f"s{d['stride_h']} g{d['groups']}")
        best = layer["best"]
        rows.append([layer["name"], shape, layer["times_ms"]["onnxruntime"], best,
                     layer["times_ms"][best], layer["ratio_vs_ort"].get(best, 1.0)])
    output.table(f"{data['model']}: conv layers, {data['threads']} thread(s)",
                 ["layer", "shape", "onnxruntime ms", "best", "best ms", "x vs onnxruntime"], rows)
