"""A fleet of real sshd "boards" (each its own $HOME): parallel pushes, serial, max-fail."""

from __future__ import annotations

import pytest
from tests.deploy.bundles import make_bundle

from edgedeploy.deploy import api
from edgedeploy.deploy.fleet import FleetError, batches, percent
from edgedeploy.deploy.transport import TransportOptions
from edgedeploy.schemas.manifest import TargetRef

pytestmark = pytest.mark.ssh


@pytest.fixture
def fleet(sshd_factory, tmp_path):  # type: ignore[no-untyped-def]
    servers = [sshd_factory(f"b{i}") for i in range(3)]
    config = tmp_path / "ssh_config"
    config.write_text("".join(s.ssh_config_entry(f"board-{i}") for i, s in enumerate(servers)))
    known = tmp_path / "known_hosts"
    known.write_text("".join(s.known_hosts_line for s in servers))
    access = TransportOptions(ssh_config=config, known_hosts=known)
    ref = TargetRef(hosts=[f"board-{i}" for i in range(3)], path="~/edgedeploy")
    return servers, ref, access


def test_a_fleet_push_rolls_back_the_failing_host_and_the_others_proceed(fleet, fast, tmp_path):
    servers, ref, access = fleet
    api.push_bundle(make_bundle(tmp_path, "alpha"), ref, alias="edge", access=access,
                    options=fast)
    try:
        _fail_one_of_three(servers, ref, access, fast, tmp_path)
    finally:
        api.stop(ref, access=access, check=False)


def _fail_one_of_three(servers, ref, access, fast, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (servers[1].home / ".edgedeploy-sick-beta").write_text("")  # board-1's new release fails health
    with pytest.raises(FleetError) as info:
        api.push_bundle(make_bundle(tmp_path, "beta"), ref, alias="edge", access=access,
                        options=fast)
    result = info.value.result
    assert info.value.exit_code == 5
    assert [h.outcome for h in result.hosts] == ["deployed", "rolled-back", "deployed"]
    assert [h.current for h in result.hosts] == ["beta-0001", "alpha-0001", "beta-0001"]
    cols, rows = result.table()
    assert cols[:2] == ["host", "outcome"] and rows[1][0].startswith(f"{servers[1].user}@board-1")
    assert rows[1][1] == "rolled-back"
    rows = api.status(ref, access=access)
    assert [(r["running"], r["alive"]) for r in rows] == [
        ("beta-0001", True), ("alpha-0001", True), ("beta-0001", True)]


def test_serial_batches_stop_after_max_fail_is_exceeded(fleet, fast, tmp_path):
    servers, ref, access = fleet
    servers[0].stop()  # board-0 is down: its batch fails 100 %
    result = api.push_bundle(make_bundle(tmp_path, "alpha"), ref, access=access, options=fast,
                             serial=1, max_fail_percent=0, check=False)
    assert [h.outcome for h in result.hosts] == ["unreachable", "skipped", "skipped"]
    assert result.aborted and result.exit_code == 4


def test_batches_and_percent_follow_ansible():
    assert batches(["a", "b", "c"], 2) == [["a", "b"], ["c"]]
    assert batches(["a", "b"], None) == [["a", "b"]]
    assert percent("25%") == 25.0
    with pytest.raises(ValueError):
        percent(120)
