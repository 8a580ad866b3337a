"""The library verbs: every CLI command is one call here, so Python users get the same thing.

Heavy modules are imported inside the functions so ``import edgedeploy.api`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedeploy.errors import EdgeDeployError, ExitCode
from edgedeploy.runtime.vocab import NCHW, NHWC, TFLITE

if TYPE_CHECKING:
    from edgedeploy.client import Client
    from edgedeploy.costmodel.profiler import Progress
    from edgedeploy.deploy.doctor import DoctorReport
    from edgedeploy.deploy.fleet import DeployResult, HostAnswers
    from edgedeploy.deploy.transport import TransportOptions
    from edgedeploy.execute import RunReport, RunRequest
    from edgedeploy.planner.api import PlanResult
    from edgedeploy.refine.api import RefineResult
    from edgedeploy.runtime.ir import Graph
    from edgedeploy.schemas.manifest import Manifest, TargetRef
    from edgedeploy.schemas.target import Target


def load_manifest(path: str | Path) -> Manifest:
    from edgedeploy.schemas import load_manifest as _load

    return _load(path)


def load_target(name_or_path: str | Path) -> Target:
    from edgedeploy.boards.catalog import load_target as _load

    return _load(name_or_path)


def load_model(path: str | Path, input_shape: str | Any | None = None) -> Graph:
    """``input_shape``: ``"1,3,224,224"``, ``"input=1x3x224x224,mask=1x10"``, a shape or a
    mapping input name -> shape."""
    from edgedeploy.importers import load_model as _load
    from edgedeploy.importers import parse_input_shapes

    shape = parse_input_shapes(input_shape) if isinstance(input_shape, str) else input_shape
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
    from edgedeploy.planner.half import check_half_targets

    check_half_targets(manifest, list(manifest.targets))
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
    from edgedeploy.importers import plan_shapes
    from edgedeploy.planner.api import stage_plans
    from edgedeploy.schemas.plan import load_plan

    plan = load_plan(plan_path)
    model = plan.model_path(plan_path)
    graph = load_model(model, plan_shapes(plan.model))
    report = execute.run_stages(graph, stage_plans(plan, graph), plan.choices, request,
                                model_path=model)
    report.extra["plan"] = str(plan_path)
    report.extra["predicted"] = plan.predicted.model_dump()
    return report


def bench(source: str | Path, *, target: str = "local", frames: int = 200, rounds: int = 4,
          input_shape: str | None = None, measure_budget_s: float | None = 30.0,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The planned deployment (planned as `plan` plans it: measured on this host unless
    ``measure_budget_s`` is 0) beside the baselines a user would otherwise run, measured."""
    from edgedeploy.benchmarks.compare import BenchRequest
    from edgedeploy.benchmarks.compare import bench as _bench
    from edgedeploy.importers import parse_shape

    request = BenchRequest(frames=frames, rounds=rounds, target=target,
                           input_shape=parse_shape(input_shape) if input_shape else None,
                           measure_budget_s=measure_budget_s)
    return _bench(source, request, progress)


def bench_layers(model: str | Path, *, threads: int = 1, runs: int | None = None,
                 input_shape: str | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every conv layer x every applicable primitive vs onnxruntime's kernel."""
    from edgedeploy.benchmarks.layers import bench_layers as _bench_layers

    return _bench_layers(load_model(model, input_shape), threads=threads, runs=runs,
                         progress=progress)


def plan(manifest: str | Path, target: str | None = None, *, output: str | Path | None = None,
         write: bool = True, measure: bool | None = None, budget_s: float | None = None,
         progress: Callable[[str], None] | None = None, loaded: Manifest | None = None,
         graph: Graph | None = None) -> list[Any]:
    """Plan every target alias of a manifest (or one) and write the lockfiles.

    With measurement (the manifest's ``measure.enabled`` unless ``measure`` says otherwise) a
    target that can be reached -- this host, a ``sim:`` twin, a board over SSH whose runner is
    not serving -- gets measure-to-decide: the
    plan, its next best predicted plans and the baselines are timed there and the winner is
    written. ``measure=False`` plans from the cost model alone, and the lockfile says so.
    """
    from edgedeploy.generator.io_config import ensure_io_fits
    from edgedeploy.planner import plan as _plan
    from edgedeploy.planner.api import model_graph
    from edgedeploy.planner.half import check_half_targets

    m = loaded or load_manifest(manifest)
    check_half_targets(m, [target] if target else list(m.targets))
    graph = graph or model_graph(m)
    ensure_io_fits(m.io, graph)  # io: must fit the model's inputs before anything is planned
    results = _plan(manifest, target, output=output, write=False, manifest=m, graph=graph)
    on = m.measure.enabled if measure is None else measure
    for r in results:
        if on:  # otherwise the plan says it came from the cost model alone
            from edgedeploy.benchmarks.decide import measure_result

            measure_result(m, r.alias, r, graph, budget_s=budget_s, progress=progress)
        if write:
            r.write()
    return results


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
    """What push did: the plan it used, the bundle it built, the per-host deploy result, what
    refinement did after it (its summary, or ``{"error": ...}``), the push refinement made, and
    the release every host runs at the end (the refined one when refinement pushed it)."""

    plan_file: Path
    replanned: bool
    predicted: dict[str, Any]
    bundle: Any
    deploy: DeployResult
    refine: dict[str, Any] | None = None
    #: Refinement's own push: the refined release, or the pushed one started again.
    refine_deploy: DeployResult | None = None
    #: The release running at the end (None after a dry run, or when nothing runs).
    running: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"plan": {"file": str(self.plan_file), "replanned": self.replanned,
                         "predicted": self.predicted},
                "bundle": self.bundle.to_dict(), "deploy": self.deploy.to_dict(),
                "refined": self.refine is not None and "error" not in self.refine,
                "refine": self.refine, "running": self.running}


