"""The plan: one typed object from planner to runner (``plans/<name>.<alias>.plan.json``).

The planner builds a :class:`Plan`, measurement and refinement update it (``model_copy``), the
lockfile writer (:mod:`edgedeploy.planner.lock`) serialises it canonically, and ``build`` converts
it once into the runner's own config types (:meth:`Plan.runner_plans`). ``load_plan`` turns any
unreadable, malformed or foreign file into a clean :class:`PlanError` (exit code 2).

Every stage and every per-layer choice names an engine (``runtime.engines``). A stage on a GPU
names its engine, device and providers, and stays ``verified: false`` until a measurement on a
board has run it: nothing here can launch a GPU kernel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from edgedeploy.errors import PlanError

SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (SCHEMA_VERSION,)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _without(data: Any, **unset: Any) -> Any:
    """A serialised model without the keys that hold their unset value: fields added after
    lockfiles existed write nothing until they are set, so older lockfiles stay byte-identical."""
    if isinstance(data, dict):
        for key, value in unset.items():
            if key in data and data[key] == value and type(data[key]) is type(value):
                del data[key]
    return data


class _Batched(_Model):
    """A stage that may micro-batch: ``batch`` frames per engine call (1: one at a time), and
    may run ``inline``, in the feeding process (a plan's only stage; its replicas and
    micro-batches then run in threads of that process).

    A stage of batch 1 writes no ``batch`` key and one not inline no ``inline`` key, so
    lockfiles of other plans stay byte-identical to those written before stages could."""

    batch: int = Field(1, ge=1)
    inline: bool = False

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler: Any) -> Any:
        return _without(handler(self), batch=1, inline=False)


class Predicted(_Model):
    throughput_fps: float | None
    latency_ms: float | None
    energy_mj: float | None
    power_w: float | None
    period_ms: float | None

    def per_frame_faster(self, up: float, latency_by: float) -> Predicted:
        """These figures with each frame ``up`` times faster (throughput up, period and energy
        a frame down by it) and latency times ``latency_by``; a figure not predicted stays so."""

        def scaled(value: float | None, by: float) -> float | None:
            return None if value is None else value * by

        return self.model_copy(update={
            "throughput_fps": scaled(self.throughput_fps, up),
            "period_ms": scaled(self.period_ms, 1.0 / up),
            "energy_mj": scaled(self.energy_mj, 1.0 / up),
            "latency_ms": scaled(self.latency_ms, latency_by)})


class PlanLayer(_Model):
    name: str
    op: str
    #: A conv primitive (``winograd_f4x3/nchw``), ``native``, or a segment engine's name.
    choice: str
    #: The engine that runs the choice (``native`` for primitives and native ops).
    engine: str
    stage: int
    predicted_ms: float | None
    #: The layer's arithmetic where it is not fp32 (``int8``: quantize-dequantize around it).
    precision: str | None = None

    @model_serializer(mode="wrap")
    def _without_fp32(self, handler: Any) -> Any:
        """An fp32 layer writes no ``precision`` key, as before layers recorded it."""
        return _without(handler(self), precision=None)


class PlanStage(_Batched):
    index: int
    name: str
    start: int = Field(ge=0)
    stop: int = Field(ge=1)
    cluster: str
    cores: int = Field(ge=1)
    replicas: int = Field(ge=1)
    cpus: list[int]
    inputs: list[str]
    outputs: list[str]
    predicted_ms: float | None
    primitive_mix: dict[str, int]
    #: The stage's device engine: ``native`` on CPU clusters (its layers name their engines),
    #: a GPU engine (``onnxruntime-cuda``, ``onnxruntime-tensorrt``) on the GPU.
    engine: str = "native"
    #: Every engine the stage's layers run on, sorted.
    engines: list[str] = Field(default_factory=list)
    #: GPU stages: the device index, the execution providers the board must offer, fp16 allowed.
    device_id: int | None = None
    providers: list[str] = Field(default_factory=list)
    fp16: bool = False
    #: False until a measurement on a board ran this stage (GPU stages are planned, not run here;
    #: so are fp16 stages planned for a board that is not this host).
    verified: bool = True
    #: Written by `edgedeploy refine` (a refined lockfile): the stage's measured time.
    measured_ms: float | None = None


class ParetoStage(_Batched):
    start: int
    stop: int
    cluster: str
    cores: int
    replicas: int
    cpus: list[int]
    choices: list[str]
    engine: str = "native"
    device_id: int | None = None
    fp16: bool = False


class ParetoPoint(_Model):
    stages: list[ParetoStage]
    predicted: Predicted


class Baseline(_Model):
    """What a user would run instead, priced by the same model; with ``stages`` when it is an
    ordinary plan (the whole model through one engine, threaded or replicated)."""

    description: str
    predicted: Predicted
    stages: list[ParetoStage] | None = None


class Contender(_Model):
    """One plan measured on the board by measure-to-decide."""

    name: str
    predicted: Predicted
    measured_fps: float | None
    rounds_fps: list[float]
    latency_ms: float | None = None
    energy_mj: float | None = None
    #: A baseline configuration: a contender that is not must beat the best one by the
    #: decision's margin (a tie goes to what a user would run by hand).
    baseline: bool = False
    #: The model precision it runs, when ``model.precision: auto`` had the board choose it.
    precision: str | None = None
    #: Its rounds in the confirmation (the winner of the shortlist's rounds timed again against
    #: the best baseline, when it was no baseline); None for the contenders not timed again.
    confirm_fps: list[float] | None = None

    @model_serializer(mode="wrap")
    def _without_unmeasured_precision(self, handler: Any) -> Any:
        """A contender of a decision that did not compare precisions writes no ``precision``,
        and one not timed again no ``confirm_fps``."""
        return _without(handler(self), precision=None, confirm_fps=None)


class Decision(_Model):
    """How the plan was chosen: by measurement on the target (the winner among contenders), or
    from the cost model alone (``measured: false``, with the reason)."""

    measured: bool
    target: str
    simulated: bool = False
    estimator: str = ""
    budget_s: float | None = None
    seconds: float | None = None
    winner: str | None = None
    reason: str | None = None
    contenders: list[Contender] = Field(default_factory=list)


class Calibration(_Model):
    """The frames an int8 model was calibrated and checked on."""

    #: The .npz (relative to the lockfile), or ``random`` for seeded random frames.
    source: str
    sha256: str | None = None
    frames: int
    heldout_frames: int
    #: True for random frames: scales not fitted to real inputs, a guard on unreal ones.
    weak: bool = False


class PrecisionChoice(_Model):
    """Which precision was planned (``model.precision`` int8/fp16/auto) and what the accuracy
    guard measured: the int8 model's (or the model computed in fp16) outputs against fp32 on
    held-out calibration frames."""

    requested: str
    chosen: str
    #: The int8 model planned (relative to the lockfile); None when fp32 was kept or fp16
    #: chosen (the model's own file, computed in fp16).
    model: str | None = None
    max_output_error: float
    #: The manifest's bound on top-1 agreement, where it sets one.
    min_top1_agreement: float | None = None
    #: max |int8 - fp32| / max |fp32| (fp16 likewise) over the outputs on the held-out frames.
    measured_error: float | None = None
    #: Share of held-out frames whose arg-max class agrees, for (N, classes) outputs.
    top1_agreement: float | None = None
    calibration: Calibration
    reason: str | None = None
    #: Nodes of the model kept fp32 inside the int8 model (contiguous regions the guard needed
    #: float); empty when the whole model is int8 or fp32 was kept.
    fp32_nodes: list[str] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: Any) -> Any:
        """A wholly int8 (or fp32) choice writes no ``fp32_nodes`` key, and no top-1 bound
        unless the manifest set one, as before either existed."""
        return _without(handler(self), fp32_nodes=[], min_top1_agreement=None)


class WinogradChoice(_Model):
    """Which 3x3 convolutions the plan runs as Winograd F(4,3) in onnxruntime, and what
    measure-to-decide measured: each convolution alone, then the whole model in the winner's
    configuration, as given and rewritten (``planner.winograd``)."""

    chosen: bool
    #: The convolutions rewritten (ONNX node names): those that ran faster in their context.
    layers: list[str]
    #: Each timed convolution's speed-up in its context (ms as given / ms rewritten) on
    #: ``cores`` cores (``planner.winograd.in_context``).
    layer_gains: dict[str, float]
    cores: int
    #: The rewritten model (relative to the lockfile), where it was chosen.
    model: str | None = None
    #: Frames a second of the winner's configuration, the model as given and rewritten.
    as_given_fps: float | None = None
    rewritten_fps: float | None = None
    reason: str | None = None


class Plan(_Model):
    """A plan lockfile; ``choices`` and ``stage_ranges`` are what the executor needs."""

    schema_version: int
    kind: str
    name: str
    objective: str
    constraints: dict[str, Any]
    pipeline: dict[str, Any]
    primitives: dict[str, list[str]]
    target: dict[str, Any]
    model: dict[str, Any]
    inputs: dict[str, Any]
    planner: dict[str, Any]
    predicted: Predicted
    stages: list[PlanStage]
    layers: list[PlanLayer]
    baselines: dict[str, Baseline]
    pareto: list[ParetoPoint]
    #: Written by `edgedeploy refine`: measured figures and the search's record (optional).
    measured: dict[str, Any] | None = None
    refinement: dict[str, Any] | None = None
    #: Written by measure-to-decide (``edgedeploy plan`` on a reachable target).
    decision: Decision | None = None
    #: Written when ``model.precision`` is int8 or auto: the choice and its accuracy guard.
    precision: PrecisionChoice | None = None
    #: Written by measure-to-decide where the model has convolutions Winograd may run.
    winograd: WinogradChoice | None = None

    @model_serializer(mode="wrap")
    def _without_unplanned_precision(self, handler: Any) -> Any:
        """A plan of the model as given writes no ``precision`` key, an untried rewrite no
        ``winograd`` key."""
        return _without(handler(self), precision=None, winograd=None)

    @property
    def choices(self) -> dict[str, str]:
        return {layer.name: layer.choice for layer in self.layers}

    @property
    def cuts(self) -> list[int]:
        """First layer index of every stage after the first (``runtime.stages`` convention)."""
        return [s.start for s in self.stages[1:]]

    def model_path(self, plan_file: str | Path) -> Path:
        """The model file, resolved against the lockfile's folder."""
        return (Path(plan_file).parent / self.model["path"]).resolve()

    @property
    def engines(self) -> list[str]:
        """Every engine the chosen plan uses."""
        return sorted({e for s in self.stages for e in [s.engine, *s.engines]})

    @property
    def unverified_stages(self) -> list[str]:
        return [s.name for s in self.stages if not s.verified]

    def runner_plans(self) -> tuple[Any, ...]:
        """The chosen plan (``plan``) and its Pareto set (``pareto<k>``) as the runner's own
        :class:`~edgedeploy.runtime.runner_config.PlanConfig` objects: the one conversion.

        The Pareto set usually holds the chosen plan itself, and may hold a point twice; a point
        whose stages and choices equal the plan's or an earlier point's
        (:func:`~edgedeploy.runtime.manager.plan_key`) is dropped: the runtime manager once
        flapped between two such names, and a switch between them cannot change anything. The
        others keep their lockfile index (``pareto<k>`` is always the lockfile's ``pareto[k]``,
        gaps and all, as in the measure-to-decide shortlist), so a name in a status timeline
        leads back to its point.
        """
        from edgedeploy.runtime.manager import plan_key

        best = _runner_plan("plan", [(s.name, s) for s in self.stages], self.choices,
                            self.predicted)
        seen = {plan_key(best)}
        others = []
        for k, point in enumerate(self.pareto):
            other = self._point_plan(f"pareto{k}", point.stages, point.predicted)
            if (key := plan_key(other)) in seen:
                continue  # the same pipeline under another name: skipped, not renumbered
            seen.add(key)
            others.append(other)
        return (best, *others)

    def baseline_plans(self) -> tuple[Any, ...]:
        """The runnable baselines (the whole model through one engine, threaded or replicated)
        as runner plans named as the lockfile names them: configurations refinement measures on
        the board, which a bundle may ship segments for without serving them."""
        return tuple(self._point_plan(name, b.stages, b.predicted)
                     for name, b in sorted(self.baselines.items()) if b.stages)

    def _point_plan(self, name: str, stages: list[ParetoStage], predicted: Predicted) -> Any:
        """One configuration of this plan's model (a Pareto point, a baseline, a contender)
        as the runner's ``PlanConfig`` named ``name``."""
        return configuration_plan([layer.name for layer in self.layers], name, stages,
                                  predicted)


