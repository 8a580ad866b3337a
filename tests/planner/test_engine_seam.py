"""Engines as the seam: every engine from plan to lockfile to bundle config, a toy engine
registered in a test and planned/run like the built-in ones, TFLite ops outside the IR in LiteRT
segments, and GPU stages that name their provider and are refused where it is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.importers.test_tflite_cut import branchy

from edgedeploy import api, execute, zoo
from edgedeploy.generator.sources import build_from_path
from edgedeploy.planner import plan
from edgedeploy.runtime import ir
from edgedeploy.runtime.engines import (
    SEGMENT,
    EngineOptions,
    EngineSpec,
    register_engine,
    unregister_engine,
)
from edgedeploy.runtime.runner_config import load_config
from edgedeploy.runtime.stages import plan_stage_io
from edgedeploy.schemas.plan import load_plan

MANIFEST = """name: {name}
model:
  path: {model}
pipeline: {{max_stages: 2}}
targets:
  {alias}: {{board: {board}}}
"""


def _project(tmp: Path, model: Path, board: str, alias: str = "t") -> Path:
    shutil.copy(model, tmp / model.name)
    (tmp / "m.yaml").write_text(MANIFEST.format(name=model.stem, model=model.name, alias=alias,
                                                board=board))
    return tmp / "m.yaml"


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    zoo.export("resnet18", path, size=32)
    return path


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> Path:
    return branchy(tmp_path_factory.mktemp("tfl") / "branchy.tflite")


def _round_trip(manifest: Path, alias: str, tmp: Path):
    """plan -> lockfile -> Plan -> bundle -> the runner's config: (Plan, RunnerConfig)."""
    result = plan(manifest, alias)[0]
    lock = load_plan(result.plan_file)
    info = build_from_path(result.plan_file, tmp / "bundle")
    return lock, load_config(info.root), json.loads((info.root / "bundle.json").read_text())


def test_onnx_plan_on_this_host_round_trips_engines_into_the_bundle(tmp_path, onnx_model):
    lock, cfg, meta = _round_trip(_project(tmp_path, onnx_model, "local"), "t", tmp_path)
    assert {layer.engine for layer in lock.layers} <= {"native", "onnxruntime"}
    for layer in lock.layers:
        assert layer.engine == ("onnxruntime" if layer.choice == "onnxruntime" else "native")
    run = cfg.plan("plan")
    assert dict(run.choices) == lock.choices
    assert [(s.start, s.stop, s.cpus, s.replicas, s.engine) for s in run.stages] == \
        [(s.start, s.stop, tuple(s.cpus), s.replicas, s.engine) for s in lock.stages]
    assert set(meta["engines"]) == set(lock.engines) | {"native"}
    if "onnxruntime" in lock.engines:
        assert "onnxruntime" in meta["requires"]
        assert all(k[0] == "onnx" for k in cfg.segments)


def test_tflite_model_with_an_op_outside_the_ir_plans_onto_litert_and_verifies(tmp_path,
                                                                               tflite_model):
    manifest = _project(tmp_path, tflite_model, "local")
    lock, cfg, meta = _round_trip(manifest, "t", tmp_path)
    opaque = [layer for layer in lock.layers if layer.op == ir.OPAQUE]
    assert opaque and all(layer.engine == "litert" for layer in opaque)
    assert "onnxruntime" not in lock.engines  # onnxruntime cannot run a piece of a .tflite
    assert all(k[0] == "tflite" and Path(cfg.root / f).is_file() for k, f in cfg.segments.items())
    assert "ai-edge-litert" in meta["requires"]
    report = api.run(tmp_path / f"{tflite_model.stem}.t.plan.json", frames=5, verify=True)
    assert report.reference == "litert" and report.max_rel_error <= 1e-4


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_litert_stages_cut_anywhere_are_aligned_to_whole_operators(tflite_model, stages):
    report = api.run(tflite_model, primitive="litert", stages=stages, frames=3, verify=True,
                     sequential=True)
    assert report.max_rel_error <= 1e-5


def test_a_gpu_stage_names_its_engine_provider_and_feeder_and_is_unverified(tmp_path,
                                                                            onnx_model):
    lock, cfg, meta = _round_trip(_project(tmp_path, onnx_model, "jetson-tx2"), "t", tmp_path)
    gpu = [s for s in lock.stages if s.cluster == "gpu"]
    assert gpu, "the TX2 prior puts the convolutions on the GPU"
    stage = gpu[0]
    assert stage.engine == "onnxruntime-tensorrt" and not stage.verified
    assert stage.providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert len(stage.cpus) == 1  # the feeding core, which no CPU stage takes
    assert stage.cpus[0] not in {c for s in lock.stages if s is not stage for c in s.cpus}
    assert all(lock.choices[layer.name] == stage.engine
               for layer in lock.layers[stage.start:stage.stop])
    runner = cfg.plan("plan").stages[stage.index]
    assert runner.engine == "onnxruntime-tensorrt" and runner.device_id == 0
    assert "provider:TensorrtExecutionProvider" in meta["requires"]


def test_a_gpu_engine_refuses_to_fall_back_to_the_cpu(onnx_model):
    from edgedeploy.runtime.engines import open_segment
    from edgedeploy.runtime.errors import ExecutionError

    with pytest.raises(ExecutionError, match="CUDAExecutionProvider"):
        open_segment("onnxruntime-cuda", str(onnx_model), EngineOptions(cpus=(0,)))


