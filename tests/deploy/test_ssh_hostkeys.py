"""Strict host keys, ssh_config and ProxyJump against a real sshd."""

from __future__ import annotations

import subprocess

import pytest
from tests.deploy.bundles import make_bundle

from edgedeploy.deploy import api
from edgedeploy.deploy.transport import TransportOptions
from edgedeploy.errors import TargetError, UnreachableError

pytestmark = pytest.mark.ssh


def test_an_unknown_host_key_is_refused_with_how_to_trust_it(sshd, tmp_path):
    empty = TransportOptions(known_hosts=tmp_path / "known_hosts")
    with pytest.raises(UnreachableError, match="unknown host key") as info:
        api.status(sshd.target_ref(), access=empty)
    assert info.value.exit_code == 4
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in str(info.value)
    assert "--accept-new-host-keys" in str(info.value)
    assert not (tmp_path / "known_hosts").exists()


def test_accept_new_records_the_key_and_a_changed_key_is_always_refused(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    trusting = TransportOptions(known_hosts=known, accept_new_host_keys=True)
    api.status(sshd.target_ref(path=str(tmp_path / "b")), access=trusting)
    assert known.read_text() == sshd.known_hosts_line
    api.status(sshd.target_ref(path=str(tmp_path / "b")),
               access=TransportOptions(known_hosts=known))  # now strict mode passes
    before = known.read_text()
    sshd.rotate_host_key()
    try:
        for opts in (trusting, TransportOptions(known_hosts=known)):
            with pytest.raises(UnreachableError, match="HOST KEY CHANGED"):
                api.status(sshd.target_ref(), access=opts)
        assert known.read_text() == before  # the old key is kept, never replaced
    finally:
        sshd.trust()


def test_host_key_policy_accept_new_in_the_manifest_trusts_on_first_use(sshd, tmp_path):
    known = tmp_path / "kh"
    ref = sshd.target_ref(host_key_policy="accept-new", path=str(tmp_path / "b"))
    api.status(ref, access=TransportOptions(known_hosts=known))
    assert known.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")


def test_a_wrong_key_is_an_authentication_failure_not_a_prompt(sshd, tmp_path, access):
    other = tmp_path / "other"

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    ref = sshd.target_ref(identity_file=str(other))
    with pytest.raises(UnreachableError, match="authentication failed") as info:
        api.status(ref, access=access)
    assert info.value.exit_code == 4


def test_ssh_config_aliases_and_proxyjump_are_honoured(sshd, tmp_path, fast):
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config_entry("jump") + sshd.ssh_config_entry(
        "board", ProxyJump="jump", UserKnownHostsFile=str(sshd.known_hosts)))
    opts = TransportOptions(ssh_config=config, known_hosts=sshd.known_hosts)
    path = str(tmp_path / "via-jump")
    result = api.push_bundle(make_bundle(tmp_path, "alpha"), api.resolve_target("board",
                             path=path), access=opts, options=fast)
    assert result.hosts[0].outcome == "deployed"
    api.stop(api.resolve_target("board", path=path), access=opts)


def test_doctor_reports_the_board_and_push_refuses_what_it_lacks(sshd, access, fast, tmp_path):
    (report,) = api.doctor(sshd.target_ref(), access=access,
                           requires=("no-such-dist-xyz",))
    assert report.arch and report.python and report.tools["setsid"]
    (missing,) = report.missing
    if report.externally_managed and not report.venv:  # a PEP 668 system python3 (Debian 12)
        assert "~/edgedeploy-venv/bin/pip install no-such-dist-xyz" in missing
    else:
        assert missing == "no-such-dist-xyz (install: python3 -m pip install no-such-dist-xyz)"
    bundle = make_bundle(tmp_path, "needy", requires=["no-such-dist-xyz"])
    path = tmp_path / "never"
    with pytest.raises(TargetError, match="lacks what this bundle needs") as info:
        api.push_bundle(bundle, sshd.target_ref(path=str(path)), access=access, options=fast)
    assert info.value.exit_code == 2 and not path.exists()
