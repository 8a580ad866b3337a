"""``constraints.max_memory_mb`` bounds what a stage process really holds (weights + live
activations + workspace), not only each primitive's workspace: a limit below a model's weights
is refused (exit 3) with the smallest value reachable, and that value is then accepted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgedeploy import execute, zoo
from edgedeploy.benchmarks.memory import memory_budget
from edgedeploy.boards.catalog import load_target
from edgedeploy.cli.main import main
from edgedeploy.costmodel import CostModel
from edgedeploy.importers import load_model
from edgedeploy.planner.adapter import build_problem
from edgedeploy.runtime.executor import GraphExecutor


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """squeezenet1_1: 1.24 M parameters, 4.7 MiB of float32 weights."""
    path = tmp_path_factory.mktemp("model") / "sq.onnx"
    zoo.export("squeezenet1_1", path)
    return path


def _manifest(folder: Path, model: Path, max_memory_mb: float) -> Path:
    path = folder / f"m{max_memory_mb:g}.yaml"
    path.write_text(f"name: sq\nmodel: {model}\nconstraints: {{max_memory_mb: {max_memory_mb}}}\n"
                    "output: {plans_dir: plans, build_dir: build}\n")
    return path


def _plan(manifest: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["plan", str(manifest), "--no-measure", "--json"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_limit_below_the_weights_is_refused_naming_the_smallest_reachable_value(
        squeezenet, tmp_path, capsys) -> None:
    rc, out, err = _plan(_manifest(tmp_path, squeezenet, 1), capsys)
    assert rc == 3 and json.loads(out)["error"]["code"] == "infeasible"  # --json: one object
    assert "max_memory_mb" in err
    found = re.search(r"smallest reachable is ([0-9.]+) MB", err)
    assert found, err
    reach = float(found.group(1))
    assert reach > 4.7  # at least the weights of the stage that holds most of them
    # the value named is reachable: planning with it picks a plan that fits, and just below
    # it nothing does
    rc, out, err = _plan(_manifest(tmp_path, squeezenet, reach), capsys)
    assert rc == 0, err
    assert json.loads(out)["plan_file"]
    rc, _, err = _plan(_manifest(tmp_path, squeezenet, round(reach - 0.01, 2)), capsys)
    assert rc == 3 and "max_memory_mb" in err


def test_a_generous_limit_plans_as_without_one(squeezenet, tmp_path, capsys) -> None:
    rc, out, err = _plan(_manifest(tmp_path, squeezenet, 1000), capsys)
    assert rc == 0, err
    limited = json.loads(out)
    free = tmp_path / "free.yaml"
    free.write_text(f"name: sq\nmodel: {squeezenet}\noutput: {{plans_dir: free}}\n")
    rc, out, err = _plan(free, capsys)
    assert rc == 0, err
    unlimited = json.loads(out)
    assert limited["stages"] == unlimited["stages"]


def test_the_estimate_is_what_the_runner_memory_budget_counts(tmp_path) -> None:
    """The planner's figure for a whole-model stage equals benchmarks.memory's budget of the
    executor that runs it (packed weights, live activations, workspace)."""
    from edgedeploy.planner.memory import MemoryModel

    model = tmp_path / "small.onnx"
    zoo.export("squeezenet1_1", model, size=64)
    graph = load_model(model)
    target = load_target("local")
    problem = build_problem(graph, target, CostModel.for_target(target))
    choices = execute.resolve_choices(graph, "auto")
    names = [choices[layer.name] for layer in graph.layers]
    want = memory_budget(GraphExecutor(graph, choices))
    got = MemoryModel(problem, graph).stage(0, len(graph.layers), names)
    assert (got.weights, got.activations_and_workspace) == (
        want["weights"], want["activations_and_workspace"])