def test_pushing_a_gpu_plan_here_is_refused_naming_the_provider(tmp_path, onnx_model):
    from edgedeploy.deploy.bundle import load_bundle
    from edgedeploy.deploy.local import LocalTransport
    from edgedeploy.deploy.release import push_release

    _, cfg, _ = _round_trip(_project(tmp_path, onnx_model, "jetson-tx2"), "t", tmp_path)
    bundle = load_bundle(cfg.root)
    board = tmp_path / "board"
    result = push_release(LocalTransport(), str(board), bundle)
    assert result.outcome == "refused" and result.exit_code == 2
    assert "TensorrtExecutionProvider" in result.message
    assert not (board / "current").exists()
    assert not list(board.glob("releases/*"))  # nothing uploaded, no .incoming-* left


class _ReferenceEngine:
    """A toy engine: ONNX segments run by onnx's reference evaluator (pure numpy)."""

    name = "onnx-reference"
    capabilities = frozenset({SEGMENT})

    def __init__(self, model: bytes | str) -> None:
        from onnx.reference import ReferenceEvaluator

        self.session = ReferenceEvaluator(model)
        self.outputs = list(self.session.output_names)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {n: inputs[n] for n in self.session.input_names}
        return dict(zip(self.outputs, self.session.run(None, feeds), strict=True))

    def close(self) -> None:
        self.session = None


@pytest.fixture
def toy_engine():
    spec = register_engine(EngineSpec(
        "onnx-reference", frozenset({SEGMENT}), lambda: _ReferenceEngine, formats=("onnx",),
        segment_format="onnx", runs_opaque=True, requires=("onnx",),
        open=lambda model, options: _ReferenceEngine(model)))
    yield spec
    unregister_engine(spec.name)


def test_a_toy_engine_in_one_module_is_planned_bundled_and_run(tmp_path, onnx_model, toy_engine):
    board = Path(__file__).resolve().parents[2] / "targets" / "rpi4.yaml"
    text = board.read_text().replace("engines: [native, onnxruntime, litert]",
                                     "engines: [onnx-reference]")
    (tmp_path / "toy.yaml").write_text(text.replace("name: rpi4", "name: toy"))
    lock, _, meta = _round_trip(_project(tmp_path, onnx_model, str(tmp_path / "toy.yaml")),
                                "t", tmp_path)
    assert set(lock.choices.values()) == {"onnx-reference"}
    assert lock.engines == ["native", "onnx-reference"]  # the stage device is the CPU
    assert "onnx" in meta["requires"] and "onnx-reference" in meta["engines"]
    graph = api.load_model(onnx_model)
    stages = [execute.stage_from_io(io, (0,)) for io in
              plan_stage_io(graph, [s.start for s in lock.stages[1:]])]
    report = execute.run_stages(graph, stages, lock.choices,
                                execute.RunRequest(frames=2, warmup=0, verify=True,
                                                   sequential=True), model_path=onnx_model)
    assert report.max_rel_error <= 1e-4


def test_an_unknown_engine_on_a_board_names_the_known_ones(tmp_path):
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.errors import EdgeDeployError

    board = Path(__file__).resolve().parents[2] / "targets" / "rpi4.yaml"
    (tmp_path / "b.yaml").write_text(board.read_text().replace(
        "engines: [native, onnxruntime, litert]", "engines: [native, tensorrt]"))
    with pytest.raises(EdgeDeployError, match="onnxruntime-tensorrt"):
        load_target(str(tmp_path / "b.yaml"))


def test_a_board_with_cuda_but_not_tensorrt_plans_its_gpu_stage_on_cuda(tmp_path, onnx_model):
    board = Path(__file__).resolve().parents[2] / "targets" / "jetson-tx2.yaml"
    text = board.read_text().replace(
        "engines: [native, onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, litert]",
        "engines: [native, onnxruntime, onnxruntime-cuda]")
    (tmp_path / "cuda-board.yaml").write_text(text.replace("name: jetson-tx2", "name: tx2-cuda"))
    lock, cfg, meta = _round_trip(
        _project(tmp_path, onnx_model, str(tmp_path / "cuda-board.yaml")), "t", tmp_path)
    (stage,) = [s for s in lock.stages if s.cluster == "gpu"]
    assert stage.engine == "onnxruntime-cuda" and stage.providers == ["CUDAExecutionProvider"]
    assert cfg.plan("plan").stages[stage.index].engine == "onnxruntime-cuda"
    assert "provider:CUDAExecutionProvider" in meta["requires"]
    assert "provider:TensorrtExecutionProvider" not in meta["requires"]


def test_only_rank_4_tensors_are_priced_a_layout_conversion():
    """The executor and LiteRT's edges convert rank-4 tensors only (NCHW <-> NHWC): the
    problem prices no conversion on a classifier's rank-2 output, and one on its input."""
    from edgedeploy.costmodel import CostModel
    from edgedeploy.importers.onnx import import_onnx
    from edgedeploy.planner.adapter import build_problem

    graph = import_onnx(zoo.build("squeezenet1_1", size=32))
    target = api.load_target("local")
    problem = build_problem(graph, target, CostModel(target))
    ranks = {t.name: len(graph.shape(t.name)) for t in problem.tensors}
    assert {2, 4} <= set(ranks.values())
    for k, t in enumerate(problem.tensors):
        assert (problem.layout_ms[k] > 0).all() == (ranks[t.name] == 4), t.name
