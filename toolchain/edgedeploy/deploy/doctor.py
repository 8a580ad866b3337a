"""``doctor``: what a board has and lacks for a bundle (architecture, Python, numpy, engines).

Asked before anything is uploaded, so a push to a board without numpy is refused with the list of
what to install instead of failing half-way. Versions come from package metadata, not imports:
importing onnxruntime on a small board takes seconds. The one exception is a bundle that needs an
execution provider (``provider:CUDAExecutionProvider`` for a stage planned onto the GPU): only
onnxruntime itself can say which providers it was built with, so it is imported then (and when
``edgedeploy doctor`` lists them). Without that check a CPU-only onnxruntime would be found
"present" and the GPU stage would fail - or silently fall back to the CPU - after the switch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgedeploy.deploy import scripts
from edgedeploy.deploy.bundle import parse_requirement
from edgedeploy.deploy.transport import Transport
from edgedeploy.errors import TargetError

MIN_PYTHON = (3, 10)
#: Board tools the supervised runner needs (util-linux setsid, coreutils timeout).
REQUIRED_TOOLS = ("setsid", "timeout")
#: How to get an execution provider that a board's onnxruntime lacks (default: _ANY_PROVIDER).
PROVIDER_HINTS = {
    "CUDAExecutionProvider": "install onnxruntime-gpu built for the board's CUDA/JetPack",
    "TensorrtExecutionProvider": "install onnxruntime-gpu built with TensorRT for the board's "
                                 "CUDA/JetPack, and TensorRT itself",
}
_ANY_PROVIDER = "install an onnxruntime build that includes {name}"


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
    #: Execution providers the board's onnxruntime offers (None: not asked, or no onnxruntime).
    providers: list[str] | None = None
    #: Why ``providers`` is None although it was asked for (onnxruntime absent or broken).
    providers_error: str | None = None
    requires: dict[str, str | None] = field(default_factory=dict)
    #: Cores whose /proc/cpuinfo lists fp16 arithmetic (None: not asked, or unreadable).
    fp16_cpus: list[int] | None = None
    tools: dict[str, bool] = field(default_factory=dict)
    #: The interpreter runs in a venv; the system one refuses pip (PEP 668, Bookworm).
    venv: bool = False
    externally_managed: bool = False
    #: Where ``requires`` came from (the target's lockfile, or the command line).
    requires_from: str | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def doctor(transport: Transport, python: str = "python3",
           requires: tuple[str, ...] | list[str] = ("numpy",), *,
           list_providers: bool = False, requires_from: str | None = None) -> DoctorReport:
    """Inspect the board; ``missing`` lists each requirement it lacks, with how to get it.

    ``requires`` holds distribution names, ``provider:<Name>`` and ``cpu:fp16`` entries (a
    malformed one raises BundleError); ``list_providers`` fills ``providers`` even when no entry
    needs one; ``requires_from`` says where ``requires`` came from (reported as is).
    """
    needed = [parse_requirement(r, "requirement") for r in requires]
    report = DoctorReport(host=transport.label, python_cmd=python, requires_from=requires_from)
    argv = [python, "-c", scripts.DOCTOR_PY, *requires, *(["--providers"] if list_providers
                                                          else [])]
    res = transport.run(argv, changes=False, check=False, what="doctor", timeout=60)
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
    for key in ("arch", "python", "numpy", "onnxruntime", "litert", "providers_error"):
        setattr(report, key, facts.get(key))
    providers = facts.get("providers")
    report.providers = [str(p) for p in providers] if isinstance(providers, list) else None
    report.requires = dict(facts.get("requires") or {})
    cpus = facts.get("fp16_cpus")
    report.fp16_cpus = [int(c) for c in cpus] if isinstance(cpus, list) else None
    report.tools = dict(facts.get("tools") or {})
    version = tuple(int(p) for p in str(report.python).split(".")[:2] if p.isdigit())
    if version < MIN_PYTHON:
        report.missing.append(f"python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} "
                              f"(board has {report.python})")
    report.venv = bool(facts.get("venv"))
    report.externally_managed = bool(facts.get("externally_managed"))
    lacking = sorted(name for name, found in report.requires.items() if found is None)
    for name in lacking:
        report.missing.append(f"{name} (install: {install_hint(report, python, lacking)})")
    for kind, name in needed:
        if kind == "provider" and name not in (report.providers or []):
            report.missing.append(_missing_provider(report, name))
        if kind == "cpu" and not report.fp16_cpus:
            report.missing.append(
                "fp16 arithmetic (no core of the board lists asimdhp or avx512_fp16 in "
                "/proc/cpuinfo, and this bundle's LiteRT stages compute fp16: plan the target "
                "fp32, or name its real board in the manifest)")
    for tool in REQUIRED_TOOLS:
        if not report.tools.get(tool):
            report.missing.append(f"{tool} (install util-linux / coreutils)")
    return report


def install_hint(report: DoctorReport, python: str, names: list[str]) -> str:
    """How to install ``names`` for ``python`` on the board. A venv takes pip directly; a
    system interpreter that refuses pip (PEP 668: Debian 12, Raspberry Pi OS Bookworm) gets a
    venv on the board and the manifest setting that makes edgedeploy use it."""
    pkgs = " ".join(names)
    if report.venv or not report.externally_managed:
        return f"{python} -m pip install {pkgs}"
    return (f"{python} is the system Python, which refuses pip; create a venv on the board: "
            f"python3 -m venv ~/edgedeploy-venv && ~/edgedeploy-venv/bin/pip install {pkgs}, "
            "then set the target's `python:` in the manifest to that venv's bin/python "
            "(an absolute path, e.g. /home/pi/edgedeploy-venv/bin/python)")


def _missing_provider(report: DoctorReport, name: str) -> str:
    """``Name (what the board offers instead; how to get Name)`` for the missing list."""
    if report.providers is not None:
        offers = ", ".join(report.providers) or "no providers"
        have = f"the board's onnxruntime offers {offers}"
    elif report.onnxruntime is None:
        have = "the board has no onnxruntime"
    else:
        have = (f"the board's onnxruntime {report.onnxruntime} does not import: "
                f"{report.providers_error or 'unknown error'}")
    return f"{name} ({have}; {PROVIDER_HINTS.get(name, _ANY_PROVIDER.format(name=name))})"


def require(report: DoctorReport, what: str | None = None) -> None:
    """Refuse a push to a board that lacks something the bundle needs.

    A TargetError (exit 2) is what push_release treats as "refused, nothing touched": it is raised
    before prepare/upload, so the previous release stays current and running. ``what`` names the
    bundle and plan (e.g. "bundle demo (release 1a2b...)"), so a fleet log says which plan needs it.
    """
    if report.missing:
        needs = f" ({what})" if what else ""
        raise TargetError(f"{report.host} lacks what this bundle needs{needs}: "
                          + "; ".join(report.missing),
                          hint="install them on the board (see `edgedeploy doctor`) and push "
                               "again; nothing on the board was changed (a running release "
                               "keeps running)")
