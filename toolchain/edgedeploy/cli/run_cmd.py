"""`edgedeploy run`: execute a model (or a plan) on this host and print the measured metrics."""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy.cli import output


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        source: Path = typer.Argument(..., help="An .onnx/.tflite model or a .plan.json lockfile."),
        primitive: str = typer.Option("auto", "--primitive", "-p",
                                      help="auto, onnxruntime, or a conv primitive "
                                      "(e.g. winograd_f4x3)."),
        stages: int = typer.Option(1, "--stages", help="Pipeline stages (FLOP-balanced split)."),
        cores: str = typer.Option(None, "--cores",
                                  help="Cores per stage: '0:1' (stage 0 on 0, stage 1 on 1)."),
        replicas: int = typer.Option(1, "--replicas", help="Replicas of every stage."),
        frames: int = typer.Option(100, "--frames", min=1, help="Measured frames."),
        warmup: int = typer.Option(5, "--warmup", min=0, help="Frames run before measuring."),
        verify: bool = typer.Option(False, "--verify",
                                    help="Check outputs against onnxruntime / LiteRT."),
        sequential: bool = typer.Option(False, "--sequential",
                                        help="Run in this process, no pipeline processes."),
        input_shape: str = typer.Option(None, "--input-shape",
                                        help="Fix dynamic dimensions: the input's shape in "
                                        "the model's own layout (N,C,H,W for ONNX images, "
                                        "N,H,W,C for TFLite), or name=1x3x224x224,mask=1x10 "
                                        "for several."),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    ) -> None:
        """Run frames through a model or plan on this host, on pinned cores, and measure.

        Example: edgedeploy run yolo.onnx --stages 2 --cores 0:1 --frames 200 --json
        """
        from edgedeploy import api

        report = api.run(source, primitive=primitive, stages=stages, cores=cores,
                         replicas=replicas, frames=frames, warmup=warmup, verify=verify,
                         sequential=sequential, input_shape=input_shape)
        data = report.to_dict()
        if as_json:
            output.emit_json(data)
            return
        _render(data)


def _render(data: dict) -> None:
    rows = [[s["name"], ",".join(map(str, s["cpus"])), s["replicas"], s["frames"],
             s["service_ms_p50"], s["service_ms_p99"], s["wait_ms_p50"]] for s in data["stages"]]
    output.table("stages", ["stage", "cpus", "replicas", "frames", "service p50 ms",
                            "service p99 ms", "wait p50 ms"], rows)
    line = (f"throughput {data['throughput_fps']:.1f} fps, latency p50 "
            f"{data['latency_ms_p50']:.2f} ms, p99 {data['latency_ms_p99']:.2f} ms")
    if "max_rel_error" in data:
        line += f", max_rel_error {data['max_rel_error']:.2e} vs {data['reference']}"
    print(line)
