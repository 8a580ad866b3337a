"""A deployed runner is supervised: restarted when it dies, counted, stopped cleanly, and a dead
one is reported as dead; prune also clears uploads a dropped connection abandoned.

Real parts only: a generated bundle (squeezenet at 32x32, real inference), the local-directory
board (the same scripts an SSH board runs), real signals.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.deploy.bundles import make_bundle
from tests.generator.conftest import small_build

from edgedeploy.deploy import api
from edgedeploy.deploy.board import Board, BoardState, DeployHooks
from edgedeploy.deploy.local import LocalTransport
from edgedeploy.deploy.release import ReleaseOptions, linger_note
from edgedeploy.deploy.transport import ConnectionLostError
from edgedeploy.errors import UnreachableError
from edgedeploy.generator import build_bundle

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("supervised")
    build, graph, model = small_build(tmp)
    # its rings' owner tag is its own: a runner of the shared test bundle started by a test
    # running in parallel would reclaim the leftovers the dead-runner test looks for
    build = replace(build, name=f"supervised{os.getpid()}")
    return build_bundle(build, graph, model, tmp / "bundle").root


@pytest.fixture
def options(tmp_path: Path) -> ReleaseOptions:
    """Health windows for a real runner on a small, busy machine."""
    return ReleaseOptions(settle_s=0.5, health_timeout_s=90, poll_s=0.3,
                          health_script_timeout_s=60, journal_dir=tmp_path / "journal")


@pytest.fixture
def deployed(real_bundle: Path, tmp_path: Path, options: ReleaseOptions) -> Iterator[str]:
    spec = f"local:{tmp_path / 'board'}"
    host = api.push_bundle(real_bundle, spec, options=options).hosts[0]
    assert host.outcome == "deployed", host.message
    yield spec
    api.stop(spec, check=False)


def _status(spec: str) -> dict[str, Any]:
    (row,) = api.status(spec)
    return row


def _wait(what: str, probe: Callable[[], dict[str, Any]], ok: Callable[[dict[str, Any]], bool],
          timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    row = probe()
    while not ok(row):
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s; last: {row}"
        time.sleep(0.2)
        row = probe()
    return row


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _supervisor(spec: str) -> int:
    return int(Path(spec.split(":", 1)[1], "run", "supervisor.pid").read_text())


def test_a_killed_runner_comes_back_counted_and_stop_ends_it(deployed: str) -> None:
    first = _status(deployed)
    assert (first["state"], first["alive"], first["restarts"], first["exit_code"]) == (
        "running", True, 0, 0)
    supervisor = _supervisor(deployed)
    os.kill(first["pid"], signal.SIGKILL)
    # the first back-off is 1 s: a new runner, counted, under the same supervisor
    back = _wait("a restarted runner", lambda: _status(deployed),
                 lambda r: r["alive"] and r["pid"] != first["pid"], 15)
    assert back["restarts"] == 1 and back["state"] == "running" and back["exit_code"] == 0
    assert _supervisor(deployed) == supervisor
    # the restarted runner really serves (its status file is fresh and counts frames)
    _wait("frames from the restarted runner", lambda: _status(deployed),
          lambda r: (r.get("runner") or {}).get("pid") == back["pid"]
          and (r["runner"].get("frames") or 0) > 0, 60)
    stopped = api.stop(deployed).hosts[0]
    assert stopped.outcome == "ok", stopped.message
    row = _status(deployed)
    assert (row["state"], row["alive"], row["exit_code"]) == ("stopped", False, 0)
    assert _gone(supervisor) and _gone(back["pid"])
    time.sleep(2.5)  # longer than a back-off: nothing restarts a stopped runner
    assert _status(deployed)["state"] == "stopped" and _gone(back["pid"])


def test_a_dead_runner_is_reported_dead_and_its_rings_are_reclaimed_on_restart(
        deployed: str, real_bundle: Path, options: ReleaseOptions) -> None:
    row = _wait("a serving runner", lambda: _status(deployed),
                lambda r: bool((r.get("runner") or {}).get("shm")), 60)
    leaked = row["runner"]["shm"]
    assert any(n.startswith("sem.") for n in leaked)
    assert health_ok(row)
    # what systemd's final kill or an OOM kill of the cgroup does: the whole group at once
    supervisor = _supervisor(deployed)
    os.killpg(supervisor, signal.SIGKILL)
    # the group dies one process at a time: on a busy host the supervisor may still be
    # going when the runner is gone, and is then rightly seen as about to restart it; a row
    # read while it was going says so, though it may be gone by the time the row is checked
    dead = _wait("a dead runner", lambda: _status(deployed),
                 lambda r: not r["alive"] and _gone(supervisor) and r["state"] != "restarting",
                 10)
    assert dead["state"] == "dead" and dead["exit_code"] == 1
    assert dead["health"]["ok"] is False and "not running" in dead["health"]["output"]
    assert [n for n in leaked if (Path("/dev/shm") / n).exists()] == leaked  # really leaked
    # starting the release again (a push of the same bundle restarts a dead runner)
    again = api.push_bundle(real_bundle, deployed, options=options).hosts[0]
    assert again.outcome == "deployed", again.message
    row = _wait("the new runner's rings", lambda: _status(deployed),
                lambda r: bool((r.get("runner") or {}).get("shm")), 60)
    assert row["state"] == "running" and row["pid"] != dead["pid"]
    assert not [n for n in leaked if (Path("/dev/shm") / n).exists()]
    assert sorted(row["runner"]["reclaimed_shm"]) == sorted(leaked)


def health_ok(row: dict[str, Any]) -> bool:
    return bool(row["health"] and row["health"]["ok"])


def _age(folder: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (stamp, stamp), follow_symlinks=False)


def _dropped_upload(bundle: Path, spec: str, opts: ReleaseOptions) -> None:
    def drop(rel: str) -> None:
        if rel.startswith("runtime/"):
            raise ConnectionLostError("local: connection lost while uploading (test)")

    opts.hooks = DeployHooks(after_file_uploaded=drop)
    try:
        with pytest.raises(UnreachableError):
            api.push_bundle(bundle, spec, options=opts)
    finally:
        opts.hooks = None


def test_prune_removes_abandoned_uploads_but_not_one_in_progress(tmp_path: Path) -> None:
    board = tmp_path / "board"
    spec = f"local:{board}"
    opts = ReleaseOptions(settle_s=0.3, health_timeout_s=10, poll_s=0.2,
                          journal_dir=tmp_path / "journal")
    try:
        api.push_bundle(make_bundle(tmp_path, "alpha"), spec, options=opts)
        _dropped_upload(make_bundle(tmp_path, "beta"), spec, opts)
        (abandoned,) = board.glob("releases/.incoming-*")
        _age(abandoned, 3600)  # dropped an hour ago
        _dropped_upload(make_bundle(tmp_path, "gamma"), spec, opts)
        (in_progress,) = set(board.glob("releases/.incoming-*")) - {abandoned}
        _age(in_progress, 3600)
        (in_progress / "runtime" / "model.bin").write_bytes(b"still arriving")  # being written
        host = api.push_bundle(make_bundle(tmp_path, "delta"), spec, options=opts).hosts[0]
        assert host.outcome == "deployed"
        assert not abandoned.exists() and in_progress.is_dir()
        prune = next(s for s in host.steps if s["step"] == "prune")
        assert abandoned.name in prune["detail"]["removed"]
        assert sorted(p.name for p in (board / "releases").iterdir()) == sorted(
            ["alpha-0001", "delta-0001", in_progress.name])
    finally:
        api.stop(spec, check=False)


def test_the_systemd_unit_restarts_on_failure_and_lingering_is_explained(
        real_bundle: Path, tmp_path: Path) -> None:
    (unit_file,) = real_bundle.glob("edgedeploy-*.service")
    unit = unit_file.read_text()
    assert "Restart=on-failure" in unit and "WantedBy=default.target" in unit
    assert "loginctl enable-linger" in unit
    board = Board(LocalTransport(), str(tmp_path), use_systemd=True)
    off = BoardState({"systemd_user": "1", "linger": "no", "user": "pi"})
    assert "`loginctl enable-linger pi`" in (linger_note(board, off) or "")
    assert linger_note(board, BoardState({**off.facts, "linger": "yes"})) is None
