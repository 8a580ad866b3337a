"""One-thread replicas as worker processes (edgedeploy's pipeline, the bench's baseline before
2344dce) against the same replicas as threads of the feeding process (``inline``, the baseline
after), each model's two systems under the bench's estimator: the same frames, the same
warm-up, rounds alternated in pairs (one in each order).

    PYTHONPATH=<clone>/toolchain python threads_vs_processes.py OUT.json ROUNDS \\
        MODEL[:N,C,H,W] ...
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main(out: str, rounds: int, models: list[str]) -> None:
    from edgedeploy import execute
    from edgedeploy.benchmarks import systems
    from edgedeploy.benchmarks.estimator import warmup_frames
    from edgedeploy.importers import load_model, parse_shape
    from edgedeploy.runtime.affinity import available_cpus
    from edgedeploy.runtime.stages import plan_stage_io
    from edgedeploy.runtime.vocab import LITERT, ONNXRUNTIME

    report = {"rounds": rounds, "frames_per_round": "probe-sized windows of about 1 s",
              "cpus": available_cpus(), "models": {}}
    for arg in models:
        path, _, shape = arg.partition(":")
        graph = load_model(path, input_shape=parse_shape(shape) if shape else None)
        engine = ONNXRUNTIME if path.endswith(".onnx") else LITERT
        io = plan_stage_io(graph, [])[0]
        cpus = tuple(available_cpus())
        choices = {layer.name: engine for layer in graph.layers}
        rng = np.random.default_rng(0)
        frames = [[rng.standard_normal(t.shape).astype(np.float32) for t in graph.inputs]
                  for _ in range(8)]

        def frame(k: int, fs: list = frames) -> list[np.ndarray]:
            return fs[k % len(fs)]

        made = {}
        for name, inline in (("processes", False), ("threads", True)):
            stage = execute.stage_from_io(io=io, cpus=cpus, replicas=len(cpus), name=engine,
                                          inline=inline)
            made[name] = systems.pipelined(name, name, graph, [stage], choices, Path(path))
        try:
            rate = min(s.probe(8, frame) for s in made.values())
            n = max(16, int(rate))  # about a second a round
            for r in range(rounds):
                order = list(made.values()) if r % 2 == 0 else list(made.values())[::-1]
                for s in order:
                    s.measure_round(n, warmup_frames(n), frame)
        finally:
            for s in made.values():
                s.close()
        fps = {name: [w.throughput_fps for w in s.windows] for name, s in made.items()}
        ratio = statistics.median(fps["threads"]) / statistics.median(fps["processes"])
        report["models"][Path(path).stem] = {"fps": fps, "threads_over_processes": ratio}
        print(f"{Path(path).stem}: threads/processes {ratio:.3f} "
              f"({statistics.median(fps['threads']):.1f} / "
              f"{statistics.median(fps['processes']):.1f} fps) {time.strftime('%H:%M:%S')}",
              flush=True)
    Path(out).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
