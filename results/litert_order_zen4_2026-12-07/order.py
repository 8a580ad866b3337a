"""Two identical systems (LiteRT one-thread replicas of one model) measured in alternated
rounds with LiteRT's threaded interpreter between them, as `bench` orders a plan, its
baselines and the plan's own configuration among them: is the system created first slower?

    PYTHONPATH=<repo>/toolchain python order.py blazeface 16 > out_blazeface.json
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from edgedeploy import api
from edgedeploy.benchmarks import systems
from edgedeploy.benchmarks.compare import MIN_WINDOW_S
from edgedeploy.benchmarks.estimator import warmup_frames
from edgedeploy.runtime.executor import random_inputs
from edgedeploy.testing.thirdparty import MODELS, fetch


def main(name: str, rounds: int) -> dict[str, object]:
    path = fetch(name)
    graph = api.load_model(path, input_shape=MODELS[name].input_shape)
    first = systems.litert_replicas(graph, path)
    between = systems.litert_all_cores(graph, path)
    last = systems.litert_replicas(graph, path)
    pool = [[random_inputs(graph, k)[t.name] for t in graph.inputs] for k in range(4)]

    def frame(k: int) -> list[np.ndarray]:
        return pool[k % len(pool)]

    try:
        rate = min(s.probe(4, frame) for s in (first, between, last))
        per = math.ceil(rate * MIN_WINDOW_S)
        rows = []
        for r in range(rounds):
            order = [first, between, last] if r % 2 == 0 else [last, between, first]
            fps = {}
            for s in order:
                w = s.measure_round(per, warmup_frames(per), frame)
                fps[id(s)] = w.frames / w.wall_s
            rows.append({"first_created_fps": fps[id(first)], "last_created_fps": fps[id(last)],
                         "ratio_first_over_last": fps[id(first)] / fps[id(last)],
                         "first_created_ran_first": r % 2 == 0})
    finally:
        for s in (first, between, last):
            s.close()
    ratios = [row["ratio_first_over_last"] for row in rows]
    return {"model": name, "frames_per_round": per, "rounds": rows,
            "median_ratio": float(np.median(ratios)),
            "rounds_under_1": sum(x < 1 for x in ratios), "n_rounds": len(ratios)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2])), indent=1))
