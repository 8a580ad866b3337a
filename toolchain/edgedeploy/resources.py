"""Where the board descriptors and templates live, installed from a wheel or run from a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """``targets`` or ``templates``: the wheel copy (edgedeploy/_data/NAME) or the checkout's."""
    installed = _PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    checkout = _PACKAGE.parent.parent / name  # toolchain/edgedeploy -> repository root
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"edgedeploy data folder {name!r} not found (broken install?)")


def targets_dir() -> Path:
    return data_dir("targets")


def templates_dir() -> Path:
    return data_dir("templates")
