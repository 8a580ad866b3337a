"""Planner speed (issue 5, item 6): ResNet-50 on jetson-tx2 under 1 s; plan time ~linear in layers.

Benchmarks, run by `make bench`; they print the measured times (best of 3 to damp the noise of a
shared machine) and report the targets the issue sets (met or missed), never assert them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgedeploy.planner.partition import Limits
from edgedeploy.planner.solve import solve_problem
from edgedeploy.planner.synthetic import chain_problem
from edgedeploy.testing import host


def _best_of(fn, n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.slow
def test_resnet50_on_jetson_tx2_plans_in_under_a_second(tmp_path):
    from edgedeploy import zoo
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import CostModel
    from edgedeploy.importers import load_model
    from edgedeploy.planner.adapter import build_problem

    path = tmp_path / "resnet50.onnx"
    zoo.export("resnet50", path)
    graph = load_model(path)
    target = load_target("jetson-tx2")

    def run() -> None:
        model = CostModel.for_target(target)
        solve_problem(build_problem(graph, target, model), "throughput", Limits())

    seconds = _best_of(run)
    print(f"\nplan resnet50 ({len(graph.layers)} layers) on jetson-tx2: {seconds * 1000:.0f} ms"
          f" (target < 1000 ms: {'met' if seconds < 1.0 else 'MISSED'})")
    assert seconds > 0  # reported, not asserted


@pytest.mark.slow
def test_plan_time_grows_at_most_linearly_with_layer_count():
    times = {}
    for n in (50, 100, 200, 400):
        problem = chain_problem(n)
        times[n] = _best_of(lambda p=problem: solve_problem(p, "throughput", Limits()))
    shown = ", ".join(f"{n}: {t * 1000:.0f} ms" for n, t in times.items())
    print(f"\nplan time by layers: {shown}")
    growth = [times[big] / times[small] for small, big in ((50, 100), (100, 200), (200, 400))]
    print(f"growth per doubling: {', '.join(f'{g:.2f}x' for g in growth)} (target <= 2.5x: "
          f"{'met' if max(growth) <= 2.5 else 'MISSED'})")
    assert all(t > 0 for t in times.values())  # reported, not asserted


PLAN_TIME_TARGET_S = 90.0


@pytest.mark.slow
def test_measured_plan_of_resnet50_from_an_empty_cache(tmp_path):
    """`edgedeploy plan` of ResNet-50 (224x224) on the local target as a new user runs it: an
    empty cache, so the quick profile and the whole-model calibration runs are included, then
    measure-to-decide. Writes ``results/plan_time_resnet50.json``; the target is reported."""
    import json
    import os
    import subprocess
    import sys
    from datetime import UTC, datetime
    from pathlib import Path

    from edgedeploy import zoo

    zoo.export("resnet50", tmp_path / "r50.onnx", size=224)
    (tmp_path / "r50.yaml").write_text("name: r50\nmodel:\n  path: r50.onnx\n"
                                       "objective: throughput\ntargets:\n  local: {}\n")
    (tmp_path / "cache").mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "edgedeploy.cli.main", "plan", "r50.yaml", "--target", "local"]
    t0 = time.perf_counter()
    subprocess.run(cli, cwd=tmp_path, env=env, check=True)
    wall = time.perf_counter() - t0
    lock = json.loads((tmp_path / "r50.local.plan.json").read_text())
    out = Path(__file__).resolve().parents[2] / "results" / "plan_time_resnet50.json"
    out.write_text(json.dumps({
        "command": "python -m pytest -q tests/bench/test_planner_bench.py -k "
                   "measured_plan_of_resnet50 -p no:cacheprovider -s  (runs: "
                   "XDG_CACHE_HOME=<empty> edgedeploy plan "
                   "r50.yaml --target local; r50.yaml: zoo resnet50 224x224, objective "
                   "throughput, defaults otherwise)",
        "wall_s": round(wall, 2), "target_s": PLAN_TIME_TARGET_S,
        "host": f"{host.describe()}, empty cache (quick profile included)",
        "measured": lock.get("measured"), "decision": lock.get("decision"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}, indent=1, sort_keys=True)
        + "\n")
    print(f"\nplan resnet50 from an empty cache: {wall:.1f} s (target <= {PLAN_TIME_TARGET_S:.0f}"
          f" s: {'met' if wall <= PLAN_TIME_TARGET_S else 'MISSED'}); winner "
          f"{lock['decision']['winner']}")
    assert lock["decision"]["measured"]  # the time is reported, not asserted


#: Models a new user plans from an empty cache for the predicted-vs-measured bench: zoo
#: classifiers of each kind (AlexNet: the one that wins by batching) and a detector (with the
#: input size), and the real TFLite models of the third-party corpus (LiteRT's own plans).
FRESH_MODELS = (("googlenet", 224), ("mobilenet_v2", 224), ("yolo_tiny", 416), ("resnet50", 224),
                ("alexnet", 224), ("blazeface", None), ("face_landmark", None))
#: ... and models the calibration was never developed on: the ONNX zoo's Caffe2 exports as
#: the onnx wheel ships them (``testing.onnx_zoo``), other exporters and other architectures.
HELD_OUT_MODELS = ("densenet121", "inception_v2", "shufflenet", "zfnet512", "squeezenet")
PREDICTION_TARGET = 0.15


def _fresh_model(name: str, size: int | None, folder):  # type: ignore[no-untyped-def]
    """The model file in ``folder``: exported from the zoo, seeded from the onnx wheel's zoo
    graphs (``size`` "onnx_zoo"), or fetched (pinned) and copied."""
    import shutil

    from edgedeploy import zoo
    from edgedeploy.testing import onnx_zoo
    from edgedeploy.testing.thirdparty import fetch

    if size == "onnx_zoo":
        return onnx_zoo.seeded(name, folder)
    if size is not None:
        return zoo.export(name, folder / "m.onnx", size=size)
    src = fetch(name)
    return Path(shutil.copy(src, folder / f"m{src.suffix}"))


def _predicted_against_measured(models, tmp_path, results: str, what: str,  # type: ignore[no-untyped-def]
                                one_cache: bool = False) -> None:
    """Plan each ``(name, size)`` as a new user does and write every contender's predicted and
    measured throughput to ``results/<results>``; the target is reported, not asserted.
    ``one_cache``: the models share one cache, as one user's do on their host (the first
    profiles it; each next one is a model the profiled host has not run)."""
    import json
    import os
    import subprocess
    import sys
    from datetime import UTC, datetime

    rows = []
    for name, size in models:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        cache = tmp_path / "cache" if one_cache else folder / "cache"
        cache.mkdir(exist_ok=True)
        model = _fresh_model(name, size, folder)
        (folder / "m.yaml").write_text(f"name: m\nmodel:\n  path: {model.name}\n"
                                       "objective: throughput\ntargets:\n  local: {}\n")
        env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edgedeploy.cli.main", "plan", "m.yaml",
                        "--target", "local"], cwd=folder, env=env, check=True)
        wall = time.perf_counter() - t0
        decision = json.loads((folder / "m.local.plan.json").read_text())["decision"]
        contenders = [{"name": c["name"], "predicted_fps": c["predicted"]["throughput_fps"],
                       "measured_fps": c["measured_fps"]} for c in decision["contenders"]]
        errors = {c["name"]: c["predicted_fps"] / c["measured_fps"] - 1 for c in contenders
                  if c["predicted_fps"] and c["measured_fps"]}
        rows.append({"model": name, "size": size, "plan_s": round(wall, 1),
                     "winner": decision["winner"],
                     "winner_error": round(errors[decision["winner"]], 4),
                     "mean_abs_error": round(sum(map(abs, errors.values())) / len(errors), 4),
                     "contenders": contenders})
        print(f"\n{name}: chosen {decision['winner']} predicted "
              f"{errors[decision['winner']]:+.1%} of measured; contenders "
              f"{rows[-1]['mean_abs_error']:.1%} off on average")
    within = sum(abs(r["winner_error"]) <= PREDICTION_TARGET for r in rows)
    out = Path(__file__).resolve().parents[2] / "results" / results
    out.write_text(json.dumps({
        "command": "python -m pytest -q tests/bench/test_planner_bench.py -k "
                   f"{what} -p no:cacheprovider -s",
        "what": "edgedeploy plan MODEL --target local "
                + ("for each model in turn on one cache, empty before the first (its quick "
                   "profile; each next model is timed whole on the profiled host)"
                   if one_cache else "from an empty cache (quick profile, whole-model "
                   "calibration)")
                + ", then measure-to-decide; each contender's predicted and measured "
                "throughput (error = predicted / measured - 1)",
        "host": host.describe(), "target_error": PREDICTION_TARGET,
        "chosen_within_target": f"{within}/{len(rows)}", "rows": rows,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}, indent=1) + "\n")
    print(f"chosen plan predicted within {PREDICTION_TARGET:.0%}: {within}/{len(rows)}")
    assert rows  # reported, not asserted


@pytest.mark.slow
def test_predicted_against_measured_throughput_from_an_empty_cache(tmp_path):
    """`edgedeploy plan` of each model as a new user runs it (empty cache: the quick profile,
    the whole-model calibration runs, measure-to-decide): every contender's predicted
    throughput beside its measured one. Writes ``results/plan_prediction_fresh.json``."""
    _predicted_against_measured(FRESH_MODELS, tmp_path, "plan_prediction_fresh.json",
                                "predicted_against_measured_throughput_from")


@pytest.mark.slow
def test_held_out_predicted_against_measured(tmp_path):
    """The same on models the calibration was never developed on (``HELD_OUT_MODELS``): the
    method's score, not the test set's. Writes ``results/plan_prediction_held_out.json``."""
    _predicted_against_measured([(n, "onnx_zoo") for n in HELD_OUT_MODELS], tmp_path,
                                "plan_prediction_held_out.json", "held_out_predicted")


@pytest.mark.slow
def test_models_new_to_a_profiled_host_predicted_against_measured(tmp_path):
    """The held-out models planned one after another on one cache, as one user's models are:
    the first profiles the host, every next one is new to a profiled host. Writes
    ``results/plan_prediction_profiled_host.json``."""
    _predicted_against_measured([(n, "onnx_zoo") for n in HELD_OUT_MODELS], tmp_path,
                                "plan_prediction_profiled_host.json", "new_to_a_profiled_host",
                                one_cache=True)
