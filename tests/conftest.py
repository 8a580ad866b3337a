"""Shared pytest configuration."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# The real-sshd fixtures edgedeploy ships for users' tests (tests/deploy uses them).
pytest_plugins = ["edgedeploy.testing.sshd"]

# CI machines are small (2 cores) and shared: no deadlines, a modest example count.
settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
