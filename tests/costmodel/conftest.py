"""Every cost-model test gets its own cache directory: profiles never touch the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def no_batches(monkeypatch):
    """A profile that does not time its model batched: for tests that check something else,
    since the batched calls and the replicas' batched runs are a third of a small profile."""
    from edgedeploy.costmodel import segments

    monkeypatch.setattr(segments, "batched_file", lambda m, folder: None)
