"""Which file a runner's onnxruntime session opens for a bundle segment, and why.

A stage's peak memory is mostly onnxruntime's start-up: the graph optimizer holds the weights as
read beside the copies it rewrites (Conv+BN folding, fusions, and on x86 the NCHWc layout that
reorders every conv kernel), so a session over a plain segment peaks at about twice its weights.
An optimised graph saved with its initializers in an external file skips that work, and
onnxruntime maps such initializers from the file instead of copying them. But an optimised graph
is only valid for the onnxruntime version that wrote it, for its execution provider and, once
layout rewrites are in it, for the CPU it was written on. Hence three files, in this order:

1. the board's own cache (``<cache_dir>/<k>.<key>.onnx`` + ``.data``): the fully optimised graph
   the first start of the deployed release on this board wrote, keyed by onnxruntime version,
   CPU and source segment;
2. the bundle's pre-optimised segment (``<k>.opt.onnx``, ``<k>.opt.onnx.data``, sidecar
   ``<k>.opt.json``, written at build time by ``edgedeploy.generator.optimize``): onnxruntime's
   portable ``ORT_ENABLE_EXTENDED`` graph for the CPU provider, used when the sidecar names this
   onnxruntime version;
3. the plain segment ``<k>.onnx``, which every onnxruntime opens (GPU providers always do).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CPU_PROVIDER = "CPUExecutionProvider"
OPTIMIZED_SUFFIX = ".opt.onnx"
OPTIMIZED_LEVEL = "extended"
OPTIMIZED_PROVIDER = CPU_PROVIDER
#: Session config entries that save a session's optimised graph with external initializers.
SAVE_DATA_KEY = "session.optimized_model_external_initializers_file_name"
SAVE_MIN_KEY = "session.optimized_model_external_initializers_min_size_in_bytes"
#: Initializers at least this large go to the external data file (smaller ones stay inline).
EXTERNAL_MIN_BYTES = 1024


def provider_names(providers: Sequence[Any]) -> list[str]:
    """Provider names of a providers list whose entries may be (name, options) pairs."""
    return [str(p[0]) if isinstance(p, tuple | list) else str(p) for p in providers]


def optimized_paths(segment: str | Path) -> dict[str, str]:
    """Where segment ``<dir>/<k>.onnx``'s pre-optimised files live: model, data and sidecar."""
    stem = str(Path(segment).with_suffix(""))
    return {"model": stem + OPTIMIZED_SUFFIX, "data": stem + OPTIMIZED_SUFFIX + ".data",
            "sidecar": stem + ".opt.json"}


def optimized_for(segment: Path, version: str,
                  providers: Sequence[Any]) -> tuple[Path | None, str]:
    """(the pre-optimised model to open for ``segment``, "") when its sidecar matches this
    onnxruntime ``version`` and ``providers``; else (None, why the plain segment is used)."""
    sidecar = Path(optimized_paths(segment)["sidecar"])
    if not sidecar.is_file():
        return None, "no pre-optimised segment"
    try:
        meta = json.loads(sidecar.read_text())
        model = segment.parent / str(meta["model"])
        data = meta.get("data")
        wanted = (str(meta["onnxruntime"]), list(meta["providers"]), int(meta["source_bytes"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable {sidecar.name}: {exc}"
    names = provider_names(providers)
    if wanted[0] != version:
        return None, f"pre-optimised by onnxruntime {wanted[0]}, this is {version}"
    if names != wanted[1]:
        return None, f"pre-optimised for {wanted[1]}, the session uses {names}"
    if not segment.is_file() or segment.stat().st_size != wanted[2]:
        return None, f"{sidecar.name} describes another version of {segment.name}"
    if not model.is_file() or (data and not (segment.parent / str(data)).is_file()):
        return None, f"{sidecar.name} names files the bundle lacks"
    return model, ""


# --- the board's cache -----------------------------------------------------------------------
@functools.cache
def cpu_signature() -> str:
    """What decides onnxruntime's CPU kernels here (and so its layout rewrites): the machine and
    the CPU's feature flags."""
    flags = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.split(":")[0].strip() in ("flags", "Features"):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    return f"{platform.machine()}|{flags or platform.processor()}"


def cached_model(cache_dir: str | Path, segment: Path, version: str) -> Path:
    """Where this board's fully optimised form of ``segment`` lives in ``cache_dir`` (whether
    or not it exists yet): named by a hash of the onnxruntime version, this CPU and the source
    segment (name and size), so an upgrade or another board never picks up a stale one."""
    size = segment.stat().st_size if segment.is_file() else -1
    key = hashlib.sha256(
        f"{version}|{cpu_signature()}|{segment.name}|{size}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{segment.with_suffix('').name}.{key}.onnx"


def in_release(cache_dir: str | Path) -> bool:
    """``cache_dir`` (a stage's ``<bundle>/engine-cache/<stage>``) lies in a deployed release,
    ``<root>/releases/<id>``, the one place a runner writes its cache: a build folder must keep
    exactly the files its SHA256SUMS lists (push refuses others)."""
    parents = Path(cache_dir).resolve().parents
    return len(parents) > 2 and parents[1].parent.name == "releases"


def cache_ready(model: Path) -> bool:
    """The cached model and its data file are both there (published data first, see below)."""
    return model.is_file() and Path(f"{model}.data").is_file()


def drop(model: Path) -> None:
    """Remove a cache entry onnxruntime refused (the model first: no reader sees it half)."""
    for path in (model, Path(f"{model}.data")):
        with contextlib.suppress(OSError):
            path.unlink()


def staging_dir(model: Path) -> Path:
    """A private folder beside ``model`` to write it in (replicas start at the same time)."""
    path = model.parent / f".staging-{os.getpid()}-{model.stem}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def discard(staged: Path) -> None:
    """Drop a staged model that was not finished (its session failed)."""
    shutil.rmtree(staged.parent, ignore_errors=True)


def publish(staged: Path, model: Path) -> bool:
    """Move a staged model (and its ``.data``) into place: data first, then the model, each
    with an atomic rename, so a reader that sees the model also sees its data."""
    data = Path(f"{staged}.data")
    try:
        if not staged.is_file():
            return False
        if data.is_file():
            os.replace(data, f"{model}.data")
        else:  # every initializer was small: an empty data file marks the entry complete
            Path(f"{model}.data").touch()
        os.replace(staged, model)
        return True
    except OSError:
        return False
    finally:
        discard(staged)
