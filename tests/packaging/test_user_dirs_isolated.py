"""The test session never writes into the user's real journal, profiles or caches."""

from __future__ import annotations

import os
from pathlib import Path

from edgedeploy.costmodel.profile import profiles_dir as profile_dir
from edgedeploy.deploy.journal import default_journal_dir as journal_dir
from edgedeploy.testing.thirdparty import cache_dir


def _inside(path: Path, var: str) -> bool:
    return path.resolve().is_relative_to(Path(os.environ[var]).resolve())


def test_journal_and_profiles_go_to_the_sessions_throwaway_dirs() -> None:
    home = Path.home().resolve()
    assert _inside(journal_dir(), "XDG_STATE_HOME")
    assert _inside(profile_dir(), "XDG_CACHE_HOME")
    for path in (journal_dir(), profile_dir()):
        assert not path.resolve().is_relative_to(home / ".local" / "state")
        assert not path.resolve().is_relative_to(home / ".cache")


def test_pinned_model_downloads_keep_one_cache_per_machine() -> None:
    assert cache_dir() == Path(os.environ["EDGEDEPLOY_MODEL_CACHE"])
    assert not _inside(cache_dir(), "XDG_CACHE_HOME")
