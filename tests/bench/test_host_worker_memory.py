"""What a measuring worker holds on the host: VGG-16 at 224 as two one-thread onnxruntime replicas,
started as measure-to-decide and bench start them, once with each stage process handed the whole
graph's weights (as before) and once with only the weights of the layers it runs itself (the
engine segment holds the rest). Peak and resident memory of each worker against the model's
weights. Writes results/host_worker_memory.json (reported, not asserted)."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from edgedeploy import api, execute, zoo
from edgedeploy.benchmarks import systems

OUT = Path(__file__).resolve().parents[2] / "results" / "host_worker_memory.json"


def _memory_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def _workers(graph, path) -> list[dict[str, float]]:
    system = systems.ort_replicas(graph, path)
    try:
        time.sleep(1.0)
        return [_memory_mb(p.pid) for p in mp.active_children()
                if p.name != "resource_tracker"]
    finally:
        system.close()


def test_a_worker_holds_its_session_not_the_models_weights_again(tmp_path: Path,
                                                                 monkeypatch) -> None:
    path = zoo.export("vgg16", tmp_path / "vgg16.onnx")
    graph = api.load_model(path)
    weights_mb = sum(a.nbytes for a in graph.weights.values()) / 2**20
    stage_weights = _workers(graph, path)
    with monkeypatch.context() as m:
        m.setattr(execute, "_stage_graph", lambda graph, stage, choices: graph)
        whole_graph = _workers(graph, path)
    OUT.write_text(json.dumps({
        "what": "VGG-16 (224), two one-thread onnxruntime replicas started by the pipeline; "
                "/proc VmHWM (peak) and VmRSS (resident) of each worker, MB",
        "command": "python -m pytest -q tests/bench/test_host_worker_memory.py "
                   "-p no:cacheprovider -s",
        "weights_mb": round(weights_mb, 1), "whole_graph_handed": whole_graph,
        "stage_weights_handed": stage_weights}, indent=1) + "\n")
    print(json.loads(OUT.read_text()))
    if not stage_weights or not whole_graph:
        pytest.skip("no worker processes seen")
