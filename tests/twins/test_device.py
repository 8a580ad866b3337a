"""Board twins: deterministic for a seed, different across seeds, labelled simulated, and their
ground truth is not the planner's cost model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgedeploy.costmodel import CoreConfig, CostModel
from edgedeploy.twins import TwinDevice, twin_target


def _variant(dev: TwinDevice) -> str:
    n = len(dev.graph.layers)
    choices = {layer.name: "onnxruntime" for layer in dev.graph.layers}
    stages = [{"start": 0, "stop": n // 2, "cpus": [4], "replicas": 1, "cluster": "big",
               "cores": 1},
              {"start": n // 2, "stop": n, "cpus": [0, 1], "replicas": 1, "cluster": "little",
               "cores": 2}]
    return json.dumps({"stages": stages, "choices": choices})


def _argv(cfg: str) -> list[str]:
    return ["python3", "main.py", "measure", "--config-json", cfg, "--frames", "20",
            "--warmup", "2", "--json"]


def test_same_seed_gives_identical_measurements(small_graph):
    a, b = TwinDevice("hikey970", small_graph, 3), TwinDevice("hikey970", small_graph, 3)
    cfg = _variant(a)
    assert [a.run(_argv(cfg)) for _ in range(3)] == [b.run(_argv(cfg)) for _ in range(3)]


def test_different_seeds_give_different_truth(small_graph):
    a, b = TwinDevice("hikey970", small_graph, 1), TwinDevice("hikey970", small_graph, 2)
    assert not np.allclose(a.truth.ms[3], b.truth.ms[3])


def test_every_answer_says_it_is_simulated(small_graph):
    dev = TwinDevice("rpi4", small_graph, 0)
    n = len(small_graph.layers)
    cfg = json.dumps({"stages": [{"start": 0, "stop": n, "cpus": [0, 1], "replicas": 1,
                                  "cluster": "a72", "cores": 2}],
                      "choices": {layer.name: "onnxruntime" for layer in small_graph.layers}})
    data = json.loads(dev.run(_argv(cfg)))
    assert data["simulated"] is True and data["throughput_fps"] > 0
    assert twin_target("rpi4").simulated and twin_target("rpi4").fingerprint.startswith("sim-")


def test_measurements_are_noisy_but_centred_on_the_truth(small_graph):
    dev = TwinDevice("hikey970", small_graph, 0)
    cfg = _variant(dev)
    stages, choices = dev.decode(json.loads(cfg))
    true = dev.truth.pipeline(stages, choices)["throughput_fps"]
    got = [json.loads(dev.run(_argv(cfg)))["throughput_fps"] for _ in range(8)]
    assert len(set(got)) > 1  # noise
    assert abs(np.median(got) / true - 1) < 0.15  # drift + noise stay bounded


def test_ground_truth_ranks_primitives_differently_from_the_cost_model(small_graph):
    """On some conv layer the twin's fastest primitive is not the cost model's: the twin is a
    separate truth, not the planner's model with noise."""
    target = twin_target("hikey970")
    model = CostModel(target)
    table = model.predict_table(small_graph)
    truth = TwinDevice(target, small_graph, 0).truth
    cfg = CoreConfig("big", 2)
    differ = 0
    for i, layer in enumerate(small_graph.layers):
        if layer.op != "conv2d" or len(truth.options[i]) < 3:
            continue
        model_best = table.best(i, cfg)[0]
        differ += model_best != truth.best_choice(i, "big", 2)
    assert differ >= 1


@pytest.mark.parametrize("board", ["rpi4", "jetson-tx2"])
def test_optimum_is_at_least_as_good_as_any_single_stage(small_graph, board):
    truth = TwinDevice(board, small_graph, 0).truth
    opt = truth.optimum(2)
    n = len(small_graph.layers)
    c = truth.target.clusters[0]
    ch = [truth.best_choice(i, c.name, c.cores) for i in range(n)]
    single = truth.pipeline([(0, n, c.name, c.cores, 1)], ch)["throughput_fps"]
    assert opt["throughput_fps"] >= single * (1 - 1e-9)
    again = truth.pipeline(opt["stages"], opt["choices"])["throughput_fps"]
    assert again == pytest.approx(opt["throughput_fps"], rel=1e-9)
