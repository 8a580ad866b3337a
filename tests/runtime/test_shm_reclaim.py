"""A runner whose whole process group is SIGKILLed (resource tracker included) leaks its rings in
/dev/shm; the next runner of the bundle unlinks them, and never a live process's."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import pytest
from tests.generator.conftest import small_build

from edgedeploy.generator import build_bundle
from edgedeploy.runtime import shm

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("reclaim")
    build, graph, model = small_build(tmp)
    # a bundle name (the rings' owner tag) of its own: a runner of the shared test bundle
    # started by a test running in parallel would reclaim the leftovers this test looks for
    build = replace(build, name=f"reclaim{os.getpid()}")
    return build_bundle(build, graph, model, tmp / "bundle").root


def _serve(bundle: Path, state: Path) -> subprocess.Popen:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(state),
           "EDGEDEPLOY_STATE_DIR": str(state)}
    return subprocess.Popen([sys.executable, "-I", "main.py", "serve"], cwd=bundle, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _serving(proc: subprocess.Popen, state: Path) -> dict:
    """The runner's status once its pipeline is up (its rings are named there)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            status = json.loads((state / "runner.status.json").read_text())
        except (OSError, ValueError):
            status = {}
        if status.get("pid") == proc.pid and status.get("shm"):
            return status
        time.sleep(0.2)
    raise AssertionError("the runner did not start serving")


def _present(names: list[str]) -> list[str]:
    return [n for n in names if (Path("/dev/shm") / n).exists()]


def test_a_restarted_runner_reclaims_what_its_sigkilled_predecessor_leaked(
        bundle: Path, tmp_path: Path) -> None:
    first = _serve(bundle, tmp_path)
    leaked = _serving(first, tmp_path)["shm"]
    os.killpg(first.pid, signal.SIGKILL)  # the runner, its stages and the resource tracker
    first.wait(timeout=10)
    time.sleep(0.5)
    assert _present(leaked) == leaked and any(n.startswith("sem.") for n in leaked)
    second = _serve(bundle, tmp_path)
    try:
        status = _serving(second, tmp_path)
        assert _present(leaked) == []
        assert sorted(status["reclaimed_shm"]) == sorted(leaked)
        dead = f"-{first.pid}-"
        assert not [n for n in os.listdir("/dev/shm") if dead in n and "edgedeploy_" in n]
        mine = status["shm"]
        assert all(f"-{second.pid}-" in n for n in mine) and _present(mine) == mine
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert f"reclaimed {len(leaked)} shared-memory entries of dead runners" in err
    assert _present(mine) == []


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _fake_segment(name: str) -> None:
    """A segment left behind by someone else (created here, then forgotten)."""
    seg = shared_memory.SharedMemory(name=name, create=True, size=64)
    resource_tracker.unregister(seg._name, "shared_memory")  # type: ignore[attr-defined]
    seg.close()


def test_reclaim_takes_only_dead_owners_entries_of_its_own_bundle(monkeypatch) -> None:
    monkeypatch.setattr(shm, "_tag", "anon")
    tag = shm.set_owner_tag("probe-bundle!")
    assert tag == "probebundle"
    dead = _dead_pid()
    stale = f"edgedeploy_{tag}-{dead}-0123456789ab"
    other = f"edgedeploy_otherbundle-{dead}-0123456789ab"
    for name in (stale, other):
        _fake_segment(name)
    ring = shm.Ring.create(mp.get_context("spawn"), 2, [shm.TensorSpec((4,))])
    try:
        live = ring.resource_names()
        assert len(live) == 3 and all(f"{tag}-{os.getpid()}-" in n for n in live)
        assert shm.reclaim_stale(tag) == [stale]
        assert _present(live) == live and _present([other]) == [other]
    finally:
        ring.close()
        for name in (stale, other):
            (Path("/dev/shm") / name).unlink(missing_ok=True)


def test_a_host_pipeline_reclaims_what_a_killed_host_process_left(monkeypatch) -> None:
    """A plan or bench process killed (the OOM killer) leaves its rings under the "anon" tag;
    the next pipeline started on the host unlinks them, and nothing of a live process."""
    from edgedeploy.runtime.pipeline import Pipeline, StageSpec, TensorSpec

    monkeypatch.setattr(shm, "_tag", "anon")
    dead = _dead_pid()
    stale = f"edgedeploy_anon-{dead}-0123456789ab"
    alive = f"edgedeploy_anon-{os.getppid()}-0123456789ab"
    for name in (stale, alive):
        _fake_segment(name)
    spec = StageSpec(name="id", cpus=(0,), replicas=1, factory=_identity, factory_args=(),
                     inputs=(TensorSpec((4,), "float32"),), outputs=(TensorSpec((4,), "float32"),))
    try:
        with Pipeline([spec]):
            assert _present([stale, alive]) == [alive]
    finally:
        for name in (stale, alive):
            (Path("/dev/shm") / name).unlink(missing_ok=True)


def _identity() -> object:
    return lambda xs: xs
