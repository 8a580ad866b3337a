"""Cost-model benchmarks (issue 4, items 5 and 6); only ``make bench`` runs them.

* speed: every (layer, primitive, core configuration) of ResNet-50 on jetson-tx2 (two CPU
  clusters and the GPU) predicted in under 100 ms (vectorised, calibrated model);
* accuracy: ``edgedeploy costmodel eval --target local --budget-s 60`` figures, printed and
  written to ``results/costmodel_eval.json``; the issue's targets are reported, not asserted
  (a shared 2-core host is too noisy to gate on).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edgedeploy.boards.catalog import load_target
from edgedeploy.costmodel import CostModel, Sample
from edgedeploy.costmodel.model import candidates
from edgedeploy.costmodel.shapes import space_filling
from edgedeploy.importers.onnx import import_onnx
from edgedeploy.zoo import build

RESULTS = Path(__file__).resolve().parents[2] / "results"


def _calibrated(target_name: str) -> CostModel:
    target = load_target(target_name)
    prior = CostModel(target)
    rows = [(d, p, c) for d in space_filling(40) for p in candidates(d) for c in prior.configs
            if not c.is_gpu]
    ms = prior.predict([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    return CostModel.fit(target, [Sample(d, p, c, float(t) * 1.3) for (d, p, c), t
                                  in zip(rows, ms, strict=True)])


def test_predict_table_resnet50_on_a_three_cluster_board_under_100ms():
    model = _calibrated("jetson-tx2")
    graph = import_onnx(build("resnet50", size=224, seed=0))
    model.predict_table(graph)  # warm caches (primitive registry import)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        table = model.predict_table(graph)
        times.append((time.perf_counter() - t0) * 1000.0)
    best = min(times)
    print(f"\npredict_table resnet50 x jetson-tx2: {table.ms.size} cells, best {best:.1f} ms")
    assert best < 100.0


@pytest.mark.slow
def test_costmodel_eval_on_the_local_target(tmp_path, monkeypatch, capsys):
    from edgedeploy.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plot = RESULTS / "costmodel_eval.png"
    assert main(["costmodel", "eval", "--target", "local", "--budget-s", "60",
                 "--plot", str(plot), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "costmodel_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        print("\ncostmodel eval (targets: mape <= 0.15, kendall_tau >= 0.8, top1 >= 0.9):")
        for key in ("mape", "kendall_tau", "top1_within_10pct", "n_fit", "n_heldout"):
            print(f"  {key}: {report[key]}")
        print(f"  retest (the measurements against themselves): {report['retest']}")


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs two cpus")
def test_pipeline_prediction_from_stage_times_within_15pct_of_measured():
    """Item 7: stage times measured alone compose into the pipeline's measured throughput.

    Two unequal matmul-chain stages on two cores, and the slower one replicated over both
    cores; each stage's time comes from running it alone on its core, the hand-over from the
    local target's inter-cluster figures, the composition from :func:`predict_pipeline`.
    """
    import sys

    import numpy as np

    from edgedeploy.costmodel import CoreConfig, predict_pipeline
    from edgedeploy.runtime.affinity import available_cpus
    from edgedeploy.runtime.pipeline import Pipeline, StageSpec, TensorSpec

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
    import pipeline_stages as ps

    cpus = available_cpus()
    size, frames = 256, 120
    spec = (TensorSpec((64, size)),)
    x = np.random.default_rng(1).standard_normal((64, size)).astype(np.float32)
    model = CostModel(load_target("local"))

    def stage(name: str, cpu: int, rounds: int) -> StageSpec:
        return StageSpec(name=name, cpus=(cpu,), factory=ps.matmul_chain,
                         factory_args=(rounds, size), inputs=spec, outputs=spec)

    def fps(stages: list) -> float:
        with Pipeline(stages) as pipe:
            return pipe.run(lambda k: [x], frames, warmup=10, keep_outputs="none").throughput_fps

    rounds = []
    for _ in range(3):  # alternate, so load from elsewhere hits every figure alike
        rounds.append((1000.0 / fps([stage("a", cpus[0], 100)]),
                       1000.0 / fps([stage("b", cpus[1], 60)]),
                       fps([stage("a", cpus[0], 100), stage("b", cpus[1], 60)])))
    alone = [float(np.median([r[0] for r in rounds])), float(np.median([r[1] for r in rounds]))]
    measured = float(np.median([r[2] for r in rounds]))
    hop = model.transfer_ms(x.nbytes, CoreConfig(model.configs[0].cluster, 1),
                            CoreConfig("other", 1))
    predicted = predict_pipeline(alone, [1, 1], [0.0, hop])["throughput_fps"]
    error = abs(predicted - measured) / measured
    print(f"\npipeline: stage ms {alone}, predicted {predicted:.1f} fps, measured {measured:.1f}"
          f" fps, error {error:.1%}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "costmodel_pipeline.json").write_text(json.dumps(
        {"stage_ms": alone, "predicted_fps": predicted, "measured_fps": measured,
         "relative_error": error, "target": 0.15, "met": error <= 0.15}, indent=2) + "\n")
    assert measured > 0 and predicted > 0  # the 15 % target is reported, not asserted
