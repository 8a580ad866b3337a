"""Synthetic bundles for the deploy tests: real shell runners, no mocks."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgedeploy.deploy.bundle import write_sums

#: Writes a heartbeat every 0.1 s; `crash` exits after its first beat.
RUN_SH = """#!/bin/sh
echo "runner {name} up"
n=0
while :; do
  date +%s > heartbeat
  n=$((n+1))
  {crash}
  sleep 0.1
done
"""
HEALTH_OK = """#!/bin/sh
[ -f "$HOME/.edgedeploy-sick-{name}" ] && {{ echo '{{"ok": false, "why": "sick"}}'; exit 1; }}
[ -f heartbeat ] || {{ echo '{{"ok": false, "why": "no heartbeat"}}'; exit 1; }}
echo '{{"ok": true, "release": "{name}"}}'
"""
HEALTH_FAIL = """#!/bin/sh
echo '{{"ok": false, "why": "smoke inference mismatch"}}'
exit 3
"""


def make_bundle(root: Path, name: str, *, health: str = "ok", crash: bool = False,
                payload: bytes = b"", requires: list[str] | None = None,
                release_id: str | None = None) -> Path:
    """A bundle folder in ``root`` whose runner really runs (and fails as asked)."""
    folder = root / name
    (folder / "runtime").mkdir(parents=True, exist_ok=True)
    (folder / "run.sh").write_text(RUN_SH.format(name=name,
                                                 crash='[ "$n" -ge 2 ] && exit 7' if crash else ""))
    text = HEALTH_OK if health == "ok" else HEALTH_FAIL
    (folder / "health.sh").write_text(text.format(name=name))
    for script in ("run.sh", "health.sh"):
        os.chmod(folder / script, 0o755)
    (folder / "runtime" / "model.bin").write_bytes(payload or name.encode() * 64)
    meta = {"id": release_id or f"{name}-0001", "name": name, "target": "local",
            "plan_sha256": "0" * 64, "entry": "run.sh", "health": "health.sh",
            "python": "python3", "requires": requires or []}
    (folder / "bundle.json").write_text(json.dumps(meta))
    write_sums(folder)
    return folder
