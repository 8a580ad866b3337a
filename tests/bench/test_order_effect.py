"""Why bench windows last at least 0.4 s: two identical systems (one-thread onnxruntime replicas
of MobileNet V1 at 224) measured in alternated rounds with onnxruntime's default session between
them, as `bench` orders its systems, once in 20-frame rounds and once in 0.4 s ones. Their ratio
should be 1; how far each round lands from it is what the window length and the order do to a
measurement. Writes results/order_effect.json (reported, not asserted: timings are not tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from edgedeploy import api, zoo
from edgedeploy.benchmarks import systems
from edgedeploy.benchmarks.compare import MIN_WINDOW_S
from edgedeploy.runtime.executor import random_inputs

OUT = Path(__file__).resolve().parents[2] / "results" / "order_effect.json"
ROUNDS = 6


def test_identical_systems_in_short_and_long_rounds(tmp_path: Path) -> None:
    path = zoo.export("mobilenet_v1", tmp_path / "m.onnx")
    graph = api.load_model(path)
    first, between, last = (systems.ort_replicas(graph, path), systems.ort_default(path),
                            systems.ort_replicas(graph, path))
    pool = [[random_inputs(graph, k)[t.name] for t in graph.inputs] for k in range(4)]

    def frame(k: int) -> list[np.ndarray]:
        return pool[k % len(pool)]

    out = {}
    try:
        rate = min(s.probe(4, frame) for s in (first, between, last))
        for label, per in (("20_frames", 20), ("window_0.4s", math.ceil(rate * MIN_WINDOW_S))):
            ratios = []
            for r in range(ROUNDS):
                order = [first, between, last] if r % 2 == 0 else [last, between, first]
                got = {id(s): s.measure_round(per, max(2, per // 10), frame).throughput_fps
                       for s in order}
                ratios.append(round(got[id(first)] / got[id(last)], 3))
            out[label] = {"frames_per_round": per, "ratios": ratios,
                          "range": [min(ratios), max(ratios)]}
    finally:
        for s in (first, between, last):
            s.close()
    OUT.write_text(json.dumps({
        "command": "python -m pytest -q tests/bench/test_order_effect.py -p no:cacheprovider -s",
        "what": "ratio of two identical one-thread replica systems (mobilenet_v1 224) per round, "
                "rounds alternated with the onnxruntime default session between them",
        **out}, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    assert all(v["ratios"] for v in out.values())
