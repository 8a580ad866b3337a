"""The plan lockfile: canonical JSON of every choice and prediction plus the hashes of its inputs.

Terraform-shaped (STYLE.md, 7): same inputs give a byte-identical file -- sorted keys, floats
written with 6 significant digits (so last-bit noise of a BLAS never changes the file), no
timestamps, paths relative to the lockfile. ``inputs`` hashes the model file, the manifest file,
the target descriptor (its validated JSON, so comments and key order do not matter) and the cost
model (prior version + calibration from the profile); a lockfile whose recorded hashes differ
from the current ones is *stale* -- except a profile's, recorded as information only
(:func:`stale_reasons`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.schemas.plan import SCHEMA_VERSION  # noqa: F401  (the lockfile's, re-exported)
from edgedeploy.schemas.target import Target

#: Bumped when the planner's algorithm changes what it would write for the same inputs.
PLANNER_VERSION = 2
FLOAT_DIGITS = 6


def canonical_value(value: Any) -> Any:
    """Floats rounded to FLOAT_DIGITS significant digits, non-finite as null, tuples as lists."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return float(f"{x:.{FLOAT_DIGITS}g}") if math.isfinite(x) else None
    if isinstance(value, dict):
        return {str(k): canonical_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical_value(v) for v in value]
    return str(value)


def dumps(doc: dict[str, Any]) -> str:
    """The canonical text of a lockfile document."""
    return json.dumps(canonical_value(doc), sort_keys=True, indent=1, ensure_ascii=True,
                      allow_nan=False) + "\n"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_calibration(path: str | Path) -> str:
    """Calibration frames' digest: an .npz's bytes, or a folder's images (names and bytes, in
    name order; how they become frames is the manifest's io.preprocess, hashed with it)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    from edgedeploy.runtime.preprocess import image_files

    h = hashlib.sha256()
    for f in image_files(path):
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def target_digest(target: Target) -> str:
    """Hash of the validated descriptor (a detected local target hashes its hardware facts)."""
    data = target.model_dump(mode="json")
    return sha256_text(json.dumps(data, sort_keys=True))


def relpath(path: str | Path, start: str | Path) -> str:
    """``path`` relative to ``start`` in POSIX form (stable across checkouts)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).resolve().as_posix()


def input_hashes(manifest_path: str | Path, model_path: str | Path, target: Target,
                 costmodel_digest: str, costmodel_source: str,
                 calibration: str | Path | None = None) -> dict[str, Any]:
    """The ``inputs`` block: what the plan was computed from, hashed (the calibration frames
    of an int8 plan too, when the manifest names a file)."""
    extra = {"calibration": {"sha256": sha256_calibration(calibration)}} if calibration else {}
    return {
        **extra,
        "manifest": {"sha256": sha256_file(manifest_path)},
        "model": {"sha256": sha256_file(model_path)},
        "target": {"name": target.name, "sha256": target_digest(target)},
        "costmodel": {"sha256": costmodel_digest, "source": costmodel_source},
        "planner_version": PLANNER_VERSION,
    }


#: Cost-model source prefix of a profile kept in the repository (``targets.<alias>.profile``).
REPO_PROFILE = "repo-profile:"


def reproducible(recorded: dict[str, Any]) -> bool:
    """Whether a lockfile's cost model can be rebuilt from what a repository holds: the prior
    is code and a profile the manifest names is a file in the repo; the board's cached profile
    lives on one machine and grows with every refinement."""
    source = str((recorded.get("costmodel") or {}).get("source", "prior"))
    return source == "prior" or source.startswith(REPO_PROFILE)


def stale_reasons(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Which inputs changed since the lockfile was written (empty: up to date).

    The model, the manifest, the target and the planner version always count. The cost model
    counts only when both the lockfile's and the current one come from what a repository holds
    (the prior, or a profile the manifest keeps there): a cached profile's digest is recorded
    as information (what the plan was computed from) but measurements feeding it -- refinement
    does that on every push -- must not make a committed lockfile stale.
    """
    reasons = []
    # like for like or not at all: a lockfile planned from the prior stays fresh when this
    # machine has since profiled the board (refinement does), until its inputs change
    comparable = reproducible(recorded) and reproducible(current)
    keys = ("model", "manifest", "target") + (("costmodel",) if comparable else ())
    if "calibration" in recorded or "calibration" in current:
        keys += ("calibration",)
    for key in keys:
        old = (recorded.get(key) or {}).get("sha256")
        new = (current.get(key) or {}).get("sha256")
        if old != new:
            reasons.append(f"{key} changed (sha256 {str(old)[:12]} -> {str(new)[:12]})")
    if recorded.get("planner_version") != current["planner_version"]:
        reasons.append(f"planner version {recorded.get('planner_version')} -> "
                       f"{current['planner_version']}")
    return reasons


def read_lock(path: str | Path) -> dict[str, Any] | None:
    """The JSON of an existing lockfile, or None if missing or unreadable (treated as stale)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
