"""The lockfiles committed under ``plans/`` are what the planner writes now: a change to the
planner or the prior that moves them fails here, not silently in a user's `plan --check`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from edgedeploy import zoo
from edgedeploy.cli.main import main

PLANS = Path(__file__).resolve().parents[2] / "plans"


def _committed() -> list[tuple[str, str, str]]:
    """(manifest file, target alias, lockfile name) for every lockfile of a board's target under
    ``plans/``; those of this host's target (``board: local``) are measured here, never
    committed (``.gitignore``)."""
    out = []
    for manifest in sorted(PLANS.glob("*.yaml")):
        # read as YAML, not validated: its model is exported by the test (as by `make demo`)
        doc = YAML(typ="safe").load(manifest.read_text())
        for alias, target in sorted(doc["targets"].items()):
            lock = PLANS / f"{doc['name']}.{alias}.plan.json"
            if target.get("board") != "local" and lock.exists():
                out.append((manifest.name, alias, lock.name))
    return out


def test_every_board_lockfile_has_its_manifest() -> None:
    boards = {p.name for p in PLANS.glob("*.plan.json") if ".local." not in p.name}
    assert boards and {lock for _, _, lock in _committed()} == boards


@pytest.mark.parametrize(("manifest", "alias", "lock"), _committed())
def test_a_committed_lockfile_is_up_to_date(manifest: str, alias: str, lock: str,
                                            tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no profile: the prior's plan
    shutil.copytree(PLANS, tmp_path / "plans")
    (tmp_path / "demo-out").mkdir()
    zoo.export("mobilenet_v2", tmp_path / "demo-out" / "mobilenet_v2.onnx")  # as `make demo`
    assert main(["plan", str(tmp_path / "plans" / manifest), "--target", alias, "--no-measure",
                 "--check"]) == 0, f"{lock} is stale: plan it again with --no-measure"
