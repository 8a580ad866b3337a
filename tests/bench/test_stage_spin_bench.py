"""Idle threads in a stage of several steps: engine pools and OpenBLAS, spinning or sleeping.

A stage that runs onnxruntime segments beside native layers hands its cores from one thread pool
to the next every frame. A pool that spins when idle holds the cores the next step needs:
onnxruntime's intra-op pools (one per segment) and OpenBLAS's (numpy's native layers, 2^28
cycles by default). The runtime lets a segment's threads spin only where it is the stage's only
step (``GraphExecutor``) and has OpenBLAS's threads sleep after about a millisecond
(``affinity.BLAS_SPIN_LOG2_CYCLES``, set before numpy loads in stage workers and runners).

Each variant runs in a fresh process (OpenBLAS reads its setting when it loads), pinned to two
cores, rounds alternated; the median over rounds of each round's median frame time is kept.
Writes ``results/stage_thread_spin.json``; reported, not asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgedeploy.runtime.affinity import BLAS_SPIN_LOG2_CYCLES, available_cpus
from edgedeploy.testing import host

OUT = Path(__file__).resolve().parents[2] / "results" / "stage_thread_spin.json"
ROUNDS = 3

#: One timing in a fresh process: argv = model, layout, "spin" (the old rule: every segment's
#: pool spins) or "rule" (the runtime's).
TIMING = r"""
import json, os, sys, time
import numpy as np
from edgedeploy.importers import load_model
from edgedeploy.importers.segments import segment_provider
from edgedeploy.runtime import executor
from edgedeploy.runtime.executor import GraphExecutor, random_inputs

path, layout, engines = sys.argv[1:4]
cpus = [int(c) for c in sys.argv[4].split(",")]
os.sched_setaffinity(0, set(cpus))
graph = load_model(path)
native_ops = {"maxpool", "dense", "softmax", "reshape"}
n = len(graph.layers)
if layout == "segments_around_native":
    native = {l.name for l in graph.layers if l.op in native_ops}
else:  # one segment, then the native tail
    native = {l.name for k, l in enumerate(graph.layers) if k >= n - 4 and l.op in native_ops}
choices = {l.name: "native" if l.name in native else "onnxruntime" for l in graph.layers}
if engines == "spin":
    GraphExecutor._one_segment = lambda self: True
ex = GraphExecutor(graph, choices, segment_provider=segment_provider(graph, path), cpus=cpus)
feeds = random_inputs(graph, 0)
for _ in range(3):
    ex.run(feeds)
times = []
for _ in range(15):
    t0 = time.perf_counter()
    ex.run(feeds)
    times.append((time.perf_counter() - t0) * 1e3)
print(json.dumps({"ms": float(np.median(times)), "steps": len(ex.steps)}))
"""

VARIANTS = {  # name -> (engine pools, OPENBLAS_THREAD_TIMEOUT or None for OpenBLAS's default)
    "both spin (before)": ("spin", None),
    "engine pools sleep, OpenBLAS spins": ("rule", None),
    "both sleep (now)": ("rule", str(BLAS_SPIN_LOG2_CYCLES)),
}


@pytest.mark.slow
@pytest.mark.skipif(len(available_cpus()) < 2, reason="needs two cores")
def test_idle_threads_in_a_mixed_stage(tmp_path: Path) -> None:
    from edgedeploy.testing import onnx_zoo

    model = onnx_zoo.seeded("zfnet512", tmp_path)
    cpus = ",".join(str(c) for c in available_cpus()[:2])
    rows = {}
    for layout in ("segments_around_native", "segment_then_native_tail"):
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        steps = 0
        for r in range(ROUNDS):
            order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
            for name in order:
                engines, blas = VARIANTS[name]
                env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
                if blas is not None:
                    env["OPENBLAS_THREAD_TIMEOUT"] = blas
                out = subprocess.run([sys.executable, "-c", TIMING, str(model), layout, engines,
                                      cpus], env=env, check=True, capture_output=True,
                                     text=True).stdout
                got = json.loads(out.strip().splitlines()[-1])
                times[name].append(got["ms"])
                steps = got["steps"]
        rows[layout] = {"steps": steps, "ms_per_frame": {v: round(statistics.median(t), 2)
                                                         for v, t in times.items()},
                        "rounds_ms": {v: [round(x, 2) for x in t] for v, t in times.items()}}
        print(f"\n{layout} ({steps} steps): " + ", ".join(
            f"{v} {m:.1f} ms" for v, m in rows[layout]["ms_per_frame"].items()))
    OUT.write_text(json.dumps({
        "command": "python -m pytest -q tests/bench/test_stage_spin_bench.py -p no:cacheprovider "
                   "-s",
        "what": "ZFNet-512 (the ONNX zoo's Caffe2 export, seeded weights) as one 2-core stage: "
                "onnxruntime segments with native pooling and dense layers; milliseconds a "
                "frame, median of 15 after 3 warm-ups, median over alternated rounds in fresh "
                "processes",
        "host": host.describe(), "blas_spin_log2_cycles": BLAS_SPIN_LOG2_CYCLES,
        "rows": rows, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}, indent=1)
        + "\n")
    assert rows
