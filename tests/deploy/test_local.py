"""The local transport (a board folder on this host), dry runs and the bundle contract."""

from __future__ import annotations

import json

import pytest
from tests.deploy.bundles import make_bundle

from edgedeploy.deploy import api
from edgedeploy.deploy.bundle import BundleError, load_bundle, write_sums
from edgedeploy.deploy.local import LocalTransport


def test_a_dry_run_lists_what_would_change_and_changes_nothing(tmp_path, fast):
    board = tmp_path / "board"
    result = api.push_bundle(make_bundle(tmp_path, "alpha"), f"local:{board}", dry_run=True,
                             options=fast)
    host = result.hosts[0]
    assert host.outcome == "dry-run" and host.dry_run
    assert any(c.startswith("setsid -f sh -c") for c in host.commands)
    assert any(c.startswith("put ") and c.endswith("/run.sh") for c in host.commands)
    assert not board.exists() and not fast.journal_dir.exists()


def test_a_local_push_then_rollback_restores_the_previous_release(tmp_path, fast):
    spec = f"local:{tmp_path / 'board'}"
    for name in ("alpha", "beta"):
        api.push_bundle(make_bundle(tmp_path, name), spec, options=fast)
    back = api.rollback(spec, options=fast).hosts[0]
    assert (back.previous, back.current, back.outcome) == ("beta-0001", "alpha-0001", "ok")
    (row,) = api.status(spec)
    assert row["running"] == "alpha-0001" and row["alive"]
    assert api.stop(spec).hosts[0].message == "stopped alpha-0001"
    assert api.status(spec)[0]["alive"] is False


def test_argv_reaches_the_board_verbatim(tmp_path):
    hostile = ["a b", "'q\"", "$(touch x)", ";rm -rf /", "new\nline", ""]
    res = LocalTransport().run(["printf", "%s|", *hostile], changes=False)
    assert res.stdout == "|".join(hostile) + "|"


def test_a_bundle_whose_checksums_lie_is_refused_before_upload(tmp_path):
    bundle = make_bundle(tmp_path, "alpha")
    (bundle / "runtime" / "model.bin").write_bytes(b"tampered")
    with pytest.raises(BundleError, match=r"checksum mismatch for runtime/model\.bin"):
        load_bundle(bundle)


@pytest.mark.parametrize("bad_id", ["../x", "a b", "", "-x", "a/b"])
def test_a_release_id_that_is_not_a_safe_folder_name_is_refused(tmp_path, bad_id):
    bundle = make_bundle(tmp_path, "alpha")
    meta = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**meta, "id": bad_id}))
    write_sums(bundle)
    with pytest.raises(BundleError, match="not a release id"):
        load_bundle(bundle)


def test_host_specs_parse_to_target_refs():
    ref = api.resolve_target("deploy@board:2222", path="/opt/ed")
    assert (ref.host, ref.user, ref.port, ref.path, ref.transport) == (
        "board", "deploy", 2222, "/opt/ed", "ssh")
    assert api.resolve_target("local:/srv/x").transport == "local"