def configuration_plan(layer_names: Sequence[str], name: str, stages: list[ParetoStage],
                       predicted: Predicted) -> Any:
    """A configuration of a model whose layers are ``layer_names`` as the runner's
    ``PlanConfig`` named ``name`` (also for a model the lockfile does not hold: the Winograd
    trial's rewritten one)."""
    choices = {layer_names[i]: c for s in stages
               for i, c in zip(range(s.start, s.stop), s.choices, strict=True)}
    return _runner_plan(name, [(f"stage{j}", s) for j, s in enumerate(stages)], choices,
                        predicted)


def _runner_plan(name: str, stages: list[tuple[str, PlanStage | ParetoStage]],
                 choices: dict[str, str], predicted: Predicted) -> Any:
    """One lockfile configuration (its stages by name) as the runner's ``PlanConfig``."""
    from edgedeploy.runtime.runner_config import PlanConfig, StageConfig

    return PlanConfig(name, tuple(
        StageConfig(name=n, start=s.start, stop=s.stop, cpus=tuple(s.cpus), replicas=s.replicas,
                    engine=s.engine, device_id=s.device_id or 0, fp16=s.fp16, batch=s.batch,
                    inline=s.inline) for n, s in stages), choices,
        {k: float(v) for k, v in predicted.model_dump().items() if v is not None})


