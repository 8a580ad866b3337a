"""The frame-order guarantee across plan switches: with a real pipeline (pinned stage processes,
shared-memory rings, replicas), every frame comes out once, in order, with its own content, while
the runner switches between a 2-stage plan, a replicated plan and a 1-stage plan."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.runtime.manager_demo import decode, seq_bundle

from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.runner_config import STATUS_FILE, RunnerConfig, load_config
from edgedeploy.runtime.runner_serve import Server, StatusWriter

pytestmark = pytest.mark.timeout(120)
CPUS = tuple(available_cpus())
SECOND = CPUS[1:2] or CPUS[:1]


class Scripted:
    """Switch to the next plan of ``order`` after ``every`` chunks on each plan; once the order
    is done and the last plan ran ``every`` chunks, stop the runner (as SIGTERM would)."""

    def __init__(self, order: list[str], every: int) -> None:
        self.order, self.every, self.chunks = order, every, 0
        self.stop = threading.Event()

    def __call__(self, snapshot: Mapping[str, Any], cfg: RunnerConfig) -> dict | None:
        self.chunks += 1
        if self.chunks < self.every:
            return None
        if not self.order:
            self.stop.set()
            return None
        self.chunks = 0
        return {"to": self.order.pop(0), "trigger": "test", "reason": "scripted",
                "measured": {"throughput_fps": snapshot.get("throughput_fps")}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("order")
    plans = {"two_stages": [(0, 2, CPUS[:1], 1), (2, -1, SECOND, 1)],
             "replicas": [(0, -1, CPUS, 2)],
             "one_stage": [(0, -1, CPUS[:1], 1)]}
    return seq_bundle(tmp, plans)


def serve_in_process(bundle: Path, state: Path, policy: Any, frames: int | None
                     ) -> tuple[list[tuple[int, list[np.ndarray]]], dict]:
    cfg = load_config(bundle)
    got: list[tuple[int, list[np.ndarray]]] = []
    base = {"active": cfg.active, "state": "starting", "frames": 0, "switches": []}
    with StatusWriter(state / STATUS_FILE, base) as status:
        Server(cfg, status, policy=policy, stop=getattr(policy, "stop", threading.Event()),
               sink=lambda k, outs: got.append((k, outs)), chunk_s=0.02).serve(frames, None)
    return got, json.loads((state / STATUS_FILE).read_text())


def test_no_frame_is_dropped_duplicated_or_reordered_across_three_switches(
        bundle: Path, tmp_path: Path) -> None:
    policy = Scripted(["replicas", "one_stage", "two_stages"], every=2)
    got, status = serve_in_process(bundle, tmp_path, policy, frames=None)
    switches = [(s["from"], s["to"]) for s in status["switches"]]
    assert switches == [("two_stages", "replicas"), ("replicas", "one_stage"),
                        ("one_stage", "two_stages")]
    n = status["frames"]
    assert [k for k, _ in got] == list(range(n))  # delivered once each, in order
    assert [decode(outs) for _, outs in got] == list(range(n))  # each with its own content
    edges = [s["at_frame"] for s in status["switches"]]
    assert 0 < edges[0] < edges[1] < edges[2] < n  # every plan served some frames
    for s in status["switches"]:
        assert s["reason"] == "scripted" and s["trigger"] == "test" and "t" in s


def test_the_content_of_each_frame_survives_every_plan(bundle: Path, tmp_path: Path) -> None:
    cfg = json.loads((bundle / "app/config.json").read_text())
    shape = tuple(cfg["inputs"][0]["shape"])
    base = np.abs(np.random.default_rng(1).standard_normal(shape)).astype(np.float32)
    got, _ = serve_in_process(bundle, tmp_path, Scripted(["replicas"], every=1), frames=40)
    for k, outs in got[::7]:
        want = base.copy()
        want[:, 0] = k
        np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-3)


def test_without_a_policy_the_runner_serves_one_plan_and_delivers_every_frame(
        bundle: Path, tmp_path: Path) -> None:
    got, status = serve_in_process(bundle, tmp_path, None, frames=30)
    assert [decode(outs) for _, outs in got] == list(range(30))
    assert status["switches"] == [] and status["active"] == "two_stages"
