"""The generator's inputs and the frozen context the templates render from.

:class:`BuildInput` is the plan-like input (name, target, family, and plans in the runner's own
config types, ``runtime.runner_config.PlanConfig``): the typed lockfile ``Plan`` converts into it
once, as do ``edgedeploy run``'s simple splits (``execute.stage_from_io``) and tests, so the
generator never depends on how a plan was made.
Templates get a :class:`RenderContext`: every value already computed, nothing left to decide in
Jinja (STYLE.md: templates hold layout, not logic; families differ by small tables).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from edgedeploy.errors import InputError
from edgedeploy.runtime.affinity import BLAS_SPIN_LOG2_CYCLES
from edgedeploy.runtime.runner_config import PlanConfig

FAMILIES = ("linux", "jetson", "rpi")

#: Small per-family tables the templates read (the only place families differ in data).
FAMILY_TABLES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "linux": MappingProxyType({}),
    # nvpmodel mode 0 is MAXN on TX2/Xavier/Orin; tegrastats samples power rails every interval.
    "jetson": MappingProxyType({"nvpmodel_mode": 0, "tegrastats_interval_ms": 1000,
                                "power_log": "tegrastats.log"}),
    "rpi": MappingProxyType({"governor": "performance"}),
})

_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class BuildInput:
    """What a bundle is built from. ``plans[0]`` is active unless ``active`` names another."""

    name: str
    target: str
    family: str
    plans: tuple[PlanConfig, ...]
    plan_sha256: str = ""
    active: str = ""
    #: The health check's bound on the runner's max relative error against the reference.
    tolerance: float = 1e-3
    #: The reference computed as an fp16 plan computes (LiteRT in fp16, on this host): two
    #: CPUs' fp16 kernels round alike to the guard's order, fp32 against fp16 does not.
    reference_fp16: bool = False
    seed: int = 0
    #: The interpreter run.sh falls back on (a name or a board path, never this host's): the
    #: deployer's choice for the target, in the install's run/python, comes first.
    python: str = "python3"
    #: What the runtime manager keeps (min_throughput_fps, max_latency_ms, min_throughput_ratio).
    targets: tuple[tuple[str, float], ...] = ()
    #: The runner's config ``io`` (runtime/runner_io.py) from the manifest's ``io:`` (see
    #: :func:`with_io`); None keeps the seeded benchmark feed (a bundle built from a bare model).
    io: Mapping[str, Any] | None = None
    #: Extra files under the bundle's ``app/`` (the modules an io python source or sink names).
    app_files: tuple[tuple[str, bytes], ...] = ()
    #: Ship ONNX segments free in the batch even when no plan batches yet: a throughput bundle
    #: that refinement on the device may micro-batch (it measures with the shipped segments).
    free_batch: bool = False
    #: Configurations refinement may measure on the board beside the served plans (the
    #: lockfile's baselines): their segments ship; the runner never serves them.
    measured_plans: tuple[PlanConfig, ...] = ()
    #: Ship the arrays of only the weights its plans read outside engine segments (the others
    #: as sizes): a bundle that runs its own plans and nothing else, as measure-to-decide's is.
    #: A release ships every weight, since refinement's variants may run any layer natively.
    plans_only: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise InputError(f"unknown template family {self.family!r}",
                             hint=f"one of: {', '.join(FAMILIES)}")
        if not self.plans:
            raise InputError("a bundle needs at least one plan")
        names = [p.name for p in self.plans]
        if len(set(names)) != len(names):
            raise InputError(f"plan names must be unique, got {names}")
        if self.active and self.active not in names:
            raise InputError(f"active plan {self.active!r} is not among {names}")

    @property
    def active_plan(self) -> PlanConfig:
        return next(p for p in self.plans if p.name == (self.active or self.plans[0].name))

    def plans_dict(self) -> dict[str, Any]:
        """Canonical JSON-ready plans (also what ``plan_sha256`` hashes when no lockfile exists)."""
        return {p.name: p.to_dict() for p in self.plans}

    def engines(self) -> list[str]:
        """Every engine any plan of the bundle uses (stage devices and per-layer choices)."""
        from edgedeploy.runtime.engines import engine_of

        used = {s.engine for p in self.plans for s in p.stages}
        used |= {engine_of(c) for p in self.plans for c in p.choices.values()}
        return sorted(used)

    def digest(self) -> str:
        """``plan_sha256``, or the hash of the canonical plans when no lockfile was given."""
        if self.plan_sha256:
            return self.plan_sha256
        blob = json.dumps({"name": self.name, "target": self.target, "active": self.active,
                           "plans": self.plans_dict()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def from_execute_plans(name: str, target: str, family: str, stage_plans: Sequence[Any],
                       choices: Mapping[str, str], *, predicted: Mapping[str, float] | None = None,
                       plan_sha256: str = "", plan_name: str = "plan0") -> BuildInput:
    """A one-plan BuildInput from stages of ``edgedeploy run``'s splits."""
    stages = tuple(replace(sp, name=sp.name or f"stage{k}") for k, sp in enumerate(stage_plans))
    plan = PlanConfig(plan_name, stages, dict(choices), dict(predicted or {}))
    return BuildInput(name=name, target=target, family=family, plans=(plan,),
                      plan_sha256=plan_sha256)


def with_io(build: BuildInput, io: Any, graph: Any) -> BuildInput:
    """``build`` carrying a manifest's ``io:`` (``schemas.io.Io``) as the runner's config
    ``io``, checked against the model's inputs, with the app modules it names."""
    from edgedeploy.generator.io_config import runner_io

    config, files = runner_io(io, graph)
    return replace(build, io=config, app_files=files)


def safe_name(name: str) -> str:
    """A name usable in file names and unit names (systemd, env files)."""
    cleaned = _NAME.sub("-", name).strip("-.")
    return cleaned or "model"


@dataclass(frozen=True)
class RenderContext:
    """Everything the templates see; built once, frozen, rendered with StrictUndefined."""

    name: str
    service: str
    target: str
    family: str
    release_note: str
    python: str
    env: tuple[tuple[str, str], ...]
    table: Mapping[str, Any]
    runner_dir: str = "runner"
    config: str = "app/config.json"
    #: The deployer's default remote folder (manifest ``targets.<alias>.path``), systemd syntax.
    install_root: str = "%h/edgedeploy"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "service": self.service, "target": self.target,
                "family": self.family, "release_note": self.release_note, "python": self.python,
                "env": self.env, "table": self.table, "runner_dir": self.runner_dir,
                "config": self.config, "install_root": self.install_root}


def render_context(build: BuildInput, threads: int, version: str) -> RenderContext:
    """The frozen context for ``build``: env file entries, unit name, family table."""
    name = safe_name(build.name)
    env = (("EDGEDEPLOY_BUNDLE_NAME", name), ("EDGEDEPLOY_TARGET", safe_name(build.target)),
           ("OMP_NUM_THREADS", str(threads)), ("OPENBLAS_NUM_THREADS", str(threads)),
           ("MKL_NUM_THREADS", str(threads)),
           ("OPENBLAS_THREAD_TIMEOUT", str(BLAS_SPIN_LOG2_CYCLES)),
           ("PYTHONDONTWRITEBYTECODE", "1"),
           ("PYTHONUNBUFFERED", "1"))
    return RenderContext(
        name=name, service=f"edgedeploy-{name}", target=safe_name(build.target),
        family=build.family, release_note=f"edgedeploy {version}, plan {build.digest()[:16]}",
        python=build.python, env=env, table=FAMILY_TABLES[build.family])
