"""A profile kept in the repository (``targets.<alias>.profile``) calibrates the plan and is
hashed into the lockfile: a fresh clone reproduces the lockfile byte for byte, and a changed
profile makes it stale (exit 7)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgedeploy import zoo
from edgedeploy.boards.catalog import load_target
from edgedeploy.cli.main import main
from edgedeploy.costmodel.profile import Profile, read_profile, target_fingerprint
from edgedeploy.errors import ExitCode
from edgedeploy.twins import twin_target
from edgedeploy.twins.profile import profile_twin, twin_shapes

MANIFEST = """name: rp
model: m.onnx
measure: {{enabled: false}}
targets:
  tx2: {{board: jetson-tx2{profile}}}
"""


@pytest.fixture(scope="module")
def samples() -> list:
    """A short simulated profile of the board (what `profile --export` would write)."""
    return profile_twin(twin_target("jetson-tx2"), 4.0, seed=0,
                        shapes=twin_shapes("space")[:30])


@pytest.fixture
def project(tmp_path: Path, samples: list) -> Path:
    repo = tmp_path / "repo"
    (repo / "plans").mkdir(parents=True)
    zoo.export("squeezenet1_1", repo / "m.onnx", size=32)
    target = load_target("jetson-tx2")
    Profile(target_fingerprint(target), target.name, {}, list(samples)).save(
        repo / "plans" / "tx2.profile.json")
    (repo / "m.yaml").write_text(MANIFEST.format(profile=", profile: plans/tx2.profile.json"))
    return repo


def _plan(repo: Path, *extra: str) -> int:
    return main(["plan", str(repo / "m.yaml"), "--target", "tx2", *extra])


def test_a_repo_profile_makes_the_lockfile_reproducible_on_a_fresh_clone(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _plan(project) == 0
    lock = project / "rp.tx2.plan.json"
    text = lock.read_text()
    assert '"source": "repo-profile:plans/tx2.profile.json"' in text
    assert _plan(project, "--check") == 0

    clone = tmp_path / "clone"
    shutil.copytree(project, clone)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "another-machine-cache"))
    assert _plan(clone, "--check") == 0  # the repo holds everything the plan was made from
    assert _plan(clone) == 0 and (clone / "rp.tx2.plan.json").read_text() == text


def test_a_changed_repo_profile_makes_the_lockfile_stale(project: Path, capsys) -> None:
    assert _plan(project) == 0
    path = project / "plans" / "tx2.profile.json"
    prof = read_profile(path)
    prof.samples = prof.samples[: len(prof.samples) // 2]
    prof.save(path)
    capsys.readouterr()
    assert _plan(project, "--check") == ExitCode.STALE
    assert "costmodel changed" in capsys.readouterr().out


def test_a_missing_repo_profile_is_a_manifest_error(project: Path, capsys) -> None:
    (project / "plans" / "tx2.profile.json").unlink()
    assert _plan(project) == 2
    err = capsys.readouterr().err
    assert "m.yaml:5:" in err and "profile file not found" in err and "--export" in err
