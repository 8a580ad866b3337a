"""The library verbs: every CLI command is one call here, so Python users get the same thing.

Heavy modules are imported inside the functions so ``import edgedeploy.api`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgedeploy.execute import RunReport, RunRequest
    from edgedeploy.runtime.ir import Graph
    from edgedeploy.schemas.manifest import Manifest
    from edgedeploy.schemas.target import Target


def load_manifest(path: str | Path) -> Manifest:
    from edgedeploy.schemas import load_manifest as _load

    return _load(path)


def load_target(name_or_path: str | Path) -> Target:
    from edgedeploy.boards.catalog import load_target as _load

    return _load(name_or_path)


def load_model(path: str | Path, input_shape: str | tuple[int, ...] | None = None) -> Graph:
    from edgedeploy.importers import load_model as _load
    from edgedeploy.importers import parse_shape

    shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
    return _load(path, input_shape=shape)


def validate(path: str | Path) -> dict[str, Any]:
    """Check a manifest (schema, model, boards) or a plan lockfile (schema, engines, model):
    the ``validate --json`` answer; EdgeDeployError (exit 2) naming file:line when invalid."""
    from edgedeploy.schemas.plan import check_lockfile, is_lockfile

    if is_lockfile(path):
        plan, warnings = check_lockfile(path)
        return {"ok": True, "file": str(path), "kind": "plan", "name": plan.name,
                "target": plan.target, "stages": len(plan.stages), "engines": plan.engines,
                "unverified": plan.unverified_stages, "warnings": warnings}
    manifest = load_manifest(path)
    return {
        "ok": True, "file": str(manifest.source) if manifest.source else None,
        "kind": "manifest", "name": manifest.name,
        "model": {"path": str(manifest.model.path), "format": manifest.model.format},
        "objective": manifest.objective,
        "targets": {alias: {"board": ref.board, "transport": ref.transport,
                            "hosts": ref.all_hosts}
                    for alias, ref in manifest.targets.items()},
    }


def run(source: str | Path, *, primitive: str = "auto", stages: int = 1, cores: str | None = None,
        replicas: int = 1, frames: int = 100, warmup: int = 5, verify: bool = False,
        sequential: bool = False, input_shape: str | None = None, seed: int = 0) -> RunReport:
    """Run a model with a simple FLOP-balanced split (or a plan lockfile) on this host."""
    from edgedeploy import execute
    from edgedeploy.errors import InputError
    from edgedeploy.planner.document import align_segments
    from edgedeploy.runtime.stages import plan_stage_io

    source = Path(source)
    request = execute.RunRequest(frames=frames, warmup=warmup, verify=verify, seed=seed,
                                 sequential=sequential)
    if source.name.endswith(".plan.json"):
        return run_plan(source, request)
    if replicas < 1:
        raise InputError("--replicas must be >= 1")
    graph = load_model(source, input_shape)
    choices = execute.resolve_choices(graph, primitive)
    cuts = execute.balanced_cuts(graph, stages)
    ranges = [(io.start, io.stop) for io in plan_stage_io(graph, cuts)]
    aligned = align_segments(graph, [choices[layer.name] for layer in graph.layers], ranges)
    choices = {layer.name: c for layer, c in zip(graph.layers, aligned, strict=True)}
    cpu_groups = execute.parse_cores(cores, stages)
    plans = [execute.stage_from_io(io=io, cpus=cpus, replicas=replicas, name=f"stage{k}")
             for k, (io, cpus) in enumerate(zip(plan_stage_io(graph, cuts), cpu_groups,
                                                strict=True))]
    return execute.run_stages(graph, plans, choices, request, model_path=source)


def run_plan(plan_path: str | Path, request: RunRequest) -> RunReport:
    """Run exactly what a plan lockfile says (stages, cores, replicas, per-layer choices)."""
    from edgedeploy import execute
    from edgedeploy.planner.api import stage_plans
    from edgedeploy.schemas.plan import load_plan

    plan = load_plan(plan_path)
    model = plan.model_path(plan_path)
    shape = plan.model.get("input_shape")
    graph = load_model(model, tuple(shape) if shape else None)
    report = execute.run_stages(graph, stage_plans(plan, graph), plan.choices, request,
                                model_path=model)
    report.extra["plan"] = str(plan_path)
    report.extra["predicted"] = plan.predicted.model_dump()
    return report


def bench(source: str | Path, *, target: str = "local", frames: int = 200, rounds: int = 4,
          input_shape: str | None = None, progress: Callable[[str], None] | None = None
          ) -> dict[str, Any]:
    """The planned deployment beside the baselines a user would otherwise run, measured."""
    from edgedeploy.benchmarks.compare import BenchRequest
    from edgedeploy.benchmarks.compare import bench as _bench
    from edgedeploy.importers import parse_shape

    request = BenchRequest(frames=frames, rounds=rounds, target=target,
                           input_shape=parse_shape(input_shape) if input_shape else None)
    return _bench(source, request, progress)


def bench_layers(model: str | Path, *, threads: int = 1, runs: int | None = None,
                 input_shape: str | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every conv layer x every applicable primitive vs onnxruntime's kernel."""
    from edgedeploy.benchmarks.layers import bench_layers as _bench_layers

    return _bench_layers(load_model(model, input_shape), threads=threads, runs=runs,
                         progress=progress)


