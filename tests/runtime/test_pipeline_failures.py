"""Pipeline failure paths: a stage that raises, dies, fails to start or returns the wrong shape;
Ctrl-C in the parent; the parent killed. Each must give a clear error within seconds (never a
hang) and leave no child process and no /dev/shm entry behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import pipeline_stages as ps
from test_pipeline import CPUS, VEC, affine_stage, assert_cleaned_up, frame

from edgedeploy.runtime.errors import InputError, StageError
from edgedeploy.runtime.pipeline import Pipeline, StageSpec

pytestmark = pytest.mark.timeout(60)


def slow(name: str, ms: float = 5.0, replicas: int = 1) -> StageSpec:
    return StageSpec(name=name, cpus=CPUS, replicas=replicas, factory=ps.slow_identity,
                     factory_args=(ms,), inputs=VEC, outputs=VEC)


class Watched:
    """A started pipeline plus what is needed to check its cleanup afterwards."""

    def __init__(self, stages: list[StageSpec]) -> None:
        self.before = ps.shm_entries()
        self.pipe = Pipeline(stages)
        self.pipe.start()
        self.pids = [r["pid"] for r in self.pipe.replica_info]
        self.resources = self.pipe.resource_names()

    def check_cleaned_up(self) -> None:
        assert_cleaned_up(self.pids, self.resources, self.before)


def test_a_stage_that_raises_gives_a_stage_error_naming_it_within_seconds() -> None:
    stages = [affine_stage("first", 1, 0),
              StageSpec(name="middle", cpus=CPUS, factory=ps.raise_at, factory_args=(7,),
                        inputs=VEC, outputs=VEC),
              affine_stage("last", 1, 0)]
    w = Watched(stages)
    t0 = time.monotonic()
    with pytest.raises(StageError) as info, w.pipe:
        w.pipe.run(frame, 50)
    assert time.monotonic() - t0 < 5.0
    err = info.value
    assert err.stage == "middle" and "ValueError" in str(err) and "boom at frame 7" in str(err)
    assert "raise ValueError" in err.child_traceback
    w.check_cleaned_up()


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_stage_process_killed_with_sigkill_gives_a_stage_error_within_seconds(
        replicas: int) -> None:
    w = Watched([affine_stage("feed", 1, 0), slow("victim", 5.0, replicas), slow("tail", 1.0)])
    victim = next(r["pid"] for r in w.pipe.replica_info if r["stage"] == "victim")
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        os.kill(victim, signal.SIGKILL)

    timer = threading.Timer(0.3, kill)
    timer.start()
    with pytest.raises(StageError) as info, w.pipe:
        w.pipe.run(frame, 100_000)
    assert time.monotonic() - killed_at[0] < 5.0
    assert info.value.stage == "victim" and "SIGKILL" in str(info.value)
    w.check_cleaned_up()


def test_a_factory_that_raises_is_a_stage_error_at_start_up() -> None:
    before = ps.shm_entries()
    bad = StageSpec(name="loader", cpus=CPUS, factory=ps.broken_factory,
                    factory_args=("no weights here",), inputs=VEC, outputs=VEC)
    pipe = Pipeline([affine_stage("ok", 1, 0), bad])
    with pytest.raises(StageError) as info, pipe:
        pass
    assert info.value.stage == "loader"
    assert "RuntimeError: no weights here" in str(info.value) and "start-up" in str(info.value)
    assert not pipe.resource_names()  # closed: rings gone
    assert_cleaned_up([], ["placeholder-never-present"], before)


def test_a_stage_returning_the_wrong_shape_is_a_stage_error() -> None:
    w = Watched([StageSpec(name="shaper", cpus=CPUS, factory=ps.wrong_shape, inputs=VEC,
                           outputs=VEC)])
    with pytest.raises(StageError, match="shaper") as info, w.pipe:
        w.pipe.run(frame, 5)
    assert "shape" in str(info.value)
    w.check_cleaned_up()


def test_a_wrong_input_shape_is_an_input_error_and_the_pipeline_still_closes_cleanly() -> None:
    w = Watched([affine_stage("a", 1, 0)])
    with pytest.raises(InputError, match="shape"), w.pipe:
        w.pipe.run(lambda k: [np.zeros(3, np.float32)], 5)
    w.check_cleaned_up()


def test_ctrl_c_in_the_parent_stops_and_cleans_up_everything() -> None:
    """A real SIGINT, as a terminal's Ctrl-C sends it, with Python's own handler in place
    (whatever an earlier test in this process did to it)."""
    w = Watched([slow("a", 2.0), slow("b", 2.0, replicas=2)])
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        w.pipe.start()  # Ctrl-C while frames flow, not while the stages start
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt), w.pipe:
            w.pipe.run(frame, 100_000)
        assert time.monotonic() - t0 < 5.0
    finally:
        signal.signal(signal.SIGINT, previous)
    w.check_cleaned_up()


def test_a_closed_pipeline_refuses_new_frames() -> None:
    w = Watched([affine_stage("a", 1, 0)])
    with pytest.raises(Exception, match="no frame in flight"):
        w.pipe.get()  # never blocks forever
    w.pipe.close()
    w.pipe.close()  # idempotent
    with pytest.raises(Exception, match="started pipeline"):
        w.pipe.submit(0, frame(0))
    w.check_cleaned_up()


PARENT = """
import sys, time
sys.path.insert(0, {tests!r})
from pipeline_stages import slow_pipeline_for_orphan_test
if __name__ == "__main__":
    slow_pipeline_for_orphan_test()
"""


def test_children_leave_when_the_parent_is_killed() -> None:
    code = PARENT.format(tests=str(Path(__file__).parent))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]  # printed once running
        resources = proc.stdout.readline().split()
        assert pids and all(ps.pid_alive(p) for p in pids) and resources
        parent = ps.parent_pid(pids[0])  # that process, or the forkserver it started
        time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    # the replicas and the forkserver leave with it: nothing orphaned holds the cores or memory
    assert ps.wait_until(lambda: not any(ps.pid_alive(p) for p in {*pids, parent}), 5.0)
    # the children exit on their own; multiprocessing's resource tracker then unlinks the rest
    assert ps.wait_until(lambda: not set(resources) & ps.shm_entries(), 5.0)
