"""Profile files: measured samples of one board, keyed by its hardware fingerprint.

A profile is one JSON document::

    {"schema_version": 1, "format": "edgedeploy-profile",
     "target": {"name": ..., "fingerprint": ...},
     "runtime": {"numpy": ..., "blas": [...], "onnxruntime": ..., "litert": ..., "python": ...},
     "samples": [{"descriptor": {...}, "primitive": "winograd_f4x3/nchw", "config": "cpu:2",
                  "ms": 1.234, "reps": 5, "spread": 0.02, "tag": "fit"}, ...]}

It lives at ``<user cache dir>/edgedeploy/profiles/<fingerprint>.json`` (platformdirs, so
``XDG_CACHE_HOME`` is honoured). Every write goes to a temporary file in the same folder that is
then renamed over the profile, so a crash or a rejected import never leaves a half-written file.
A corrupt file or one of another board raises :class:`ProfileError` and is left untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgedeploy.costmodel.configs import CoreConfig
from edgedeploy.errors import InputError
from edgedeploy.runtime.ir import Descriptor
from edgedeploy.runtime.vocab import canonical_choice
from edgedeploy.schemas.target import Target

SCHEMA_VERSION = 1
FORMAT = "edgedeploy-profile"
TAGS = ("fit", "heldout", "refine")


_DESC_DEFAULTS = {f.name: f.default for f in fields(Descriptor)}


class ProfileError(InputError):
    """A profile file is corrupt, of another schema, or of another board."""


@dataclass(frozen=True)
class Sample:
    """One measurement: a layer shape run with one primitive on one core configuration."""

    descriptor: Descriptor
    primitive: str
    config: CoreConfig
    ms: float
    reps: int = 1
    spread: float = 0.0  # relative interquartile spread of the repetitions
    tag: str = "fit"

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.descriptor.to_dict().items()
             if k == "op" or v != _DESC_DEFAULTS.get(k)}
        return {"descriptor": d, "primitive": self.primitive, "config": self.config.key,
                "ms": round(float(self.ms), 6), "reps": int(self.reps),
                "spread": round(float(self.spread), 4), "tag": self.tag}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        return cls(Descriptor.from_dict(d["descriptor"]), canonical_choice(str(d["primitive"])),
                   CoreConfig.parse(str(d["config"])), float(d["ms"]), int(d.get("reps", 1)),
                   float(d.get("spread", 0.0)), str(d.get("tag", "fit")))


@dataclass
class Profile:
    """All samples of one board (by fingerprint), with the runtime versions that measured them."""

    fingerprint: str
    target_name: str
    runtime: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    path: Path | None = None
    #: The board descriptor the samples were measured on (so a profile alone can seed transfer).
    descriptor: dict[str, Any] | None = None

    def append(self, samples: list[Sample]) -> None:
        self.samples.extend(samples)

    def select(self, tag: str | None = None) -> list[Sample]:
        return [s for s in self.samples if tag is None or s.tag == tag]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "format": FORMAT,
                "target": {"name": self.target_name, "fingerprint": self.fingerprint,
                           "descriptor": self.descriptor},
                "runtime": self.runtime, "samples": [s.to_dict() for s in self.samples]}

    def digest(self) -> str:
        """sha256 of the canonical JSON: what a plan lockfile records as its profile hash."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (temporary file + rename) to ``path`` or where it was loaded from."""
        dest = Path(path) if path is not None else self.path
        if dest is None:
            raise ValueError("profile has no path")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_dict(), fh, indent=0, sort_keys=True)
                fh.write("\n")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if path is None or self.path is None:
            self.path = dest
        return dest


