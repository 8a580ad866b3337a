"""The deployer's side of the bundle contract: what a directory must hold to be pushed.

A bundle is a directory with ``bundle.json`` (id, name, target, plan_sha256, entry, health,
python, optional requires), ``SHA256SUMS`` ("<sha256>  <relative path>" for every other file,
sorted) and the files it lists. It is checked here before anything touches a board, so a
half-written or tampered bundle never leaves this machine. ``requires`` lists Python distribution
names and ``provider:<Name>`` entries (an onnxruntime execution provider the board must offer,
e.g. ``provider:CUDAExecutionProvider`` for a stage planned onto the GPU).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgedeploy.errors import InputError

#: Release ids name folders on the board: a strict alphabet keeps them out of any quoting trouble.
RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SUMS = "SHA256SUMS"
META = "bundle.json"
#: Python distributions a generated bundle needs unless bundle.json says otherwise.
DEFAULT_REQUIRES = ("numpy",)
#: ``provider:<Name>`` in ``requires``: the board's onnxruntime must offer that execution provider.
PROVIDER_PREFIX = "provider:"
#: ``cpu:<feature>`` in ``requires``: the board's cores must offer that arithmetic (``fp16``: a
#: stage whose LiteRT segments compute fp16; ``runtime.engines.CPU_FP16``).
CPU_PREFIX = "cpu:"
CPU_FEATURES = ("fp16",)
#: A distribution name as PEP 508 spells it (no version specifier: doctor looks it up verbatim).
_DIST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
#: onnxruntime provider names are identifiers (CUDAExecutionProvider, TensorrtExecutionProvider).
_PROVIDER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class BundleError(InputError):
    """The bundle directory breaks the contract (missing files, bad checksums, bad paths)."""


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative POSIX path
    sha256: str
    size: int


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on this machine, ready to upload."""

    root: Path
    id: str
    name: str
    target: str
    plan_sha256: str
    entry: str
    health: str
    python: str
    requires: tuple[str, ...]
    files: tuple[BundleFile, ...] = field(repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_rel(rel: str, where: str) -> str:
    pure = PurePosixPath(rel)
    if (not rel or pure.is_absolute() or ".." in pure.parts or "\n" in rel or "\\" in rel
            or rel != str(pure)):
        raise BundleError(f"{where}: unsafe path {rel!r} (must be relative, normalised, no '..')")
    return rel


def parse_requirement(entry: str, where: str = META) -> tuple[str, str]:
    """Split one ``requires`` entry into ``("provider", name)``, ``("cpu", feature)`` or
    ``("dist", name)``.

    Checked here, before anything reaches a board, so a typo such as ``provider:`` is reported
    against the bundle instead of showing up later as a puzzling "missing" on every board.
    """
    if entry.startswith(PROVIDER_PREFIX):
        name = entry[len(PROVIDER_PREFIX):]
        if not _PROVIDER_NAME.match(name):
            raise BundleError(f"{where}: requirement {entry!r} does not name an onnxruntime "
                              "execution provider",
                              hint="write it as provider:<Name>, e.g. "
                                   "provider:CUDAExecutionProvider")
        return "provider", name
    if entry.startswith(CPU_PREFIX):
        feature = entry[len(CPU_PREFIX):]
        if feature not in CPU_FEATURES:
            known = ", ".join(CPU_PREFIX + f for f in CPU_FEATURES)
            raise BundleError(f"{where}: requirement {entry!r} names no CPU feature edgedeploy "
                              "checks", hint=f"one of: {known}")
        return "cpu", feature
    if not _DIST_NAME.match(entry):
        raise BundleError(f"{where}: requirement {entry!r} is neither a Python distribution name "
                          f"nor {PROVIDER_PREFIX}<Name>",
                          hint="e.g. numpy, ONNXRUNTIME or provider:CUDAExecutionProvider "
                               "(no version specifiers)")
    return "dist", entry


def _read_sums(root: Path) -> dict[str, str]:
    sums_path = root / SUMS
    if not sums_path.is_file():
        raise BundleError(f"{root}: not a bundle: {SUMS} is missing",
                          hint="build it with `edgedeploy build PLAN -o DIR`")
    sums: dict[str, str] = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), 1):
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not match:
            raise BundleError(f"{sums_path}:{number}: not a '<sha256>  <path>' line: {line!r}")
        sums[_safe_rel(match.group(2), f"{sums_path}:{number}")] = match.group(1)
    return sums


def _read_meta(root: Path) -> dict[str, object]:
    try:
        meta = json.loads((root / META).read_text())
    except FileNotFoundError:
        raise BundleError(f"{root}: not a bundle: {META} is missing") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{root / META}: unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{root / META}: must hold a JSON object")
    return meta


def load_bundle(root: str | Path) -> Bundle:
    """Read and verify a bundle directory; a BundleError names the first thing wrong."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"bundle folder not found: {root}")
    meta = _read_meta(root)
    release_id = str(meta.get("id", ""))
    if not RELEASE_ID.match(release_id):
        raise BundleError(f"{root / META}: id {release_id!r} is not a release id "
                          "(letters, digits, '.', '_', '-'; at most 128)")
    sums = _read_sums(root)
    present = {p.relative_to(root).as_posix() for p in root.rglob("*")
               if p.is_file() or p.is_symlink()}
    present.discard(SUMS)
    unlisted = sorted(present - set(sums) - {META})
    if unlisted:
        raise BundleError(f"{root}: files not in {SUMS}: {', '.join(unlisted[:5])}")
    files = []
    for rel, digest in sorted(sums.items()):
        path = root / rel
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"{root}: {rel} is listed in {SUMS} but is not a regular file")
        if sha256_file(path) != digest:
            raise BundleError(f"{root}: checksum mismatch for {rel}: the bundle is corrupt",
                              hint="rebuild it with `edgedeploy build`")
        files.append(BundleFile(rel, digest, path.stat().st_size))
    if META not in sums:
        files.append(BundleFile(META, sha256_file(root / META), (root / META).stat().st_size))
    entry = _safe_rel(str(meta.get("entry", "run.sh")), f"{root / META} entry")
    health = _safe_rel(str(meta.get("health", "health.sh")), f"{root / META} health")
    for script in (entry, health):
        if script not in sums:
            raise BundleError(f"{root}: {script} (from {META}) is not in the bundle")
    requires = meta.get("requires", list(DEFAULT_REQUIRES))
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise BundleError(f"{root / META}: requires must be a list of distribution names "
                          f"and {PROVIDER_PREFIX}<Name> entries")
    for requirement in requires:
        parse_requirement(requirement, str(root / META))
    return Bundle(root=root, id=release_id, name=str(meta.get("name", release_id)),
                  target=str(meta.get("target", "")), plan_sha256=str(meta.get("plan_sha256", "")),
                  entry=entry, health=health, python=str(meta.get("python", "python3")),
                  requires=tuple(requires), files=tuple(files))


def write_sums(root: str | Path) -> None:
    """Write SHA256SUMS for every file under ``root`` (for tests and hand-made bundles)."""
    root = Path(root)
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}"
             for p in sorted(root.rglob("*")) if p.is_file() and p.name != SUMS]
    (root / SUMS).write_text("\n".join(sorted(lines, key=lambda s: s[66:])) + "\n")
