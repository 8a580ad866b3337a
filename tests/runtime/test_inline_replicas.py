"""Inline replicas: a plan's only stage replicated as pinned threads of the feeding process.
The same answers as the multi-process pipeline, in submission order, the replicas truly in
parallel on their own cores, and failures that name the stage."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from tests.runtime.test_inline_pipeline import _frames
from tests.runtime.test_inline_pipeline import _specs as inline_specs

from edgedeploy import zoo
from edgedeploy.importers import load_model
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.errors import InputError, StageError
from edgedeploy.runtime.inline_pipeline import open_pipeline
from edgedeploy.runtime.inline_replicas import InlineReplicas
from edgedeploy.runtime.pipeline import Pipeline
from edgedeploy.runtime.pipeline_spec import StageSpec
from edgedeploy.runtime.runner_config import BundleConfigError, parse_plan
from edgedeploy.runtime.shm import TensorSpec


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = zoo.export("squeezenet1_1", tmp_path_factory.mktemp("m") / "sq.onnx", size=32)
    return load_model(path), path


def _specs(graph, path, *, inline: bool, replicas: int = 2):  # type: ignore[no-untyped-def]
    return inline_specs(graph, path, inline=inline, replicas=replicas)


def test_inline_replicas_answer_as_process_replicas_do(model) -> None:
    graph, path = model
    frames = _frames(graph, 9)
    pipe = open_pipeline(_specs(graph, path, inline=True))
    assert isinstance(pipe, InlineReplicas)
    with pipe:
        assert (pipe.workers, pipe.period, pipe.tail) == (2, 2, pipe.max_in_flight)
        result = pipe.run(lambda k: frames[k % 9], 7, warmup=2, keep_outputs="all",
                          tail=pipe.tail)
        info = pipe.replica_info
    with open_pipeline(_specs(graph, path, inline=False)) as ref:
        assert isinstance(ref, Pipeline)
        want = ref.run(lambda k: frames[k % 9], 7, warmup=2, keep_outputs="all",
                       tail=ref.tail)
    assert result.frames == 7 and result.mode == "inline" and len(result.outputs or []) == 7
    for got, exp in zip(result.outputs or [], want.outputs or [], strict=True):
        np.testing.assert_allclose(got[0], exp[0], rtol=1e-4, atol=1e-5)
    (stage,) = result.stages
    assert stage.frames == 7 and stage.service_ms_p50 > 0  # warm-up and tail count in nothing
    assert {i["pid"] for i in info} == {os.getpid()} and all(i["inline"] for i in info)
    assert len({i["thread"] for i in info}) == 2
    if len(available_cpus()) >= 2:  # each replica on its own core, as a process replica is
        assert [i["cpus"] for i in info] == [[c] for c in available_cpus()[:2]]
    assert pipe.resource_names() == []


# -- factories for stages that are not models (module-level, as a stage factory must be) --------
def _sleeper(seconds: float) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    """A stage that holds its frame ``seconds`` without Python's lock, as an engine computes,
    and answers with the cores its thread runs on."""
    def fn(xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        time.sleep(seconds)
        return [np.array(sorted(os.sched_getaffinity(0)), np.float32), xs[0] + 1]
    return fn


def _failing_on_negative(_: float) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    def fn(xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if float(xs[0][0]) < 0:
            raise ValueError("negative frame")
        return [xs[0]]
    return fn


def _broken(_: float) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    raise RuntimeError("no session")


def _spec(factory: Callable[..., object], replicas: int = 2, seconds: float = 0.0) -> StageSpec:
    return StageSpec(name="toy", cpus=tuple(available_cpus()), factory=factory,  # type: ignore[arg-type]
                     inputs=(TensorSpec((1,)),), outputs=(TensorSpec((1,)), TensorSpec((1,))),
                     replicas=replicas, factory_args=(seconds,), inline=True)


def test_replicas_run_frames_at_once() -> None:
    """Two replicas finish eight frames of 40 ms in about four frames' time, each frame in
    turn to the next replica (odd frames on the second one's core)."""
    frames = [[np.array([float(k)], np.float32)] for k in range(8)]
    with InlineReplicas([_spec(_sleeper, seconds=0.04)]) as pipe:
        t0 = time.perf_counter()
        result = pipe.run(frames, 8, keep_outputs="all")
        wall = time.perf_counter() - t0
    assert wall < 0.75 * 8 * 0.04
    outs = result.outputs or []
    assert [float(o[1][0]) for o in outs] == [k + 1.0 for k in range(8)]
    if len(available_cpus()) >= 2:
        first, second = available_cpus()[:2]
        assert [o[0].tolist() for o in outs[:2]] == [[first], [second]]


def test_a_failing_frame_and_a_failing_factory_name_the_stage() -> None:
    frames = [[np.array([v], np.float32)] for v in (1.0, -1.0, 2.0)]
    with InlineReplicas([_spec(_failing_on_negative)]) as pipe:
        pipe.submit(0, frames[0])
        pipe.submit(1, frames[1])
        assert pipe.get(timeout=10)[0] == 0
        with pytest.raises(StageError, match=r"toy.*negative frame"):
            pipe.get(timeout=10)
        with pytest.raises(StageError):  # the pipeline stays failed
            pipe.submit(2, frames[2])
    with pytest.raises(StageError, match=r"toy.*factory failed.*no session"):
        InlineReplicas([_spec(_broken)]).start()
    with pytest.raises(InputError, match="two replicas or more"):
        InlineReplicas([_spec(_sleeper, replicas=1)])


def test_inline_replicas_parse_from_a_bundle_plan() -> None:
    stage = {"start": 0, "stop": 3, "inline": True, "replicas": 2, "batch": 4}
    plan = parse_plan("p", {"stages": [stage]})
    assert plan.stages[0].inline and (plan.stages[0].replicas, plan.stages[0].batch) == (2, 4)
    with pytest.raises(BundleConfigError, match="inline stage"):
        parse_plan("p", {"stages": [stage, {"start": 3, "stop": 5}]})


def _batch_counter(seconds: float) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    """A stage that micro-batches: doubles its frames and answers each with its call's size."""
    def fn(xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        time.sleep(seconds)
        n = xs[0].shape[0]
        return [np.full((n, 1), float(n), np.float32), xs[0] * 2]
    return fn


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_micro_batching_stage_runs_waiting_frames_as_one_call(replicas: int) -> None:
    """Frames already waiting for a replica run as one call along the leading axis (up to the
    stage's batch), each frame's outputs split back out, in order; a lone frame runs alone."""
    spec = StageSpec(name="toy", cpus=tuple(available_cpus()), factory=_batch_counter,
                     inputs=(TensorSpec((1, 1)),), outputs=(TensorSpec((1, 1)),) * 2,
                     replicas=replicas, batch=4, factory_args=(0.02,), inline=True)
    frames = [[np.full((1, 1), float(k), np.float32)] for k in range(24)]
    pipe = open_pipeline([spec])
    assert isinstance(pipe, InlineReplicas)
    with pipe:
        assert pipe.period == 4 * replicas and pipe.max_in_flight >= 8 * replicas
        result = pipe.run(frames, 24, keep_outputs="all")
        pipe.submit(7, frames[3])
        seq, (size, out) = pipe.get(timeout=10)
    assert (seq, float(size[0, 0]), float(out[0, 0])) == (7, 1.0, 6.0)  # alone, at once
    outs = result.outputs or []
    assert [float(o[1][0, 0]) for o in outs] == [2.0 * k for k in range(24)]
    sizes = [float(o[0][0, 0]) for o in outs]
    assert max(sizes) == 4 and all(1 <= n <= 4 for n in sizes)
