"""Shared by the runtime-manager tests and the bench: a pass-through CNN whose outputs carry the
frame's sequence number, bundles of it with several plans, and the hog demo on this host.

The model is conv 1x1 / conv 3x3 / conv 1x1 / conv 3x3 with identity kernels (the centre tap for
3x3) and ReLUs: real convolution work through the runtime's primitives, yet output == input for
non-negative inputs, so a frame whose channel 0 holds its index comes out holding it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy import api
from edgedeploy.generator import BuildInput, PlanConfig, StageConfig, build_bundle
from edgedeploy.runtime.executor import default_choice

SOURCE_MODULE = '''"""Frames whose channel 0 holds their sequence index (the frame-order tests)."""
import numpy as np


def frames(config):
    shape = tuple(config["inputs"][0]["shape"])
    base = np.abs(np.random.default_rng(1).standard_normal(shape)).astype(np.float32)

    def frame(index):
        x = base.copy()
        x[:, 0] = float(index)
        return [x]
    return frame
'''


def seq_model(path: Path, channels: int = 8, size: int = 16) -> Path:
    """Write the pass-through model (see the module doc) as ONNX."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    eye = np.eye(channels, dtype=np.float32)
    k1 = eye[:, :, None, None]
    k3 = np.zeros((channels, channels, 3, 3), np.float32)
    k3[:, :, 1, 1] = eye
    nodes, inits, prev = [], [], "x"
    for i, k in enumerate([k1, k3, k1, k3]):
        inits.append(numpy_helper.from_array(k, f"w{i}"))
        pads = [1, 1, 1, 1] if k.shape[-1] == 3 else [0, 0, 0, 0]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=pads))
        prev = f"r{i}" if i < 3 else "y"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [prev]))
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("x", 1, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def seq_bundle(tmp: Path, plans: dict[str, list[tuple[int, int, tuple[int, ...], int]]], *,
               channels: int = 8, size: int = 16, predicted: dict[str, dict] | None = None,
               extra: dict[str, Any] | None = None) -> Path:
    """A real bundle of the pass-through model; ``plans``: name -> [(start, stop, cpus, replicas)]
    where stop -1 means the last layer; ``extra`` is merged into app/config.json (targets,
    manager: what the generator does not write yet), and the index-carrying source is installed."""
    model = seq_model(tmp / "seq.onnx", channels, size)
    graph = api.load_model(model)
    n = len(graph.layers)
    choices = {layer.name: default_choice(layer) for layer in graph.layers}
    build = BuildInput("seq", "local", "linux", tuple(
        PlanConfig(name, tuple(StageConfig(f"stage{k}", a, n if b < 0 else b, cpus=cpus, replicas=r)
                               for k, (a, b, cpus, r) in enumerate(st)),
                  choices, (predicted or {}).get(name, {}))
        for name, st in plans.items()))
    root = build_bundle(build, graph, model, tmp / "bundle").root
    cfg_path = root / "app" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update({"source": {"kind": "python", "callable": "seqsource:frames"}, **(extra or {})})
    cfg_path.write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    (root / "app" / "seqsource.py").write_text(SOURCE_MODULE)
    return root


def decode(outputs: Sequence[np.ndarray]) -> int:
    """The sequence index a frame's output carries."""
    return int(np.rint(float(np.median(outputs[0][:, 0]))))


# --- the demo: a CPU hog on core 1 mid-run --------------------------------------------------------
HOG = ("import os, sys, time\nos.sched_setaffinity(0, {int(sys.argv[1])})\n"
       "while True:\n    pass\n")


def start_hog(core: int, procs: int) -> list[subprocess.Popen]:
    """``procs`` busy-loop processes pinned to ``core`` (another application loading it)."""
    return [subprocess.Popen([sys.executable, "-c", HOG, str(core)]) for _ in range(procs)]


def stop_hog(hogs: list[subprocess.Popen]) -> None:
    for h in hogs:
        h.terminate()
    for h in hogs:
        h.wait(5)


def _status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def wait_for(path: Path, cond: Callable[[dict], bool], timeout: float, proc: subprocess.Popen,
             trace: list[dict] | None = None) -> dict:
    """Poll the status file until ``cond`` holds (or the runner died, or time ran out); each new
    snapshot's figures go to ``trace``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = _status(path)
        if trace is not None and st.get("updated") and (
                not trace or trace[-1]["t"] != st["updated"]):
            mgr = st.get("manager") or {}
            trace.append({"t": st["updated"], "active": st.get("active"),
                          "fps": st.get("throughput_fps"), "p99_ms": st.get("latency_ms_p99"),
                          "load": mgr.get("core_foreign_load"), "miss": mgr.get("miss_streak")})
        if st and cond(st):
            return st
        if proc.poll() is not None:
            raise AssertionError(f"runner exited with {proc.returncode}: {proc.communicate()}")
        time.sleep(0.1)
    return _status(path)


def demo_bundle(tmp: Path) -> Path:
    """Plan A: one stage, 2 replicas on cores 0 and 1; plan B: one stage on core 0. The target is
    relative (3/4 of what A does on free cores, learned in the run) so it holds on any host: met
    when idle, missed when a hog shares core 1."""
    plans = {"A": [(0, -1, (0, 1), 2)], "B": [(0, -1, (0,), 1)]}
    return seq_bundle(tmp, plans, channels=128, size=32,
                      predicted={"A": {"throughput_fps": 200.0}, "B": {"throughput_fps": 100.0}},
                      extra={"targets": {"min_throughput_ratio": 0.75},
                             "manager": {"enabled": True, "chunk_s": 0.5, "miss_chunks": 2,
                                         "recover_chunks": 3, "cooldown_chunks": 1}})


def run_demo(tmp: Path, hog_procs: int = 4, budget_s: float = 26.0) -> dict[str, Any]:
    """Serve plan A, load core 1 with a hog, wait for the switch to B, stop the hog, wait for the
    switch back; return the final status and the hog's start/stop times."""
    root = demo_bundle(tmp)
    state = tmp / "state"
    path = state / "runner.status.json"
    env = {**os.environ, "EDGEDEPLOY_STATE_DIR": str(state)}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-I", "main.py", "serve"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hogs: list[subprocess.Popen] = []
    marks: dict[str, float] = {}
    trace: list[dict] = []
    try:
        left = lambda: max(1.0, budget_s - (time.monotonic() - t0))  # noqa: E731
        wait_for(path, lambda s: "A" in s.get("manager", {}).get("measured_free", []),
                 left(), proc, trace)
        wait_for(path, lambda s: False, 1.0, proc, trace)
        marks["hog_start"] = time.time()
        hogs = start_hog(1, hog_procs)
        wait_for(path, lambda s: s.get("active") == "B", left(), proc, trace)
        wait_for(path, lambda s: False, 1.5, proc, trace)
        marks["hog_stop"] = time.time()
        stop_hog(hogs)
        hogs = []
        wait_for(path, lambda s: len(s.get("switches", [])) >= 2, left(), proc, trace)
        wait_for(path, lambda s: False, 0.6, proc, trace)
    finally:
        stop_hog(hogs)
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    status = json.loads(path.read_text())
    return {"status": status, "marks": marks, "returncode": proc.returncode, "stderr": err,
            "trace": trace, "wall_s": round(time.monotonic() - t0, 2)}


def others_on_core0(result: dict[str, Any], threshold: float = 0.3) -> float:
    """Share of the hog window in which *other* processes (not ours, not the hog on core 1)
    loaded core 0: the fallback plan's core. A shared CI host can make the demo moot."""
    start = result["marks"].get("hog_start", float("inf"))
    stop = result["marks"].get("hog_stop", float("inf"))
    window = [x for x in result["trace"] if start < x["t"] <= stop and x.get("load")]
    busy = [x for x in window if float(x["load"].get("0", 0.0)) >= threshold]
    return len(busy) / len(window) if window else 0.0


def timeline(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The switches with times relative to the runner's start (the demo's report)."""
    t0 = status.get("started", 0.0)
    return [{"t_s": round(s["t"] - t0, 2), "from": s["from"], "to": s["to"],
             "at_frame": s["at_frame"], "trigger": s.get("trigger"), "reason": s.get("reason"),
             "before": s.get("measured"), "expected": s.get("expected")}
            for s in status.get("switches", [])]
