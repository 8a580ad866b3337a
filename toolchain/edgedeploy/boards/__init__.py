"""Boards: the shipped catalogue (targets/*.yaml) and the detected local host."""

from __future__ import annotations

from edgedeploy.boards.catalog import LOCAL, list_targets, load_target
from edgedeploy.boards.detect import detect_local, fingerprint

__all__ = ["LOCAL", "detect_local", "fingerprint", "list_targets", "load_target"]
