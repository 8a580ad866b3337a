"""No stage starts between a DequantizeLinear and its consumer: there the consumer's segment
would begin at a float tensor, onnxruntime would run it in float instead of an integer kernel,
and the output would move by a quantization step (past the runner's 1e-3 health check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedeploy import execute, zoo
from edgedeploy.boards.catalog import load_target
from edgedeploy.costmodel import CostModel
from edgedeploy.importers import load_model
from edgedeploy.importers.quantize import quantize
from edgedeploy.planner.adapter import build_problem
from edgedeploy.planner.partition import Limits, map_stages
from edgedeploy.planner.select import select
from edgedeploy.refine.candidate import Candidate, Space, StageConf
from edgedeploy.runtime.executor import GraphExecutor, max_rel_error, random_inputs
from edgedeploy.runtime.stages import plan_stage_io, unfused_cuts


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("q")
    path = zoo.export("squeezenet1_1", folder / "sq.onnx", size=32)
    graph = load_model(path)
    quantize(path, folder / "sq.int8.onnx", [random_inputs(graph, seed=k) for k in range(4)])
    return folder / "sq.int8.onnx"


def test_the_unfused_cuts_are_exactly_those_a_dequantized_tensor_crosses(int8: Path) -> None:
    graph = load_model(int8)
    producer = {t: layer for layer in graph.layers for t in layer.outputs}
    no_cut = unfused_cuts(graph)
    assert no_cut
    for k in range(1, len(graph.layers)):
        crossing = plan_stage_io(graph, [k])[1].inputs
        dequantized = any(producer[t].attrs.get("onnx_op_type") == "DequantizeLinear"
                          for t in crossing if t in producer)
        assert (k in no_cut) == dequantized, k


def test_every_allowed_cut_runs_exactly_as_the_whole_model(int8: Path) -> None:
    from edgedeploy.importers.segments import segment_provider

    graph = load_model(int8)
    provide = segment_provider(graph, int8)
    choices = execute.resolve_choices(graph, "onnxruntime")
    feeds = random_inputs(graph, seed=2)
    _, want = execute.reference_outputs(graph, feeds)
    allowed = [k for k in range(1, len(graph.layers)) if k not in unfused_cuts(graph)]
    for k in allowed[::3]:
        env = dict(feeds)
        for io in plan_stage_io(graph, [k]):
            run = GraphExecutor(graph, choices, start=io.start, stop=io.stop,
                                segment_provider=provide)
            env.update(run.run({t: env[t] for t in run.inputs}))
        got = {t.name: env[t.name] for t in graph.outputs}
        assert max_rel_error(got, want) <= 1e-5, k


def test_neither_the_planner_nor_refinement_starts_a_stage_at_an_unfused_cut(int8: Path) -> None:
    graph = load_model(int8)
    target = load_target("rpi4")  # four cores: pipelines of several stages are candidates
    problem = build_problem(graph, target, CostModel(target))
    assert problem.no_cut == unfused_cuts(graph)
    mapping = map_stages(problem, select(problem), "throughput", Limits())
    starts = {s.start for c in mapping.candidates for s in c.stages[1:]}
    assert starts and not starts & problem.no_cut
    k = min(problem.no_cut)
    names = [layer.name for layer in graph.layers]
    space = Space(names, [("onnxruntime",)] * len(names), {"a72": (0, 1, 2, 3)},
                  no_cut=problem.no_cut)
    at = Candidate((StageConf(0, k, "a72", 1), StageConf(k, len(names), "a72", 1)),
                   ("onnxruntime",) * len(names))
    assert any("DequantizeLinear" in v for v in space.violations(at))
    before = Candidate((StageConf(0, k - 1, "a72", 1), StageConf(k - 1, len(names), "a72", 1)),
                       ("onnxruntime",) * len(names))
    assert (k - 1 in problem.no_cut) or space.is_valid(before)
