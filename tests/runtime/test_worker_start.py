"""How replicas start: from a forkserver that preloaded numpy and the runtime, with the parent's
cores, environment and BLAS width of the moment, as a spawned replica has them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import pipeline_stages as ps

from edgedeploy.runtime import worker_start
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.pipeline import Pipeline, StageSpec, TensorSpec

MARK = "EDGEDEPLOY_TEST_START_MARK"
CPUS = tuple(available_cpus())
REPORT = (TensorSpec((5,), "int64"),)


def born_with(cpus: tuple[int, ...], method: str | None) -> list[int]:
    stage = StageSpec(name="report", cpus=cpus, factory=ps.report_start, factory_args=(MARK,),
                      inputs=(TensorSpec((4,)),), outputs=REPORT)
    with Pipeline([stage], start_method=method) as pipe:
        result = pipe.run(lambda _k: [np.zeros(4, np.float32)], 2, keep_outputs="all")
    return [int(v) for v in result.outputs[-1][0]]


def test_replicas_start_from_a_forkserver_on_linux_and_spawn_without_threadpoolctl(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_start.default_start_method() == (
        "forkserver" if sys.platform.startswith("linux") else "spawn")
    real = worker_start.importlib.util.find_spec
    monkeypatch.setattr(worker_start.importlib.util, "find_spec",
                        lambda name, *a: None if name == "threadpoolctl" else real(name, *a))
    assert worker_start.default_start_method() == "spawn"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver is Linux's here")
@pytest.mark.parametrize("cpus", [CPUS[:1], CPUS[:2], ()],
                         ids=["one-core", "two-cores", "unpinned"])
def test_a_forked_replica_is_born_as_a_spawned_one_with_the_runtime_already_loaded(
        cpus: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MARK, raising=False)
    born_with(CPUS[:1], "forkserver")  # the server runs, started before the variable was set
    monkeypatch.setenv(MARK, "after")
    spawned, forked = born_with(cpus, "spawn"), born_with(cpus, "forkserver")
    width = len(cpus) or len(available_cpus())  # unpinned: the cores this process has now
    # BLAS as wide as the cores, every thread on them, the parent's environment of now
    assert spawned[:3] == forked[:3] == [width, 1, width]
    assert spawned[4] == forked[4] == 2
    assert (spawned[3], forked[3]) == (0, 1)  # only the forked one had the runtime imported


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver is Linux's here")
def test_the_forkserver_stays_one_thread_so_that_forking_it_is_safe() -> None:
    """A thread in the server at fork time would leave its locks held in every replica: the
    preload must start none (importing onnxruntime does)."""
    stage = StageSpec(name="s", cpus=CPUS[:1], factory=ps.identity,
                      inputs=(TensorSpec((4,)),), outputs=(TensorSpec((4,)),))
    with Pipeline([stage], start_method="forkserver") as pipe:
        server = ps.parent_pid(pipe.replica_info[0]["pid"])
        assert server != os.getpid()
        assert "numpy" in Path(f"/proc/{server}/maps").read_text()  # the preload ran
        assert len(os.listdir(f"/proc/{server}/task")) == 1


def test_an_unknown_start_method_is_refused_with_the_ones_there_are() -> None:
    from edgedeploy.runtime.errors import InputError

    with pytest.raises(InputError, match="spawn, forkserver"):
        Pipeline([StageSpec(name="s", cpus=CPUS[:1], factory=ps.identity,
                            inputs=(TensorSpec((4,)),), outputs=(TensorSpec((4,)),))],
                 start_method="fork")