def read_profile(path: str | Path, fingerprint: str | None = None) -> Profile:
    """Load a profile file; a corrupt one, or one of another board when ``fingerprint`` is
    given, raises ProfileError (the file is only read, never modified)."""
    path = Path(path)
    hint = f"delete or re-export it; profiles live in {profiles_dir()}"
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile file",
                           hint="export one with: edgedeploy profile --target NAME --export FILE"
                           ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: not a readable profile ({exc})", hint=hint) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ProfileError(f"{path}: not an edgedeploy profile", hint=hint)
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ProfileError(f"{path}: profile schema version {raw.get('schema_version')!r}, "
                           f"this edgedeploy reads {SCHEMA_VERSION}", hint=hint)
    try:
        tgt = raw["target"]
        prof = Profile(str(tgt["fingerprint"]), str(tgt["name"]), dict(raw.get("runtime", {})),
                       [Sample.from_dict(s) for s in raw["samples"]], path,
                       tgt.get("descriptor"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProfileError(f"{path}: corrupt profile ({type(exc).__name__}: {exc})",
                           hint=hint) from None
    if fingerprint is not None and prof.fingerprint != fingerprint:
        raise ProfileError(
            f"{path}: profile of board {prof.target_name!r} (fingerprint {prof.fingerprint}), "
            f"not of this target (fingerprint {fingerprint})",
            hint="use it as a transfer source instead: edgedeploy costmodel eval "
                 f"--transfer-from {path} --samples 20")
    return prof


# ---- storage ---------------------------------------------------------------------------------

def profiles_dir() -> Path:
    """``<user cache dir>/edgedeploy/profiles`` (XDG_CACHE_HOME honoured on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("edgedeploy")) / "profiles"


def target_fingerprint(target: Target) -> str:
    """The target's fingerprint (detected boards carry one; catalogue boards get one computed)."""
    if target.fingerprint:
        return target.fingerprint
    from edgedeploy.boards.detect import fingerprint

    return fingerprint(target)


def profile_path(target: Target) -> Path:
    return profiles_dir() / f"{target_fingerprint(target)}.json"


def open_profile(target: Target) -> Profile:
    """The stored profile of ``target``, or a new empty one (not written until saved)."""
    path = profile_path(target)
    if path.exists():
        prof = read_profile(path, target_fingerprint(target))
        return prof
    return Profile(target_fingerprint(target), target.name, runtime_versions(), [], path,
                   target.model_dump(mode="json"))


def profile_target(prof: Profile) -> Target:
    """The board a profile was measured on: its embedded descriptor, else the catalogue's."""
    if prof.descriptor:
        try:
            return Target.model_validate(prof.descriptor)
        except ValueError as exc:
            raise ProfileError(f"{prof.path}: embedded board descriptor is invalid: {exc}"
                               ) from None
    from edgedeploy.boards.catalog import load_target

    return load_target(prof.target_name)


def export_profile(target: Target, dest: str | Path) -> Path:
    """Copy the target's stored profile to ``dest`` (atomically); error if there is none."""
    path = profile_path(target)
    if not path.exists():
        raise ProfileError(f"no profile for target {target.name!r} yet",
                           hint=f"measure one first: edgedeploy profile --target {target.name}")
    return read_profile(path, target_fingerprint(target)).save(dest)


def import_profile(target: Target, src: str | Path) -> Profile:
    """Merge the samples of ``src`` (same board fingerprint) into the target's stored profile."""
    incoming = read_profile(src, target_fingerprint(target))
    prof = open_profile(target)
    known = {json.dumps(s.to_dict(), sort_keys=True) for s in prof.samples}
    new = [s for s in incoming.samples if json.dumps(s.to_dict(), sort_keys=True) not in known]
    prof.append(new)
    prof.save()
    return prof


def runtime_versions() -> dict[str, Any]:
    """Versions that shape the timings: numpy and its BLAS, onnxruntime, LiteRT, Python."""
    out: dict[str, Any] = {"python": platform.python_version()}
    import numpy as np

    out["numpy"] = np.__version__
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = sorted(f"{i.get('internal_api')} {i.get('version')} "
                             f"{i.get('architecture', '')}".strip()
                             for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:  # pragma: no cover
        out["blas"] = []
    for key, module in (("onnxruntime", "onnxruntime"), ("litert", "ai_edge_litert")):
        try:
            from importlib.metadata import version

            out[key] = version("ai-edge-litert" if module == "ai_edge_litert" else module)
        except Exception:
            out[key] = None
    return out
