"""A bundle that only runs its own plans (measure-to-decide's, ``plans_only``) ships the arrays
of the weights those plans read outside engine segments and only the sizes of the rest: the
segments hold those weights themselves. Every plan still runs and matches the reference, the
memory accounting still sees every weight's size, and a variant that would read a weight the
bundle left out says so."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tests.generator.conftest import small_build

from edgedeploy.generator import PlanConfig, StageConfig, build_bundle
from edgedeploy.runtime.runner import health, run_in_process
from edgedeploy.runtime.runner_config import load_config, load_graph


def _npz_keys(root: Path) -> set[str]:
    with zipfile.ZipFile(root / "app" / "weights.npz") as zf:
        return {n.removesuffix(".npy") for n in zf.namelist()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("plans_only")
    build, graph, model = small_build(tmp)
    n = len(graph.layers)
    whole = PlanConfig("replicas", (StageConfig("stage0", 0, n, cpus=(0,), replicas=2),),
                       {layer.name: "onnxruntime" for layer in graph.layers}, {})
    mixed = build.plans[0]  # native primitives, two layers in an onnxruntime segment
    build = replace(build, plans=(whole, mixed), active="replicas")
    full = build_bundle(build, graph, model, tmp / "full").root
    trimmed = build_bundle(replace(build, plans_only=True), graph, model, tmp / "trimmed").root
    return graph, mixed, full, trimmed


def test_only_weights_read_outside_segments_ship_and_the_rest_as_sizes(built) -> None:
    graph, mixed, full, trimmed = built
    in_segment = {layer.name for layer in graph.layers
                  if mixed.choices.get(layer.name) == "onnxruntime"}
    read = {k for layer in graph.layers if layer.name not in in_segment
            for k in layer.weights.values()}
    assert read and len(in_segment) == 2
    assert _npz_keys(full) == set(graph.weights)
    assert _npz_keys(trimmed) == read
    held = json.loads((trimmed / "app" / "config.json").read_text())["weights_held"]
    assert held == {k: int(graph.weights[k].nbytes) for k in set(graph.weights) - read}
    assert (trimmed / "app" / "weights.npz").stat().st_size < \
        (full / "app" / "weights.npz").stat().st_size
    assert "weights_held" not in json.loads((full / "app" / "config.json").read_text())


@pytest.mark.parametrize("plan", ["replicas", "plan0"])
def test_every_plan_of_a_trimmed_bundle_runs_and_matches_the_full_one(built, plan: str) -> None:
    _, _, full, trimmed = built
    report = health(load_config(trimmed), plan)
    assert report["ok"], report
    feeds = {k: v for k, v in np.load(trimmed / "app" / "reference.npz").items()}
    cfg_full, cfg_trim = load_config(full), load_config(trimmed)
    inputs = cfg_full.raw["reference"]["inputs"]
    x = {name: feeds[f"in{k}"] for k, name in enumerate(inputs)}
    got, want = run_in_process(cfg_trim, plan, x), run_in_process(cfg_full, plan, x)
    for name in cfg_full.raw["reference"]["outputs"]:
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("lazy", [True, False])
def test_weights_left_to_segments_keep_their_sizes_and_refuse_to_be_read(built, lazy) -> None:
    graph, _, _, trimmed = built
    loaded = load_graph(load_config(trimmed), lazy=lazy).weights
    held = json.loads((trimmed / "app" / "config.json").read_text())["weights_held"]
    assert set(loaded) == set(graph.weights)
    key = next(iter(held))
    assert key in loaded and loaded.nbytes_of(key) == held[key]
    with pytest.raises(KeyError, match="held by an engine segment"):
        loaded[key]
    kept = next(k for k in graph.weights if k not in held)
    np.testing.assert_array_equal(loaded[kept], graph.weights[kept])