class RefineAfterPushError(EdgeDeployError):
    """Refinement failed after a successful deploy. Carries the push's ``outcome`` (so the
    command still shows what was deployed and what runs) and the failure's own exit code."""

    def __init__(self, message: str, outcome: PushOutcome, exit_code: int,
                 hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.outcome = outcome
        self.exit_code = exit_code


def deploy_result(exc: BaseException) -> DeployResult | None:
    """The per-host result a deployer error carries as ``.result``, or None: other errors use
    that name for other things (a transport CommandError holds its CommandResult there)."""
    from edgedeploy.deploy.fleet import DeployResult

    result = getattr(exc, "result", None)
    return result if isinstance(result, DeployResult) else None


def push(manifest: str | Path, target: str = "local", *, dry_run: bool = False,
         accept_new_host_keys: bool = False, serial: int | None = None,
         max_fail_percent: float = 100.0, refine: bool = True, locked: bool = False,
         progress: Callable[[str], None] | None = None) -> PushOutcome:
    """Plan (again, if the lockfile is stale), build, then deploy to every host of ``target``.

    ``locked`` (CI, as ``cargo --locked``) refuses a stale lockfile with
    :class:`~edgedeploy.errors.StaleLockfileError` instead of re-planning and rewriting it.

    Raises the deployer's mapped error (exit 4/5/6, carrying ``.result``) when a host failed;
    the previous release keeps running there. A failure of the refinement after a successful
    deploy raises :class:`RefineAfterPushError` with its own exit code and the outcome.
    """
    from edgedeploy.deploy.api import push_bundle
    from edgedeploy.planner import check as check_plans
    from edgedeploy.planner.api import model_graph, planned_graph
    from edgedeploy.planner.lock import read_lock

    say = progress or (lambda _msg: None)
    m = load_manifest(manifest)  # loaded once, imported once, solved once: passed on below
    ref = m.target(target)
    graph = model_graph(m)
    current = check_plans(manifest, target, manifest=m, graph=graph)[0]
    replanned = bool(current.stale)
    if replanned and locked:
        from edgedeploy.errors import StaleLockfileError

        raise StaleLockfileError(
            f"{current.plan_file} is stale: {'; '.join(current.stale)}; --locked deploys only "
            "the committed lockfile", hint=f"run `edgedeploy plan {manifest} --target {target}`"
            " and commit the lockfile, or push without --locked")
    bundle_dir = m.bundle_dir(target)
    plan_file = current.plan_file
    if replanned:
        if m.measure.enabled and not dry_run:  # measure to decide where the target is reachable
            from edgedeploy.benchmarks.decide import measure_result
            from edgedeploy.deploy.transport import TransportOptions

            measure_result(m, target, current, graph, progress=say,
                           access=TransportOptions(accept_new_host_keys=accept_new_host_keys))
        if dry_run:  # a dry run changes nothing committed: the new plan goes beside the build
            plan_file = bundle_dir.with_name(f"{bundle_dir.name}.dry-run.plan.json")
        say(f"plan: {'; '.join(current.stale)}: writing the new plan to {plan_file}")
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(current.text)
    else:
        from edgedeploy.refine.api import kept_refinement

        refined = kept_refinement(plan_file, current.doc["inputs"])
        if refined is not None:  # the last refinement's plan, while its inputs still hold
            plan_file, current.doc = refined
            say(f"plan: keeping the refined plan {plan_file} (its inputs are unchanged)")
        else:  # the committed plan, as built below: a measured winner is no re-plan
            current.doc = read_lock(plan_file) or current.doc
    graph = planned_graph(m, current.doc, graph)  # auto: the precision the board measured
    say(f"build: {plan_file} -> {bundle_dir}")
    # refinement on an SSH board measures with the bundle's segments: the baselines' ship too,
    # so that it measures what the user would run instead
    info = _build_plan(plan_file, bundle_dir, graph, m,
                       free_batch=refine and _batch_on_device(m, target, graph),
                       ship_baselines=refine and _refines_on_board(m, target))
    say(f"push: release {info.id} to {', '.join(ref.all_hosts) or 'this host'}")
    result = push_bundle(info.root, ref, alias=target, dry_run=dry_run,
                         accept_new_host_keys=accept_new_host_keys, serial=serial,
                         max_fail_percent=max_fail_percent, check=True)
    outcome = PushOutcome(plan_file, replanned, current.doc["predicted"], info, result,
                          running=None if dry_run else info.id)
    if refine and not dry_run:
        _refine_after_push(manifest, target, outcome, m, graph, current.doc,
                           accept_new_host_keys=accept_new_host_keys, serial=serial,
                           max_fail_percent=max_fail_percent, say=say)
    return outcome


def _build_plan(plan_file: Path, out: Path, graph: Graph, m: Manifest, *,
                free_batch: bool = False, ship_baselines: bool = False) -> Any:
    from edgedeploy.generator.sources import build_from_path

    return build_from_path(plan_file, out, graph=graph, io=m.io, free_batch=free_batch,
                           ship_baselines=ship_baselines)


def _refines_on_board(m: Manifest, target: str) -> bool:
    """Whether refinement measures through the deployed bundle's runner (an SSH board)."""
    from edgedeploy.refine.api import resolve_kind

    return resolve_kind(m, target)[2] == "ssh"


def _batch_on_device(m: Manifest, target: str, graph: Graph) -> bool:
    """Refinement on an SSH board may micro-batch a throughput plan: it measures with the
    deployed bundle's segments, so they ship free in the batch (locally it cuts its own) --
    where the model answers a batch of frames as each frame alone, which the board's
    measurements of speed would not notice."""
    from edgedeploy.importers.onnx_batch import frames_kept_apart
    from edgedeploy.planner.precision import planned_model

    return (m.objective == "throughput" and _refines_on_board(m, target)
            and frames_kept_apart(graph, planned_model(m, graph)))


def _refine_after_push(manifest: str | Path, target: str, outcome: PushOutcome, m: Manifest,
                       graph: Graph, plan_doc: dict[str, Any], *, accept_new_host_keys: bool,
                       serial: int | None, max_fail_percent: float,
                       say: Callable[[str], None]) -> None:
    """Online refinement on the device (Soomro et al.: measured search from the plan), recorded
    in ``outcome`` (``refine``, ``refine_deploy``, ``running``).

    Only the canary host's runner (a fleet's ``canary``, else its first host) is stopped, so
    candidates are measured without it competing for the cores while the rest of the fleet
    keeps serving. A refined plan that measures better is built and rolled out to every host
    as a new release with push's batching (``serial``), failure budget and per-host rollback;
    otherwise the canary restarts the pushed release. Whatever fails in between (a measure
    command the board cannot run, a lost link, a bug) is caught so serving resumes first; then
    it is raised as RefineAfterPushError saying what runs.
    """
    from edgedeploy.deploy.api import push_bundle, stop
    from edgedeploy.deploy.transport import TransportOptions
    from edgedeploy.refine.api import refine as _refine

    fleet = m.target(target)
    canary = fleet.only(fleet.canary_host) if fleet.canary_host else fleet
    bundle = outcome.bundle
    summary: dict[str, Any] = {}
    failure: Exception | None = None
    try:
        where = f" on {fleet.canary_host}" if len(fleet.all_hosts) > 1 else ""
        say(f"refine: stopping the runner{where} while candidates are measured")
        stop(canary, alias=target,
             access=TransportOptions(accept_new_host_keys=accept_new_host_keys), check=True)
        result = _refine(manifest, target, manifest=m, graph=graph, plan_doc=plan_doc,
                         plan_file=outcome.plan_file)
        summary = result.summary()
        if (summary.get("improvement") or 0.0) > 1.0:
            say(f"refine: {summary['improvement']:.2f}x measured; pushing {result.plan_file}")
            # as the pushed bundle: a later `refine` measures from it what this one measured
            bundle = _build_plan(result.plan_file, m.bundle_dir(target, ".refined"), graph, m,
                                 free_batch=_batch_on_device(m, target, graph),
                                 ship_baselines=_refines_on_board(m, target))
    except Exception as exc:  # reported below, once serving has resumed
        failure = exc
    refined = bundle is not outcome.bundle
    ref = fleet if refined else canary  # a refined release rolls out; else the canary restarts
    say(f"refine: starting release {bundle.id} on "
        f"{', '.join(ref.all_hosts) or 'this host'}")
    try:  # serving resumes whatever happened: the refined release or the pushed one
        outcome.refine_deploy = push_bundle(bundle.root, ref, alias=target,
                                            accept_new_host_keys=accept_new_host_keys,
                                            serial=serial if refined else None,
                                            max_fail_percent=max_fail_percent, check=True)
    except EdgeDeployError as exc:
        outcome.refine_deploy, outcome.running = deploy_result(exc), None
        raise _refine_failed(outcome, bundle.id, failure, restart=exc) from failure or exc
    outcome.running = bundle.id
    if failure is not None:
        raise _refine_failed(outcome, bundle.id, failure) from failure
    summary["release"] = bundle.id
    outcome.refine = summary


def _refine_failed(outcome: PushOutcome, started: str, failure: Exception | None,
                   restart: EdgeDeployError | None = None) -> RefineAfterPushError:
    """The error of a failed refinement step: the failure's own message and exit code (an
    unexpected exception is exit 1), and what runs now -- or why nothing does."""
    cause = None
    if failure is not None:
        cause = (failure.message if isinstance(failure, EdgeDeployError)
                 else f"{type(failure).__name__}: {failure}")
    code = (restart.exit_code if restart is not None
            else getattr(failure, "exit_code", ExitCode.FAILURE))
    if restart is None:
        message = (f"refinement after the deploy failed: {cause}; the deployed release "
                   f"{outcome.running} keeps running")
        hint = getattr(failure, "hint", None) or ("`edgedeploy push --no-refine` skips "
                                                  "refinement; `edgedeploy refine` retries it")
    else:
        head = f"refinement after the deploy failed: {cause}; " if cause else "refinement: "
        message = f"{head}starting release {started} failed: {restart.message}"
        hint = restart.hint or "see `edgedeploy status` and `edgedeploy logs`"
    error = cause if cause is not None else restart.message if restart is not None else ""
    outcome.refine = {"error": error, "exit_code": code, "release": outcome.running}
    return RefineAfterPushError(message, outcome, code, hint)


# --- catalogue, schemas, models -----------------------------------------------------------------


def target_aliases(manifest: str | Path) -> list[str]:
    """The target aliases a manifest declares, read leniently (shell completion: a manifest
    that does not validate yet still completes its aliases); empty when unreadable."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(Path(manifest).read_text())
    except (OSError, YAMLError):
        return []
    targets = data.get("targets") if isinstance(data, dict) else None
    return [str(k) for k in targets] if isinstance(targets, dict) else []


def list_targets() -> list[str]:
    """Every board name the catalogue knows, ``local`` (this host) included."""
    from edgedeploy.boards.catalog import list_targets as _list

    return _list()


def target_json(name_or_path: str | Path) -> dict[str, Any]:
    """A board descriptor as ``targets show --json`` prints it: for ``local`` every field (what
    detection could not tell shows as null), for a catalogue board the fields it sets."""
    from edgedeploy.runtime.vocab import LOCAL

    return load_target(name_or_path).model_dump(mode="json", exclude_none=name_or_path != LOCAL)


def json_schema(which: str) -> dict[str, Any]:
    """The JSON Schema (draft-7) of ``manifest``, ``target`` or ``plan``, for editors and CI."""
    from edgedeploy.schemas import json_schema as _schema

    return _schema(which)


def inspect(model: str | Path, input_shape: str | None = None, *, input_name: str | None = None,
            fmt: str | None = None) -> dict[str, Any]:
    """Every layer of a model (descriptor, MACs, params, bytes) and the totals: the
    ``inspect --json`` answer, so a notebook sees what the command shows."""
    from edgedeploy.importers import load_model as _load
    from edgedeploy.importers import parse_input_shapes
    from edgedeploy.importers.report import describe

    shape = parse_input_shapes(input_shape) if input_shape else None
    return describe(_load(model, input_shape=shape, input_name=input_name, fmt=fmt))


def zoo_models() -> list[dict[str, Any]]:
    """The zoo's models with their published MACs and parameters (``zoo list --json``)."""
    from edgedeploy import zoo

    return [zoo.MODELS[name].to_dict() for name in zoo.list_models()]


def zoo_export(name: str, out: str | Path, *, size: int | None = None, seed: int = 0,
               batch: int = 1, num_classes: int | None = None) -> dict[str, Any]:
    """Build a zoo model with seeded weights, write it as ONNX and describe the file (its
    sha256 too: the same arguments always give the same bytes)."""
    import hashlib

    from edgedeploy import zoo

    model = zoo.build(name, size=size, seed=seed, batch=batch, num_classes=num_classes)
    path = zoo.write(model, out)
    stats = zoo.model_stats(model)
    data = path.read_bytes()
    return {
        "model": name, "path": str(path), "size": stats["size"], "seed": seed, "batch": batch,
        "macs": stats["macs"], "params": stats["params"], "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
    }


# --- planning -------------------------------------------------------------------------------------


def plan_check(manifest: str | Path, target: str | None = None, *,
               output: str | Path | None = None) -> list[PlanResult]:
    """Re-plan in memory and compare with the committed lockfiles (``plan --check``, for CI):
    each result's ``stale`` says why it differs; nothing is written."""
    from edgedeploy.planner import check as _check

    return _check(manifest, target, output=output)


def plan_report(result: PlanResult, directory: str | Path) -> list[Path]:
    """Charts and an HTML summary of one plan in ``directory``; returns the files written."""
    from edgedeploy.planner.report import write_report

    return write_report(result, directory)


# --- cost model and profiling ------------------------------------------------------------------


def is_twin(target: str) -> bool:
    """Whether ``target`` names a board twin (``sim:<board>``): simulated, not measured."""
    from edgedeploy.twins import is_sim

    return is_sim(target)


def profile(target: str = "local", *, budget_s: float = 60.0, shapes: str = "designed",
            export: str | Path | None = None, import_: str | Path | None = None,
            model: str | Path | None = None, progress: Progress | None = None,
            info: Callable[[str], None] | None = None, manifest: str | Path | None = None,
            calibration: list[tuple[str, int]] | None = None,
            accept_new_host_keys: bool = False) -> dict[str, Any]:
    """Measure layer shapes x primitives x core counts on ``target`` into its profile, or
    (``export``/``import_``) copy a profile out or merge one in without measuring.

    A twin (``sim:<board>``) is profiled into its own profile with a simulated budget, its
    ``model``'s own layer shapes first; ``local`` measures this host. ``target`` may also be an
    alias of ``manifest`` (default ./edgedeploy.yaml): an SSH target's board is measured where
    it stands, by the runtime's probe, into its board descriptor's profile (the one ``plan``
    reads for it). ``progress`` gets (elapsed, budget, samples, eta, label); ``info`` one line
    per whole-model calibration run; ``calibration`` names the zoo models (name, input size)
    run whole for the segment factors (default: as many as ``budget_s`` pays for,
    ``costmodel.segments.calibration_models``). ``model``: its conv shapes are measured
    first, and it is run whole (onnxruntime; LiteRT for TFLite, on this host only) for its own
    segment factors.
    """
    from edgedeploy.errors import InputError
    from edgedeploy.twins import SIM_PREFIX, twin_target

    ref = _profile_ref(manifest, target)
    if ref is not None and ref.transport == "sim":
        target, ref = SIM_PREFIX + ref.board, None
    twin = is_twin(target)
    board = ref.board if ref is not None else target
    tgt = twin_target(target[len(SIM_PREFIX):]) if twin else load_target(board)
    if export is not None and import_ is not None:
        raise InputError("--export and --import exclude each other")
    if export is not None or import_ is not None:
        return _profile_copy(tgt, export, import_)
    if twin:
        return _profile_twin(tgt, budget_s, shapes, model, progress)
    from edgedeploy.costmodel.segments import OwnModel

    graph = load_model(model) if model is not None else None
    own = OwnModel.of(Path(model), graph) if model is not None and graph is not None else None
    if ref is not None and ref.transport == "ssh":
        from edgedeploy.deploy.probe import profile_over_ssh

        return profile_over_ssh(ref, target, budget_s=budget_s, shapes=shapes,
                                progress=progress, info=info, calibration=calibration,
                                access=_access(accept_new_host_keys), graph=graph, own=own)
    from edgedeploy.costmodel.profiling import profile_local

    return profile_local(tgt, budget_s, shapes, progress, info, calibration, own=own)


def _profile_ref(manifest: str | Path | None, target: str) -> TargetRef | None:
    """The manifest entry ``target`` names; None when it names a board or twin itself (and
    no manifest was given), as ``profile --target local|rpi4|board.yaml|sim:rpi4`` do."""
    from edgedeploy.schemas.manifest import is_board_path

    if is_twin(target):
        return None
    if manifest is None and (target in list_targets() or is_board_path(target)
                             or not DEFAULT_MANIFEST.is_file()):
        return None
    return resolve_target(manifest, target)


def _profile_copy(tgt: Target, export: str | Path | None, import_: str | Path | None
                  ) -> dict[str, Any]:
    """Export the profile to a file, or merge a file into it (profiles travel between hosts)."""
    from edgedeploy.costmodel import profile as prof_mod

    if export is not None:
        path = prof_mod.export_profile(tgt, export)
        return {"exported": str(path), "profile": str(prof_mod.profile_path(tgt))}
    prof = prof_mod.import_profile(tgt, import_)
    return {"imported": str(import_), "profile": str(prof.path), "samples": len(prof.samples)}


def _profile_twin(tgt: Target, budget_s: float, shapes: str, model: str | Path | None,
                  progress: Progress | None) -> dict[str, Any]:
    """Profile a board twin: simulated measurements, simulated budget, the twin's profile."""
    from edgedeploy.costmodel.profiling import check_shapes
    from edgedeploy.twins.profile import profile_twin_into_store

    check_shapes(shapes)
    graph = load_model(model) if model is not None else None
    return profile_twin_into_store(tgt, budget_s, shapes=shapes, progress=progress, graph=graph)


def costmodel_eval(target: str = "local", *, budget_s: float | None = None,
                   heldout_budget_s: float | None = None, transfer_from: str | Path | None = None,
                   samples: int = 20, plot: str | Path | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """How good the cost model is on ``target``: fit (or transfer from another board's profile)
    and compare with measured held-out zoo layers (mape, kendall_tau, top1_within_10pct...).
    A twin (``sim:<board>``) is measured and budgeted in simulated time, and says so."""
    from edgedeploy.costmodel.evaluate import evaluate

    if not is_twin(target):
        return evaluate(load_target(target), budget_s=budget_s,
                        heldout_budget_s=heldout_budget_s, transfer_from=transfer_from,
                        samples=samples, plot=plot, progress=progress)
    from edgedeploy.twins import SIM_PREFIX, twin_target
    from edgedeploy.twins.profile import TwinMeasure

    tgt = twin_target(target[len(SIM_PREFIX):])
    measure = TwinMeasure(tgt)
    report = evaluate(tgt, budget_s=budget_s, heldout_budget_s=heldout_budget_s,
                      transfer_from=transfer_from, samples=samples, plot=plot, measure=measure,
                      progress=progress, clock=measure.clock)
    return {**report, "simulated": True, "budget_clock": "simulated device seconds"}


@dataclass
class CostPrediction:
    """``costmodel predict``: ``report`` is the JSON answer; ``rows`` the table a person reads,
    ``[layer, primitive, ms per config...]`` for the pairs some configuration can run."""

    report: dict[str, Any]
    model_name: str
    rows: list[list[Any]]


def costmodel_predict(model: str | Path, target: str = "local", *,
                      input_shape: str | None = None) -> CostPrediction:
    """Predicted ms of every layer x primitive x core configuration (profile-calibrated), and
    the best total per configuration: what the planner starts from."""
    import numpy as np

    from edgedeploy.costmodel import CostModel

    tgt = load_target(target)
    graph = load_model(model, input_shape or None)
    cm = CostModel.for_target(tgt)
    table = cm.predict_table(graph)
    best = np.where(np.isfinite(table.ms), table.ms, np.inf).min(axis=1)  # (layers, configs)
    best = np.where(np.isfinite(best), best, 0.0)
    by_layer = table.to_dict()
    report: dict[str, Any] = {
        "model": str(model), "target": tgt.name, "source": cm.source,
        "configs": [c.key for c in table.configs], "primitives": table.primitives,
        "layers": [{"name": name, "op": graph.layers[i].op, "ms": by_layer[name]}
                   for i, name in enumerate(table.layers)],
        "best_total_ms": {c.key: round(float(best[:, k].sum()), 4)
                          for k, c in enumerate(table.configs)},
    }
    rows = [[name, prim, *(float(v) for v in table.ms[i, j])]
            for i, name in enumerate(table.layers) for j, prim in enumerate(table.primitives)
            if np.isfinite(table.ms[i, j]).any()]
    return CostPrediction(report, graph.name, rows)


# --- refinement ---------------------------------------------------------------------------------


def refine(manifest: str | Path, target: str = "local", *, max_evals: int | None = None,
           budget_s: float | None = None, seed: int = 0, output: str | Path | None = None,
           feedback: bool = True, on_eval: Callable[[Any], None] | None = None) -> RefineResult:
    """Refine the manifest's plan for ``target`` (an alias or ``sim:<board>``) by measuring
    candidates around it (guided evolutionary search); writes the refined plan, and unless
    ``feedback`` is off appends the measured samples to the profile."""
    from edgedeploy.refine.api import refine as _refine

    return _refine(manifest, target, max_evals=max_evals, budget_s=budget_s, seed=seed,
                   output=output, feedback=feedback, on_eval=on_eval)


def refine_methods() -> tuple[str, ...]:
    """The search methods ``refine_score`` compares: guided first, then the baselines."""
    from edgedeploy.refine.score import METHODS

    return tuple(METHODS)


def refine_score(boards: str | list[str] = "all", models: str | list[str] = "zoo", *,
                 size: int = 96, budget: int = 30, seed: int | None = None,
                 seeds: list[int] | tuple[int, ...] | None = None, profile_s: float = 60.0,
                 plot: str | Path | None = None,
                 on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Score refinement on board twins against the exhaustive optimum (simulated).

    ``boards`` is ``all`` (every catalogue board but this host), names, or ``b1,b2``;
    ``models`` is ``zoo``, ``held_out`` (the zoo models the search was not tuned on) or names
    likewise. ``seeds`` (default 0, 1, 2; ``seed`` alone: that one) are twins, profiles and
    searches; figures are summarised over them. ``plot`` adds a convergence PNG (its path in
    ``plot``).
    """
    from edgedeploy import zoo
    from edgedeploy.refine.score import SEEDS, held_out_models, score
    from edgedeploy.refine.score import plot as plot_fn

    bl = ([b for b in list_targets() if b != "local"] if boards == "all" else _names(boards))
    ml = (zoo.list_models() if models == "zoo" else held_out_models() if models == "held_out"
          else _names(models))
    sd = tuple(seeds) if seeds is not None else (seed,) if seed is not None else SEEDS
    res = score(bl, ml, size=size, budget=budget, seeds=sd, profile_s=profile_s, on_row=on_row)
    if plot:
        res["plot"] = str(plot_fn(res, plot))
    return res


def _names(value: str | list[str]) -> list[str]:
    return value.split(",") if isinstance(value, str) else list(value)


# --- the deployer: per-host verbs on a manifest's target -----------------------------------------

#: The manifest the deployer verbs read when none is named (relative to the working directory).
DEFAULT_MANIFEST = Path("edgedeploy.yaml")


def manifest_path(manifest: str | Path | None) -> Path | None:
    """The manifest a verb reads: the one named, else ./edgedeploy.yaml when it exists."""
    if manifest is not None:
        return Path(manifest)
    return DEFAULT_MANIFEST if DEFAULT_MANIFEST.is_file() else None


def resolve_target(manifest: str | Path | None, alias: str) -> TargetRef:
    """The TargetRef for ``alias``: from ``manifest`` (default ./edgedeploy.yaml when present),
    or, with no manifest at all, ``local`` as this host's ~/edgedeploy.

    Only the manifest's ``targets:`` entry is read and validated (file:line errors): the
    operational verbs need the board, not the model, so a moved model file never stops them.
    """
    from edgedeploy.errors import InputError
    from edgedeploy.schemas.loader import load_target_ref
    from edgedeploy.schemas.manifest import TargetRef

    path = manifest_path(manifest)
    if path is None:
        if alias == "local":
            return TargetRef()
        raise InputError(f"no manifest to look up target {alias!r} in",
                         hint="pass -m MANIFEST (or create edgedeploy.yaml with `edgedeploy init`)")
    return load_target_ref(path, alias)


def _access(accept_new_host_keys: bool) -> TransportOptions:
    from edgedeploy.deploy.transport import TransportOptions

    return TransportOptions(accept_new_host_keys=accept_new_host_keys)


def status(manifest: str | Path | None, target: str = "local", *,
           accept_new_host_keys: bool = False) -> HostAnswers[dict[str, Any]]:
    """Per host: current release, runner pid and liveness, uptime, last health check, and the
    runner's own status (plan, throughput, power, plan switches). A host that could not answer
    has ``error`` and ``exit_code`` in its row; ``raise_for_status()`` raises the worst one."""
    from edgedeploy.deploy import api as deploy

    return deploy.status(resolve_target(manifest, target), alias=target,
                         access=_access(accept_new_host_keys))


def status_timeline(runner: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The runtime manager's plan switches from a status row's ``runner`` block, as table
    columns and rows (oldest first): why the runner changed plans, and when."""
    from edgedeploy.deploy.status import TIMELINE_COLUMNS, timeline_rows

    return list(TIMELINE_COLUMNS), timeline_rows(runner)


def logs(manifest: str | Path | None, target: str = "local", *, lines: int = 100,
         accept_new_host_keys: bool = False) -> HostAnswers[dict[str, Any]]:
    """Per host: the newest ``lines`` of the runner log (or the error reaching it)."""
    from edgedeploy.deploy import api as deploy

    return deploy.logs(resolve_target(manifest, target), lines=lines, alias=target,
                       access=_access(accept_new_host_keys))


def journal(manifest: str | Path | None, target: str = "local", *, entries: int = 50,
            local: bool = False, accept_new_host_keys: bool = False
            ) -> HostAnswers[dict[str, Any]]:
    """Per host: the newest deploy-journal entries (push, rollback, stop: every step, its
    outcome and time), read on the board, or this machine's copy with ``local``."""
    from edgedeploy.deploy import api as deploy

    return deploy.journal(resolve_target(manifest, target), entries=entries, local=local,
                          alias=target, access=_access(accept_new_host_keys))


def stop(manifest: str | Path | None, target: str = "local", *, dry_run: bool = False,
         accept_new_host_keys: bool = False, check: bool = True) -> DeployResult:
    """Stop the runner on every host (the release stays current); with ``check`` raise the
    mapped error when a host failed, else return the result for the caller to show first."""
    from edgedeploy.deploy import api as deploy

    return deploy.stop(resolve_target(manifest, target), alias=target, dry_run=dry_run,
                       access=_access(accept_new_host_keys), check=check)


def rollback(manifest: str | Path | None, target: str = "local", *, to: str | None = None,
             dry_run: bool = False, accept_new_host_keys: bool = False,
             check: bool = True) -> DeployResult:
    """Return every host to its previous release (or ``to``), restarted and health-checked."""
    from edgedeploy.deploy import api as deploy

    return deploy.rollback(resolve_target(manifest, target), to=to, alias=target,
                           dry_run=dry_run, access=_access(accept_new_host_keys), check=check)


def releases(manifest: str | Path | None, target: str = "local", *,
             accept_new_host_keys: bool = False) -> HostAnswers[dict[str, Any]]:
    """Per host: the release ids kept, newest first, and which one is current."""
    from edgedeploy.deploy import api as deploy

    return deploy.releases(resolve_target(manifest, target), alias=target,
                           access=_access(accept_new_host_keys))


def doctor(manifest: str | Path | None, target: str = "local", *, python: str | None = None,
           requires: tuple[str, ...] | None = None,
           accept_new_host_keys: bool = False) -> HostAnswers[DoctorReport]:
    """Per host: what the board has (architecture, Python, numpy, onnxruntime and its execution
    providers, LiteRT) and what a bundle needing ``requires`` would lack there; a host that
    could not be reached counts in ``raise_for_status()``. Without ``requires`` they come from
    the target's lockfile (its engines' packages and execution providers), else numpy."""
    from edgedeploy.deploy import api as deploy

    source = "--require"
    if requires is None:
        requires, source = plan_requirements(manifest, target)
    return deploy.doctor(resolve_target(manifest, target), python=python, requires=requires,
                         alias=target, access=_access(accept_new_host_keys),
                         requires_from=source)


def plan_requirements(manifest: str | Path | None, target: str) -> tuple[tuple[str, ...], str]:
    """What the target's committed plan needs on the board, and which lockfile said so
    (``("numpy",), "default"`` when there is no readable lockfile yet)."""
    from edgedeploy.runtime.engines import board_requirements
    from edgedeploy.runtime.vocab import GPU_CLUSTER
    from edgedeploy.schemas.plan import load_plan

    path = manifest_path(manifest)
    if path is None:
        return ("numpy",), "default"
    try:
        plan_file = load_manifest(path).plan_file(target)
        plan = load_plan(plan_file)
    except (EdgeDeployError, OSError, KeyError):
        return ("numpy",), "default"
    half = any(s.fp16 and s.cluster != GPU_CLUSTER for s in plan.stages)
    return tuple(board_requirements(plan.engines, cpu_fp16=half)), str(plan_file)


# --- the inference service: frames through the deployed runner ----------------------------------


def _manifest_for(manifest: str | Path | None) -> Manifest:
    from edgedeploy.errors import InputError

    path = Path(manifest) if manifest is not None else DEFAULT_MANIFEST
    if not path.is_file():
        raise InputError(f"no manifest at {path}",
                         hint="pass -m MANIFEST (or create edgedeploy.yaml with `edgedeploy init`)")
    return load_manifest(path)


def infer_client(manifest: str | Path | None, target: str = "local", *, host: str | None = None,
                 window: int = 8, accept_new_host_keys: bool = False,
                 loaded: Manifest | None = None) -> Client:
    """A :class:`edgedeploy.client.Client` of the runner deployed to ``target`` (use it as a
    context manager): its Unix socket for a target on this machine, the board's socket through
    an SSH exec channel otherwise (no port opened on the board). ``host`` picks one host of a
    fleet."""
    from edgedeploy.deploy.infer import open_client

    m = loaded or _manifest_for(manifest)
    return open_client(m.target(target), target, m.io, host=host, window=window,
                       access=_access(accept_new_host_keys))


@dataclass
class InferResult:
    """What ``infer`` sent and got: per frame its label (file, or file[k]) and outputs."""

    target: str
    source: str
    output_names: list[str]
    labels: list[str]
    outputs: list[list[Any]]
    seconds: float
    output_file: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        from edgedeploy.deploy.infer_inputs import summarise

        n = len(self.outputs)
        return {"target": self.target, "source": self.source, "frames": n,
                "seconds": round(self.seconds, 4),
                "fps": round(n / self.seconds, 2) if self.seconds > 0 else None,
                "output_file": str(self.output_file) if self.output_file else None,
                "results": [{"frame": k, "label": label,
                             "outputs": summarise(outs, self.output_names)}
                            for k, (label, outs) in enumerate(zip(self.labels, self.outputs,
                                                                  strict=True))]}


def infer(manifest: str | Path | None, target: str, source: str | Path, *,
          output: str | Path | None = None, host: str | None = None, window: int = 8,
          accept_new_host_keys: bool = False) -> InferResult:
    """Send the frames of ``source`` (an .npz or .npy, an image or a folder of images through
    the manifest's ``io.preprocess``) through the runner deployed to ``target``, streamed in
    order; with ``output``, write the outputs to an .npz (one array per output name, frames
    first)."""
    import time

    from edgedeploy.deploy.infer_inputs import read_frames, write_outputs

    m = _manifest_for(manifest)
    prep = m.io.preprocess.model_dump(exclude_none=True) if m.io.preprocess else None
    if prep is not None and "layout" not in prep:
        from edgedeploy.importers import detect_format

        # the runner takes the model's own layout: a .tflite model's image input is NHWC
        prep["layout"] = NHWC if detect_format(m.model.path, m.model.format) == TFLITE else NCHW
    with infer_client(manifest, target, host=host, window=window, loaded=m,
                      accept_new_host_keys=accept_new_host_keys) as client:
        frames = read_frames(source, client.inputs, prep)
        names = [t.name for t in client.outputs]
        t0 = time.perf_counter()
        results = [outs for _, outs in client.stream(frames.frames)]
        seconds = time.perf_counter() - t0
    if output is not None:
        write_outputs(output, names, results)
    return InferResult(target, str(source), names, frames.labels[:len(results)], results,
                       seconds, Path(output) if output is not None else None)
