"""What ``edgedeploy build`` accepts, reduced to a BuildInput: a plan lockfile, a manifest, a model.

* ``*.plan.json``: exactly that plan (active) plus its Pareto set (``pareto0``...), model and
  target from the lockfile, ``plan_sha256`` = sha256 of the lockfile's bytes.
* ``*.yaml``/``*.yml`` manifest: its committed lockfile for ``--target`` when one exists,
  else the model as one stage.
* a model (``.onnx``/``.tflite``): one stage on every local core with the runtime's default
  choices, so a bundle can be built and tested before any planning.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edgedeploy.errors import InputError
from edgedeploy.generator.bundle import BundleInfo, build_bundle
from edgedeploy.generator.context import BuildInput, with_io
from edgedeploy.runtime.runner_config import PlanConfig, StageConfig
from edgedeploy.runtime.vocab import FP16, LOCAL

MODEL_SUFFIXES = (".onnx", ".tflite")


def _family(board: str | None) -> str:
    if not board:
        return "linux"
    from edgedeploy.boards.catalog import load_target

    return str(load_target(board).family)


def _python(board: str | None) -> str:
    """The bundle's fallback interpreter: the board descriptor's ``ssh.python`` (a name or a path
    on the board), ``python3`` for ``local``. Never this host's ``sys.executable``: a bundle built
    for ``local`` may be pushed over SSH. The deployer writes the interpreter it chose for the
    target (``deploy.api.board_python``) into the install's ``run/python``, which run.sh and
    health.sh prefer."""
    if not board or board == LOCAL:
        return "python3"
    from edgedeploy.boards.catalog import load_target

    return str(load_target(board).ssh.python or "python3")


#: Without a throughput or latency constraint, the runtime manager still guards the plan's own
#: measured throughput: it may switch when a frame rate falls below this share of it.
DEFAULT_THROUGHPUT_RATIO = 0.75


def manager_targets(constraints: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    """The runtime manager's targets from a lockfile's constraints (the manifest's)."""
    keys = ("min_throughput_fps", "max_latency_ms")
    targets = {k: float(constraints[k]) for k in keys if constraints.get(k) is not None}
    if "min_throughput_fps" not in targets:
        targets["min_throughput_ratio"] = DEFAULT_THROUGHPUT_RATIO
    return tuple(sorted(targets.items()))


def from_plan(plan: Any, plan_file: str | Path, *, free_batch: bool = False,
              ship_baselines: bool = False) -> BuildInput:
    """The BuildInput of a validated lockfile (``schemas.plan.Plan``): best plan + Pareto set,
    converted once into the runner's config types (``free_batch``: see BuildInput;
    ``ship_baselines``: the baselines' segments too, for refinement on the board to measure)."""
    plan_file = Path(plan_file)
    board = str(plan.target.get("board") or LOCAL)
    if "/" in board or board.endswith((".yaml", ".yml")):
        board = str((plan_file.parent / board).resolve())
    half = plan.precision is not None and plan.precision.chosen == FP16
    return BuildInput(name=plan.name, target=str(plan.target.get("alias") or LOCAL),
                      family=_family(board), plans=plan.runner_plans(), active="plan",
                      python=_python(board), targets=manager_targets(plan.constraints),
                      plan_sha256=hashlib.sha256(plan_file.read_bytes()).hexdigest(),
                      free_batch=free_batch,
                      measured_plans=plan.baseline_plans() if ship_baselines else (),
                      # fp16 on the board against fp16 here: within the guard's bound
                      **({"reference_fp16": True,
                          "tolerance": max(1e-3, plan.precision.max_output_error)}
                         if half else {}))


def measuring_input(plan: Any, board: str, contenders: tuple[PlanConfig, ...]) -> BuildInput:
    """The BuildInput of a bundle that only measures (measure-to-decide on a board): the
    contenders as its plans and nothing else, so the segments of the lockfile's Pareto points
    left off the shortlist (a pipeline cut in several places) are not uploaded, nor the weights
    its onnxruntime segments hold. It is never installed or served."""
    return BuildInput(name=plan.name, target=str(plan.target.get("alias") or LOCAL),
                      family=_family(board), plans=contenders, active=contenders[0].name,
                      python=_python(board), plans_only=True)


def model_build_input(graph: Any, name: str, target: str, family: str, *,
                      local: bool = True, board: str | None = None) -> BuildInput:
    """One stage over every layer, default choices; on this host's cores for ``local``, else on
    whatever cores the device has (empty ``cpus``: the runner uses every available core)."""
    from edgedeploy.runtime.affinity import available_cpus
    from edgedeploy.runtime.executor import default_choice

    fmt = str(graph.source.get("format") or "onnx")
    choices = {layer.name: default_choice(layer, fmt) for layer in graph.layers}
    cpus = tuple(available_cpus()) if local else ()
    stage = StageConfig("stage0", 0, len(graph.layers), cpus=cpus)
    return BuildInput(name=name, target=target, family=family,
                      plans=(PlanConfig("plan0", (stage,), choices),),
                      python=_python(board or ("local" if local else None)))


def _derived_model(plan: Any) -> str | None:
    """What a lockfile's model file was made from the user's by the planner (a file under the
    build folder, which a bare build cannot make again), else None."""
    if plan.winograd is not None and plan.winograd.chosen:
        return f"with {len(plan.winograd.layers)} convolution(s) rewritten as Winograd"
    if plan.precision is not None and plan.precision.chosen == "int8" and plan.precision.model:
        return "quantized to int8"
    return None


def build_from_path(source: str | Path, out_dir: str | Path | None = None, *,
                    target: str | None = None, family: str | None = None,
                    input_shape: str | None = None, graph: Any = None,
                    io: Any = None, free_batch: bool = False,
                    ship_baselines: bool = False) -> BundleInfo:
    """Build a bundle from a lockfile, a manifest or a model file (see the module doc);
    ``graph``: the lockfile's model already imported by the caller (not imported again);
    ``io``: the manifest's ``io:`` for a lockfile's bundle (a manifest brings its own);
    ``free_batch``, ``ship_baselines``: for refinement on the board (:func:`from_plan`)."""
    from edgedeploy.importers import load_model, parse_shape

    source = Path(source)
    if not source.exists():
        raise InputError(f"not found: {source}", hint="give a .plan.json, a manifest or a model")
    if source.name.endswith(".plan.json"):
        from edgedeploy.schemas.plan import load_plan

        plan = load_plan(source)
        build = from_plan(plan, source, free_batch=free_batch, ship_baselines=ship_baselines)
        model = plan.model_path(source)
        derived = _derived_model(plan)
        if graph is None and derived and not model.is_file():
            from edgedeploy.errors import ModelError

            raise ModelError(f"{source}: its model {derived} is gone ({model})",
                             "`edgedeploy push` rebuilds it from the manifest and the "
                             "lockfile; or plan again")
        if graph is None:
            graph = load_model(model, input_shape=tuple(plan.model.get("input_shape") or ())
                               or None)
        out = out_dir or Path("build") / f"{build.name}.{build.target}"
        if io is not None:
            build = with_io(build, io, graph)
        return build_bundle(build, graph, model, out, family=family)
    if source.suffix in (".yaml", ".yml"):
        return _from_manifest(source, out_dir, target, family)
    if source.suffix.lower() not in MODEL_SUFFIXES:
        raise InputError(f"{source}: expected a .plan.json, a manifest (.yaml) or a model "
                         f"({', '.join(MODEL_SUFFIXES)})")
    board = target or "local"
    graph = load_model(source, input_shape=parse_shape(input_shape) if input_shape else None)
    build = model_build_input(graph, source.stem, board, family or _family(board),
                              local=board == LOCAL, board=board)
    return build_bundle(build, graph, source, out_dir or Path("build") / source.stem)


def _from_manifest(path: Path, out_dir: str | Path | None, alias: str | None,
                   family: str | None) -> BundleInfo:
    from edgedeploy.importers import load_model
    from edgedeploy.schemas import load_manifest

    manifest = load_manifest(path)
    if alias is None:
        alias = LOCAL if LOCAL in manifest.targets else sorted(manifest.targets)[0]
    if alias not in manifest.targets:
        raise InputError(f"{path}: no target {alias!r}",
                         hint=f"targets: {', '.join(sorted(manifest.targets))}")
    out = Path(out_dir) if out_dir else manifest.bundle_dir(alias)
    lock = manifest.plan_file(alias)
    if lock.exists():
        return build_from_path(lock, out, family=family, io=manifest.io)
    spec = manifest.model
    graph = load_model(spec.path, input_shape=tuple(spec.input_shape) if spec.input_shape
                       else None)
    board = manifest.targets[alias].board
    build = model_build_input(graph, manifest.name, alias, family or _family(board),
                              local=board == LOCAL, board=board)
    return build_bundle(with_io(build, manifest.io, graph), graph, spec.path, out)
