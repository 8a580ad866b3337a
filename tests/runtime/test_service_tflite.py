"""A .tflite model's bundle served to a client: the client hands NHWC frames, as it hands them
to LiteRT, gets LiteRT's answer in LiteRT's shapes, through a two-stage plan whose rings carry
the model's edges in its own layout; the bundle's health check passes on its reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.runtime.serving import assert_close, runner_env, serving
from tests.runtime.test_edge_layouts import _model

from edgedeploy.client import Client
from edgedeploy.generator import BuildInput, PlanConfig, StageConfig, build_bundle
from edgedeploy.generator.context import with_io
from edgedeploy.importers import load_model
from edgedeploy.runtime.engines.litert import LiteRTModel
from edgedeploy.runtime.vocab import LITERT
from edgedeploy.schemas.io import Io

pytestmark = pytest.mark.timeout(120)


def test_a_tflite_bundle_serves_nhwc_frames_and_answers_as_litert(tmp_path: Path) -> None:
    path = _model(tmp_path)
    graph = load_model(path)
    n = len(graph.layers)
    choices = {graph.layers[0].name: LITERT}  # a LiteRT stage, then native layers
    plan = PlanConfig("plan0", (StageConfig("stage0", 0, 1, cpus=(0,)),
                                StageConfig("stage1", 1, n, cpus=(0,))), choices, {})
    build = with_io(BuildInput("edges", "local", "linux", (plan,)), Io(window=4), graph)
    root = build_bundle(build, graph, path, tmp_path / "bundle").root
    config = json.loads((root / "app" / "config.json").read_text())
    assert config["inputs"][0]["shape"] == [1, 12, 10, 3]  # what the application hands over
    health = subprocess.run([sys.executable, "-I", "main.py", "health", "--json"], cwd=root,
                            env=runner_env(tmp_path / "health"), capture_output=True, text=True,
                            timeout=60)
    assert health.returncode == 0 and json.loads(health.stdout)["ok"], health.stderr
    rng = np.random.default_rng(4)
    frames = [rng.standard_normal((1, 12, 10, 3)).astype(np.float32) for _ in range(6)]
    with LiteRTModel(path) as stock:
        want = [list(stock.run({"image": x}).values()) for x in frames]
    with serving(root, tmp_path / "state") as runner, Client.unix(runner.socket) as client:
        assert [tuple(t.shape) for t in client.inputs] == [(1, 12, 10, 3)]
        assert_close(client.infer(frames[0]), want[0])
        first = client._next_index
        for index, outs in client.stream(frames):
            assert_close(outs, want[index - first])
