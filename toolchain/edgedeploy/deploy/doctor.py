"""``doctor``: what a board has and lacks for a bundle (architecture, Python, numpy, engines).

Asked before anything is uploaded, so a push to a board without numpy is refused with the list of
what to install instead of failing half-way. Versions come from package metadata, not imports:
importing onnxruntime on a small board takes seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgedeploy.deploy import scripts
from edgedeploy.deploy.transport import Transport
from edgedeploy.errors import TargetError

MIN_PYTHON = (3, 10)
#: Board tools the supervised runner needs (util-linux setsid, coreutils timeout).
REQUIRED_TOOLS = ("setsid", "timeout")


@dataclass
class DoctorReport:
    """What a board has (versions; None: absent) and what a bundle would miss there."""

    host: str
    python_cmd: str
    arch: str | None = None
    python: str | None = None
    numpy: str | None = None
    onnxruntime: str | None = None
    litert: str | None = None
    requires: dict[str, str | None] = field(default_factory=dict)
    tools: dict[str, bool] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def doctor(transport: Transport, python: str = "python3",
           requires: tuple[str, ...] | list[str] = ("numpy",)) -> DoctorReport:
    """Inspect the board; ``missing`` lists each requirement it lacks, with how to get it."""
    report = DoctorReport(host=transport.label, python_cmd=python)
    res = transport.run([python, "-c", scripts.DOCTOR_PY, *requires], changes=False,
                        check=False, what="doctor", timeout=60)
    facts: dict[str, Any] = {}
    if res.ok:
        try:
            facts = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            facts = {}
    if not facts:
        report.missing.append(f"python ({python} did not run: exit {res.exit_code}; install "
                              f"Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]})")
        return report
    for key in ("arch", "python", "numpy", "onnxruntime", "litert"):
        setattr(report, key, facts.get(key))
    report.requires = dict(facts.get("requires") or {})
    report.tools = dict(facts.get("tools") or {})
    version = tuple(int(p) for p in str(report.python).split(".")[:2] if p.isdigit())
    if version < MIN_PYTHON:
        report.missing.append(f"python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} "
                              f"(board has {report.python})")
    for name, found in sorted(report.requires.items()):
        if found is None:
            report.missing.append(f"{name} (install: {python} -m pip install {name})")
    for tool in REQUIRED_TOOLS:
        if not report.tools.get(tool):
            report.missing.append(f"{tool} (install util-linux / coreutils)")
    return report


def require(report: DoctorReport) -> None:
    """Refuse a push to a board that lacks something the bundle needs."""
    if report.missing:
        raise TargetError(f"{report.host} lacks what this bundle needs: "
                          + "; ".join(report.missing),
                          hint="install them on the board (see `edgedeploy doctor`) and push "
                               "again; nothing was changed")
