"""Deploy tests run against a real OpenSSH sshd (edgedeploy.testing.sshd) and real runners."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedeploy.deploy.release import ReleaseOptions
from edgedeploy.deploy.transport import TransportOptions


@pytest.fixture
def fast(tmp_path: Path) -> ReleaseOptions:
    """Short health windows: the synthetic runners are up in well under a second."""
    return ReleaseOptions(settle_s=0.5, health_timeout_s=2.0, poll_s=0.2,
                          health_script_timeout_s=5, journal_dir=tmp_path / "journal")


@pytest.fixture
def access(sshd) -> TransportOptions:  # type: ignore[no-untyped-def]
    return TransportOptions(known_hosts=sshd.known_hosts)
