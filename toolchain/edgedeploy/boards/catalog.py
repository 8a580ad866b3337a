"""The board catalogue: descriptors shipped in ``targets/`` plus ``local`` (this host, detected)."""

from __future__ import annotations

from pathlib import Path

from edgedeploy.errors import TargetError, did_you_mean
from edgedeploy.resources import targets_dir
from edgedeploy.runtime.vocab import LOCAL
from edgedeploy.schemas.loader import load_yaml_model
from edgedeploy.schemas.manifest import is_board_path
from edgedeploy.schemas.target import Target, catalog_names


def list_targets() -> list[str]:
    """Names of the shipped descriptors (sorted) followed by ``local``."""
    return catalog_names()


def load_target(name_or_path: str | Path) -> Target:
    """A board by catalogue name, ``local`` (detected now), or a path to a descriptor YAML."""
    text = str(name_or_path)
    if text == LOCAL:
        from edgedeploy.boards.detect import detect_local

        return detect_local()
    if isinstance(name_or_path, Path) or is_board_path(text):
        return load_yaml_model(Path(text), Target, TargetError)
    path = targets_dir() / f"{text}.yaml"
    if not path.is_file():
        known = list_targets()
        guess = did_you_mean(text, known)
        raise TargetError(f"unknown board {text!r}{guess}",
                          hint=f"known boards: {', '.join(known)}; or give a path to a YAML file")
    return load_yaml_model(path, Target, TargetError)
