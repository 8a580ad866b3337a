"""`edgedeploy init`: a starter manifest and the Makefile include for a firmware repository."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgedeploy.errors import InputError
from edgedeploy.resources import templates_dir

MANIFEST = "edgedeploy.yaml"
MAKE_INCLUDE = "edgedeploy.mk"

_TEMPLATE = """\
# edgedeploy manifest: check it with `edgedeploy validate {manifest}`, plan with
# `edgedeploy plan {manifest}`, deploy with `edgedeploy push -m {manifest} --target {alias}`.
# Paths are relative to this file. No passwords here: use ssh-agent or identity_file.
name: {name}
model:
  path: {model}
objective: throughput          # throughput | latency | energy
constraints: {{}}                # max_latency_ms, min_throughput_fps, max_power_w, max_memory_mb
pipeline:
  max_stages: 4
  allow_replication: true
targets:
  local:
    board: local               # this host, detected at plan time
{device}measure:                       # measure to decide on this host or a sim: twin
  budget_s: 60
  shortlist: 4
refine:                        # on the board after push
  budget_s: 120
  max_evals: 30
  frames_per_eval: 50
output:
  plans_dir: plans
  build_dir: build/edgedeploy
"""

_DEVICE = """\
  {alias}:
    board: {board}
    host: {board}.local        # edit: host name or an alias from ~/.ssh/config
    host_key_policy: strict
    # python: /home/USER/venv/bin/python   # the board's interpreter (default: the board's)
"""


@dataclass(frozen=True)
class InitResult:
    directory: Path
    written: tuple[str, ...]
    validated: bool

    def to_dict(self) -> dict[str, object]:
        return {"directory": str(self.directory), "written": list(self.written),
                "validated": self.validated}


def init_project(directory: str | Path = ".", *, model: str | Path | None = None,
                 board: str | None = None, force: bool = False) -> InitResult:
    """Write edgedeploy.yaml and edgedeploy.mk into ``directory``; never overwrite without force.

    The manifest is validated with ``load_manifest`` when its model file exists.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    existing = [n for n in (MANIFEST, MAKE_INCLUDE) if (root / n).exists()]
    if existing and not force:
        raise InputError(f"{', '.join(str(root / n) for n in existing)} already exist(s)",
                         hint="pass --force to overwrite")
    model_rel = _model_path(root, model)
    alias = "device" if board and board != "local" else "local"
    text = _TEMPLATE.format(
        manifest=MANIFEST, alias=alias, name=_name(root), model=model_rel,
        device=_DEVICE.format(alias=alias, board=board) if alias == "device" else "")
    (root / MANIFEST).write_text(text)
    shutil.copyfile(templates_dir() / "make" / MAKE_INCLUDE, root / MAKE_INCLUDE)
    validated = (root / model_rel).exists()
    if validated:
        from edgedeploy.schemas import load_manifest

        load_manifest(root / MANIFEST)
    return InitResult(root, (MANIFEST, MAKE_INCLUDE), validated)


def _model_path(root: Path, model: str | Path | None) -> str:
    if model is None:
        found = sorted(p.name for p in root.iterdir() if p.suffix in (".onnx", ".tflite"))
        return found[0] if len(found) == 1 else "model.onnx"
    path = Path(model)
    if not path.exists():
        raise InputError(f"model file not found: {path}")
    return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()


def _name(root: Path) -> str:
    import re

    cleaned = re.sub(r"[^a-z0-9_-]+", "-", root.resolve().name.lower()).strip("-_")
    return cleaned if cleaned and cleaned[0].isalpha() else "app"
