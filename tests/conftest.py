"""Shared pytest configuration."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings


# Tests never write into the user's real journal, profiles or caches: a throw-away XDG state and
# cache home for the whole session (set before edgedeploy reads them). Pinned third-party model
# downloads stay in the user's cache, so they are fetched once per machine, not once per run.
def _isolate_user_dirs() -> None:
    from platformdirs import user_cache_dir

    os.environ.setdefault("EDGEDEPLOY_MODEL_CACHE",
                          str(Path(user_cache_dir("edgedeploy")) / "thirdparty"))
    root = Path(tempfile.mkdtemp(prefix="edgedeploy-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    for var in ("XDG_STATE_HOME", "XDG_CACHE_HOME"):
        os.environ[var] = str(root / var.lower())


_isolate_user_dirs()

# The real-sshd fixtures edgedeploy ships for users' tests (tests/deploy uses them).
pytest_plugins = ["edgedeploy.testing.sshd"]

# CI machines are small (2 cores) and shared: no deadlines, a modest example count.
settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def zero_weights(monkeypatch):
    """Zoo models built with zero weights, for tests of what does not depend on their values
    (shapes, multiply-accumulates, parameter counts): drawing VGG-16's 138 M seeded normals is
    half of building it."""
    import numpy as np

    from edgedeploy.zoo import builder

    monkeypatch.setattr(builder.GraphBuilder, "_normal",
                        lambda self, shape, std: np.zeros(shape, np.float32))
