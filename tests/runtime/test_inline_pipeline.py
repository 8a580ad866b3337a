"""An inline stage: a plan's only stage run in the process that feeds it. The same answers as
the multi-process pipeline and as onnxruntime, the Pipeline interface the runner, the service
feed and the benchmarks use, and a clear refusal of what cannot run inline."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from edgedeploy import execute, zoo
from edgedeploy.errors import InputError as ToolchainInputError
from edgedeploy.importers import load_model
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.errors import InputError, StageError
from edgedeploy.runtime.executor import random_inputs
from edgedeploy.runtime.inline_pipeline import InlinePipeline, open_pipeline
from edgedeploy.runtime.pipeline import Pipeline
from edgedeploy.runtime.runner_config import BundleConfigError, parse_plan
from edgedeploy.runtime.stages import plan_stage_io
from edgedeploy.runtime.vocab import ONNXRUNTIME


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = zoo.export("squeezenet1_1", tmp_path_factory.mktemp("m") / "sq.onnx", size=32)
    graph = load_model(path)
    return graph, path


def _specs(graph, path, *, inline: bool, replicas: int = 1):  # type: ignore[no-untyped-def]
    io = plan_stage_io(graph, [])[0]
    stage = execute.stage_from_io(io, available_cpus(), replicas, "whole", inline=inline)
    choices = {layer.name: ONNXRUNTIME for layer in graph.layers}
    segments = execute.segments_for(graph, [io], choices, path)
    return execute.stage_specs(graph, [stage], choices, segments)


def _frames(graph, n: int) -> list[list[np.ndarray]]:  # type: ignore[no-untyped-def]
    return [[random_inputs(graph, seed=k)[t.name] for t in graph.inputs] for k in range(n)]


def test_inline_answers_as_the_pipeline_does_in_this_process(model) -> None:
    graph, path = model
    frames = _frames(graph, 8)
    inline = open_pipeline(_specs(graph, path, inline=True))
    assert isinstance(inline, InlinePipeline)
    with inline:
        assert inline.tail == 0  # nothing in flight behind a frame
        result = inline.run(frames, 4, warmup=2, keep_outputs="all", tail=2)
        info = inline.replica_info
    with open_pipeline(_specs(graph, path, inline=False)) as pipe:
        assert isinstance(pipe, Pipeline) and pipe.tail == 2
        want = pipe.run(frames, 4, warmup=2, keep_outputs="all", tail=pipe.tail)
    assert want.frames == 4 and len(want.outputs or []) == 4  # the tail is in no figure
    assert result.frames == 4 and result.mode == "inline"
    for got, ref in zip(result.outputs or [], want.outputs or [], strict=True):
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-5)
    (stage,) = result.stages
    assert stage.frames == 4 and stage.service_ms_p50 > 0  # warm-up frames count in nothing
    assert info[0]["pid"] == os.getpid() and info[0]["inline"] is True
    assert inline.resource_names() == []


@pytest.mark.parametrize("replicas", [1, 2])  # 2: InlineReplicas, threads of this process
def test_submit_and_get_from_two_threads_keep_order(model, replicas: int) -> None:
    """As the service feed uses it: one thread submits, another collects, in order; the caller
    may reuse its frame buffer once submit returns."""
    graph, path = model
    frames = _frames(graph, 6)
    got: list[tuple[int, np.ndarray]] = []
    with open_pipeline(_specs(graph, path, inline=True, replicas=replicas)) as pipe:
        def collect() -> None:
            for _ in range(len(frames)):
                seq, outs = pipe.get(timeout=30)
                got.append((seq, outs[0]))

        collector = threading.Thread(target=collect)
        collector.start()
        buffer = [np.empty_like(x) for x in frames[0]]
        for k, f in enumerate(frames):
            for b, x in zip(buffer, f, strict=True):
                b[...] = x
            pipe.submit(100 + k, buffer)
        collector.join(30)
        assert pipe.in_flight == 0 and pipe.peak_in_flight >= 1
        if replicas > 1:  # submit blocks while the replicas hold their frames
            assert pipe.peak_in_flight <= pipe.max_in_flight
        done = pipe.stream(lambda k: frames[k % len(frames)], 5)
    assert [s for s, _ in got] == [100 + k for k in range(len(frames))]
    assert np.all(np.diff(done) >= 0)
    with open_pipeline(_specs(graph, path, inline=False)) as pipe:
        want = pipe.run(frames, len(frames), keep_outputs="all").outputs or []
    for (_, out), ref in zip(got, want, strict=True):
        np.testing.assert_allclose(out, ref[0], rtol=1e-4, atol=1e-5)


def test_a_failing_frame_names_the_stage(model) -> None:
    graph, path = model
    with open_pipeline(_specs(graph, path, inline=True)) as pipe:
        bad = [np.zeros((1, 3, 32, 32), np.float32)]
        bad[0] = bad[0][:, :2]  # a wrong shape: refused before the engine sees it
        with pytest.raises((InputError, StageError, ToolchainInputError)):
            pipe.submit(0, bad)


def test_what_cannot_run_inline_is_refused(model) -> None:
    graph, path = model
    with pytest.raises(InputError, match="only stage"):
        InlinePipeline(_specs(graph, path, inline=True, replicas=2))
    stage = {"start": 0, "stop": 3, "inline": True}
    with pytest.raises(BundleConfigError, match="inline stage"):
        parse_plan("p", {"stages": [stage, {"start": 3, "stop": 5}]})
    assert parse_plan("p", {"stages": [stage]}).stages[0].inline