def load_plan(path: str | Path) -> Plan:
    """Read and validate a lockfile; PlanError naming the file and the first problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"plan file not found: {path}",
                        hint="create it with: edgedeploy plan MANIFEST") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read plan file {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PlanError(f"{path}: not valid JSON ({exc})",
                        hint="re-create it with: edgedeploy plan MANIFEST") from None
    if not isinstance(data, dict) or data.get("kind") != "edgedeploy-plan":
        raise PlanError(f"{path}: not an edgedeploy plan lockfile")
    if data.get("schema_version") not in SUPPORTED_SCHEMA_VERSIONS:
        raise PlanError(f"{path}: plan schema_version {data.get('schema_version')!r} is not "
                        f"supported (this edgedeploy reads {SUPPORTED_SCHEMA_VERSIONS})",
                        hint="re-plan with this version: edgedeploy plan MANIFEST")
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlanError(f"{path}: invalid plan at {where}: {first['msg']}") from None
    _check_consistent(path, plan)
    return plan


def is_lockfile(path: str | Path) -> bool:
    """A plan lockfile by name (``*.plan.json``) or by content (``kind: edgedeploy-plan``)."""
    path = Path(path)
    if path.name.endswith(".plan.json"):
        return True
    if path.suffix != ".json":
        return False
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(head, dict) and head.get("kind") == "edgedeploy-plan"


def check_lockfile(path: str | Path) -> tuple[Plan, list[str]]:
    """Load a lockfile and check what it refers to: (the plan, warnings). PlanError (exit 2)
    when it cannot be used: malformed, an engine this edgedeploy does not know, a choice
    for a layer of no stage."""
    from edgedeploy.runtime.engines import ENGINES

    path = Path(path)
    plan = load_plan(path)
    unknown = sorted({e for e in plan.engines if e not in ENGINES}
                     | {layer.engine for layer in plan.layers if layer.engine not in ENGINES})
    if unknown:
        raise PlanError(f"{path}: the plan names engine(s) {unknown} this edgedeploy does not "
                        f"know (known: {', '.join(sorted(ENGINES))})",
                        hint="re-plan with this version: edgedeploy plan MANIFEST")
    warnings = []
    model = plan.model_path(path)
    if not model.is_file():
        warnings.append(f"model file {model} is missing (build and push need it)")
    for s in plan.stages:
        if not s.verified:
            what = f"computes fp16 on {s.cluster}" if s.fp16 else f"runs on {s.engine}"
            warnings.append(f"{s.name} {what}: unverified until measured on a board")
    return plan, warnings


def _check_consistent(path: Path, plan: Plan) -> None:
    n = len(plan.layers)
    expect = 0
    for s in plan.stages:
        if s.start != expect or s.stop <= s.start:
            raise PlanError(f"{path}: stage {s.index} covers layers {s.start}..{s.stop}, "
                            f"expected to start at {expect}")
        expect = s.stop
    if expect != n:
        raise PlanError(f"{path}: stages cover {expect} of {n} layers")