def plan(manifest: str | Path, target: str | None = None, *, output: str | Path | None = None,
         write: bool = True) -> list[Any]:
    """Plan every target alias of a manifest (or one) and write the lockfiles."""
    from edgedeploy.planner import plan as _plan

    return _plan(manifest, target, output=output, write=write)


def build(source: str | Path, out_dir: str | Path | None = None, *, target: str | None = None,
          family: str | None = None, input_shape: str | None = None) -> Any:
    """A deterministic runner bundle from a lockfile, a manifest or a model."""
    from edgedeploy.generator.sources import build_from_path

    return build_from_path(source, out_dir, target=target, family=family,
                           input_shape=input_shape)


def init(directory: str | Path = ".", *, model: str | Path | None = None,
         board: str | None = None, force: bool = False) -> Any:
    """Scaffold edgedeploy.yaml and the Makefile include in ``directory``."""
    from edgedeploy.generator.scaffold import init_project

    return init_project(directory, model=model, board=board, force=force)


@dataclass
class PushOutcome:
    """What push did: the plan it used, the bundle it built, the per-host deploy result."""

    plan_file: Path
    replanned: bool
    predicted: dict[str, Any]
    bundle: Any
    deploy: Any
    refine: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"plan": {"file": str(self.plan_file), "replanned": self.replanned,
                         "predicted": self.predicted},
                "bundle": self.bundle.to_dict(), "deploy": self.deploy.to_dict(),
                "refined": self.refine is not None, "refine": self.refine}


def push(manifest: str | Path, target: str = "local", *, dry_run: bool = False,
         accept_new_host_keys: bool = False, serial: int | None = None,
         max_fail_percent: float = 100.0, refine: bool = True,
         progress: Callable[[str], None] | None = None) -> PushOutcome:
    """Plan (again, if the lockfile is stale), build, then deploy to every host of ``target``.

    Raises the deployer's mapped error (exit 4/5/6, carrying ``.result``) when a host failed;
    the previous release keeps running there.
    """
    from edgedeploy.deploy.api import push_bundle
    from edgedeploy.planner import check as check_plans

    say = progress or (lambda _msg: None)
    m = load_manifest(manifest)
    ref = m.target(target)
    current = check_plans(manifest, target)[0]  # plans in memory and compares with the lockfile
    replanned = bool(current.stale)
    bundle_dir = Path(m.output.build_dir) / f"{m.name}.{target}"
    plan_file = current.plan_file
    if replanned:
        if dry_run:  # a dry run changes nothing committed: the new plan goes beside the build
            plan_file = bundle_dir.with_name(f"{bundle_dir.name}.dry-run.plan.json")
        say(f"plan: {'; '.join(current.stale)}: writing the new plan to {plan_file}")
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(current.text)
    say(f"build: {plan_file} -> {bundle_dir}")
    info = build(plan_file, bundle_dir)
    say(f"push: release {info.id} to {', '.join(ref.all_hosts) or 'this host'}")
    result = push_bundle(info.root, ref, alias=target, dry_run=dry_run,
                         accept_new_host_keys=accept_new_host_keys, serial=serial,
                         max_fail_percent=max_fail_percent, check=True)
    outcome = PushOutcome(plan_file, replanned, current.doc["predicted"], info, result)
    if refine and not dry_run:
        outcome.refine = _refine_after_push(manifest, target, outcome,
                                            accept_new_host_keys=accept_new_host_keys, say=say)
    return outcome


def _refine_after_push(manifest: str | Path, target: str, outcome: PushOutcome, *,
                       accept_new_host_keys: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Online refinement on the device (Soomro et al.: measured search from the plan).

    The serving runner is stopped so candidates are measured without it competing for the
    cores; a refined plan that measures better is built and pushed as a new release (health
    checked, rolled back on failure); otherwise the pushed release is started again.
    """
    from edgedeploy.deploy.api import push_bundle, stop
    from edgedeploy.deploy.transport import TransportOptions
    from edgedeploy.refine.api import refine as _refine

    m = load_manifest(manifest)
    ref = m.target(target)
    say("refine: stopping the runner while candidates are measured")
    stop(ref, alias=target, access=TransportOptions(accept_new_host_keys=accept_new_host_keys),
         check=True)
    bundle = outcome.bundle
    try:
        result = _refine(manifest, target)
        summary = result.summary()
        if (summary.get("improvement") or 0.0) > 1.0:
            say(f"refine: {summary['improvement']:.2f}x measured; pushing {result.plan_file}")
            bundle = build(result.plan_file,
                           Path(m.output.build_dir) / f"{m.name}.{target}.refined")
    finally:  # serving resumes whatever happened: the refined release or the pushed one
        say(f"refine: starting release {bundle.id}")
        push_bundle(bundle.root, ref, alias=target, accept_new_host_keys=accept_new_host_keys,
                    check=True)
    summary["release"] = bundle.id
    return summary
