"""The README's firmware journey, as a firmware repository runs it: `edgedeploy init` writes the
manifest and edgedeploy.mk, the repo's own Makefile includes it beside its own `firmware:` and
`build:` targets, the plan lockfile is committed, and CI runs
`release: firmware edgedeploy-check edgedeploy-push` -- on every release, not only the first.

Everything is real: make, the installed `edgedeploy` command on PATH, a zoo model, a local-
directory board whose runner really runs, and the refinement push does by default (its budget
kept small in the manifest). The board's profile cache starts empty, as on a new machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

LOCKFILE = "plans/fw.local.plan.json"
REFINED = "plans/fw.local.refined.plan.json"
MAKEFILE = """\
# Makefile of a firmware repo
TARGET ?= local
include edgedeploy.mk          # plan / build / push / status / logs / rollback targets

.PHONY: firmware build release
firmware:
\t@echo "firmware: compiling" && echo image > firmware.bin

build:
\t@echo "build: the repo's own build" && echo own > own-build.txt

release: firmware edgedeploy-check edgedeploy-push   # CI: fail on a stale plan, then deploy
"""


@dataclass
class Repo:
    root: Path
    env: dict[str, str]
    committed: bytes = b""  # the lockfile as `make edgedeploy-plan` wrote it

    def run(self, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def make(self, *goals: str) -> subprocess.CompletedProcess[str]:
        return self.run("make", "--no-print-directory", *goals)

    def release(self, path: str) -> dict:
        return json.loads((self.root / "board" / "releases" / path / "bundle.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pushed(out: str) -> list[str]:
    """The release ids a `make release` deployed, in order (the push, then refinement's)."""
    found = re.findall(r"^push: release (\w+)|^refine: starting release (\w+)", out, re.M)
    return [a or b for a, b in found]


def _edit_manifest(path: Path) -> None:
    """What a user edits in init's starter manifest: the board is a local folder; measure to
    decide is off and refinement measures only the deployed plan (one evaluation of 8 frames:
    it still feeds the board's profile and writes the refined plan), so a release takes
    seconds, not minutes."""
    yaml = YAML()
    doc = yaml.load(path)
    doc["targets"]["local"]["path"] = "board"
    doc["measure"]["enabled"] = False
    doc["refine"].update(budget_s=10, max_evals=1, frames_per_eval=8)
    yaml.dump(doc, path)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    """A firmware repo after `edgedeploy init`, its lockfile planned and committed."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    bindir = Path(sys.executable).parent
    if not (bindir / "edgedeploy").exists():
        pytest.skip(f"the edgedeploy command is not installed in {bindir}")
    tmp = tmp_path_factory.mktemp("firmware")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", HOME=str(tmp / "home"),
               XDG_CACHE_HOME=str(tmp / "cache"), XDG_STATE_HOME=str(tmp / "state"))
    found = Repo(tmp / "fw", env)
    found.root.mkdir()
    for argv in (("edgedeploy", "zoo", "export", "squeezenet1_1", "-o", "model.onnx",
                  "--size", "32"),
                 ("edgedeploy", "init", ".", "--model", "model.onnx")):
        done = found.run(*argv)
        assert done.returncode == 0, done.stderr
    _edit_manifest(found.root / "edgedeploy.yaml")
    (found.root / "Makefile").write_text(MAKEFILE)
    done = found.make("edgedeploy-plan")
    assert done.returncode == 0, done.stdout + done.stderr
    found.committed = (found.root / LOCKFILE).read_bytes()
    yield found
    found.run("edgedeploy", "stop", "-m", "edgedeploy.yaml", "--target", "local")


@pytest.fixture(scope="module")
def first(repo: Repo) -> subprocess.CompletedProcess[str]:
    return repo.make("release")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_make_release_builds_the_firmware_checks_the_plan_then_deploys_and_refines(
        repo: Repo, first) -> None:  # type: ignore[no-untyped-def]
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    steps = [out.index("firmware: compiling"), out.index("--check"),
             out.index(f"{LOCKFILE}: up to date"), out.index("push -m \"edgedeploy.yaml\"")]
    assert steps == sorted(steps), out  # the prerequisites in the order release names them
    assert (repo.root / "firmware.bin").exists()
    pushed = _pushed(out)
    assert len(pushed) == 2, out  # the deploy, then the release refinement started
    assert (repo.root / REFINED).is_file()  # refinement wrote the plan the next push keeps
    status = repo.run("edgedeploy", "status", "--target", "local", "--json")
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)["hosts"]
    assert row["alive"] and row["current"] == pushed[-1]
    assert (repo.root / LOCKFILE).read_bytes() == repo.committed  # push never rewrote it


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_second_make_release_passes_and_keeps_the_refined_plan(
        repo: Repo, first) -> None:  # type: ignore[no-untyped-def]
    assert first.returncode == 0
    refined = _sha(repo.root / REFINED)
    check = repo.make("edgedeploy-check")  # what CI runs right after the push
    assert check.returncode == 0, check.stdout + check.stderr
    second = repo.make("release")
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "keeping the refined plan" in out, out
    deployed = _pushed(out)[0]  # built from the refined plan, not re-planned
    assert repo.release(deployed)["plan_sha256"] == refined
    assert repo.release(deployed)["plan_sha256"] != _sha(repo.root / LOCKFILE)
    assert (repo.root / LOCKFILE).read_bytes() == repo.committed


def test_make_build_runs_the_repos_own_target_and_nothing_of_edgedeploy(repo: Repo) -> None:
    done = repo.make("build")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "build: the repo's own build\n", done.stdout
    assert (repo.root / "own-build.txt").exists()
    assert not (repo.root / "build" / "edgedeploy" / "local").exists()
    default = repo.make("-n")  # the include never changes the default goal
    assert default.stdout.startswith('echo "firmware: compiling"'), default.stdout
    prefixed = repo.make("-n", "edgedeploy-build")  # its own targets stay reachable
    assert 'edgedeploy  build "edgedeploy.yaml" --target "local"' in prefixed.stdout
