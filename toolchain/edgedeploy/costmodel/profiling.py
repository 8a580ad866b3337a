"""Profiling a real board: measure the designed layer shapes into its profile, then the
whole-model segment factors (``edgedeploy profile --target local`` or ``--target ALIAS``).

This host is measured in-process (:func:`profile_local`). A board reached over SSH is measured
by the runtime's probe running there (:func:`profile_board`): this side chooses the tasks and
their order exactly as for this host, the board spends the budget, and the samples, segment
factors and replica speed-ups land in that board's profile (its descriptor's fingerprint).
Transport stays out of this module: a :class:`Probe` is handed in (the deployer has one).

Kept out of the CLI so Python callers get exactly what the command does; progress and messages
are callbacks, so the caller decides how (or whether) they are shown. Board twins are profiled by
``edgedeploy.twins.profile``: this module measures real hardware only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgedeploy.costmodel.configs import CoreConfig
from edgedeploy.errors import ExecutionError, InputError
from edgedeploy.runtime.layer_timing import Measurement
from edgedeploy.runtime.model_timing import FRAME, OWN_REPLICA_WINDOWS
from edgedeploy.runtime.probe import BATCH as PROBE_BATCH
from edgedeploy.runtime.probe import OPAQUE, REPLICA_BATCH_EVENT
from edgedeploy.runtime.vocab import INT8

if TYPE_CHECKING:
    from edgedeploy.costmodel.profiler import Progress, Task
    from edgedeploy.costmodel.segments import OwnModel, WholeRuns
    from edgedeploy.schemas.target import Target

#: The ``--shapes`` choices: zoo layers plus space-filling ones, or space-filling only.
SHAPE_SETS = ("designed", "space")


def check_shapes(shapes: str) -> None:
    """Reject an unknown ``--shapes`` before any measuring starts (exit 2)."""
    if shapes not in SHAPE_SETS:
        raise InputError(f"--shapes must be 'designed' or 'space', not {shapes!r}")


def shape_sample(shapes: str) -> list[Any]:
    """The layer descriptors to measure; held-out shapes stay out so evaluation stays honest."""
    from edgedeploy.costmodel import shapes as shapes_mod

    if shapes == "designed":
        return shapes_mod.designed_sample()
    return [d for d in shapes_mod.space_filling(160) if not shapes_mod.is_heldout(d)]


#: Extra budgets a profile that must reach ``min_fit_samples`` may take.
MAX_TOP_UPS = 3


def profile_local(target: Target, budget_s: float, shapes: str = "designed",
                  progress: Progress | None = None,
                  info: Callable[[str], None] | None = None,
                  calibration: Sequence[tuple[str, int]] | None = None,
                  min_fit_samples: int = 0, own: OwnModel | None = None,
                  total_s: float | None = None) -> dict[str, Any]:
    """Measure ``shapes`` on this host for ``budget_s``, append to its profile, then refresh
    the segment factors; the ``profile --json`` answer.

    ``own``: the model the profile is taken for. Its conv shapes are measured first, and it
    is run whole beside the calibration models (``costmodel.segments``), so its plan is priced
    by what this host does with it.

    ``progress`` gets (elapsed, budget, samples, eta, label) while layers are measured;
    ``info`` gets one line per whole-model calibration run; ``calibration`` names the zoo
    models (name, input size) run whole (default: as many of ``segments.CALIBRATION_MODELS``
    as the budget pays for, see ``segments.calibration_models``; empty: the stored factors
    are kept as they are). With ``min_fit_samples``, a profile that still has
    fewer layer samples (a busy host measures few in its budget, and a large model's own
    shapes, measured first, take seconds each) gets up to :data:`MAX_TOP_UPS` more budgets of
    layers, the lightest shapes first, said on ``info``: VGG-16's quick profile took two more
    of its heavy shapes for 19 samples (seen while developing).

    ``total_s``: the whole profile's budget. The models are then run whole first and the
    layers get what it leaves, ``budget_s`` at least: a model's whole runs cost what they cost
    (a ResNet-50's 14-17 s on a 2-core host), and after the layers they ran over the budget.
    The runs are priced once the layers have refitted the cost model.
    """
    from edgedeploy.costmodel import profile as prof_mod
    from edgedeploy.costmodel import shapes as shapes_mod
    from edgedeploy.costmodel.evaluate import ensure_fit_sample
    from edgedeploy.costmodel.profiler import LocalMeasure
    from edgedeploy.costmodel.segments import calibration_models

    if target.name != "local":
        raise InputError(f"target {target.name!r} cannot be profiled from here",
                         hint="profile --target local, or a board over SSH through its "
                              "manifest alias: profile -m edgedeploy.yaml --target ALIAS")
    check_shapes(shapes)
    sample = with_model_shapes(shape_sample(shapes), own.graph if own else None)
    prof = prof_mod.open_profile(target)
    before = len(prof.samples)
    models = calibration or calibration_models(total_s or budget_s)
    runs_whole = calibration is None or bool(calibration)  # empty: the stored factors stay
    start = time.monotonic()
    whole = None
    if total_s is not None and runs_whole:
        whole = whole_runs(target, info, models, own)
        budget_s = _layer_budget(budget_s, total_s, time.monotonic() - start, info)
    measure = LocalMeasure(target)
    try:
        new = ensure_fit_sample(target, prof, budget_s, measure, progress, sample)
        lightest = sorted(sample, key=lambda d: d.macs)
        for _ in range(MAX_TOP_UPS):
            if len(prof.select("fit")) >= min_fit_samples:
                break
            if info is not None:
                info(f"profile: fewer than {min_fit_samples} layer samples (a busy host, or "
                     f"heavy layers); measuring {budget_s:.0f} s more, lightest shapes first")
            new += ensure_fit_sample(target, prof, budget_s, measure, progress, lightest)
    finally:
        measure.close()
    if runs_whole:
        factors = save_priced(target, Path(prof.path), whole if whole is not None
                              else whole_runs(target, info, models, own))
    else:
        factors = _stored_factors(Path(prof.path))
    return {"target": prof.target_name, "fingerprint": prof.fingerprint, "profile": str(prof.path),
            "new_samples": len(new), "samples": before + len(new),
            "shapes": len({shapes_mod.shape_key(s.descriptor) for s in new}),
            "layer_budget_s": round(budget_s, 2),
            "segment_factors": factors, "elapsed_s": round(time.monotonic() - start, 2)}


def _layer_budget(least_s: float, total_s: float, spent_s: float,
                  info: Callable[[str], None] | None) -> float:
    """The layers' share of a profile of ``total_s`` whose whole-model runs took ``spent_s``:
    what is left, ``least_s`` at least (said on ``info``)."""
    left = max(least_s, total_s - spent_s)
    if info is not None:
        info(f"profile: models run whole in {spent_s:.0f} s; {left:.0f} s of layer samples")
    return left


def with_model_shapes(sample: list[Any], graph: Any | None) -> list[Any]:
    """``graph``'s own conv shapes (heaviest first; a real board's profiler times convs, as
    the designed sample holds), then the rest of ``sample``."""
    from edgedeploy.costmodel import shapes as shapes_mod
    from edgedeploy.runtime import ir

    if graph is None:
        return sample
    first = [d for d in shapes_mod.model_shapes(graph) if d.op == ir.CONV2D]
    keys = {shapes_mod.shape_key(d) for d in first}
    return first + [d for d in sample if shapes_mod.shape_key(d) not in keys]


def segment_factors(target: Target, profile_file: Path,
                    info: Callable[[str], None] | None = None,
                    models: Sequence[tuple[str, int]] | None = None,
                    own: OwnModel | None = None) -> dict[str, Any]:
    """Whole-model runs of both engines on every core count, saved beside the profile: they
    correct what per-layer samples miss (see costmodel.segments). ``own`` takes the last zoo
    model's place and keeps its own factors; those of models measured before stay."""
    return save_priced(target, profile_file, whole_runs(target, info, models, own))


def whole_runs(target: Target, info: Callable[[str], None] | None = None,
               models: Sequence[tuple[str, int]] | None = None,
               own: OwnModel | None = None) -> WholeRuns:
    """:func:`segment_factors`' runs as measured, not yet priced (:func:`save_priced`): the
    zoo's ``models`` beside ``own``, or the zoo's alone where ``own`` does not run whole."""
    from edgedeploy.costmodel.configs import core_configs
    from edgedeploy.costmodel.segments import CALIBRATION_MODELS, measure_runs

    configs = core_configs(target)
    chosen = _zoo_beside(models or CALIBRATION_MODELS, own)
    try:
        return measure_runs(target, configs, lambda c: c.cpus(target), chosen,
                            progress=info, own=own)
    except Exception as exc:  # a model the engines run in a plan but not here, whole: say so
        if own is None:
            raise
        if info is not None:
            info(f"segments: {own.path.name} does not run whole here ({exc}); "
                 "calibrating on the zoo's models only")
        return measure_runs(target, configs, lambda c: c.cpus(target), chosen, progress=info)


def save_priced(target: Target, profile_file: Path, whole: WholeRuns) -> dict[str, Any]:
    """``whole`` priced by the target's cost model as its profile now fits it, saved beside
    the profile (the own-model factors of models measured before stay); the factors."""
    from edgedeploy.costmodel import CostModel
    from edgedeploy.costmodel.segments import price

    factors, runs = price(CostModel.for_target(target), whole)
    _save_keeping(profile_file, factors, runs)
    return factors


def has_own_factors(profile_file: Path, own: OwnModel) -> bool:
    """Whether the factors beside ``profile_file`` hold ``own``'s (its file digest's)."""
    from edgedeploy.costmodel.segments import MODELS, load_factors

    return own.sha256 in (load_factors(profile_file).get(MODELS) or {})


def own_model_factors(target: Target, profile_file: Path, own: OwnModel,
                      info: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Calibrate one more model on a host already profiled: ``own`` alone run whole (every
    core count, its replicas, batches and opaque layers), its factors kept beside those
    already there, which stay as they were (the zoo's runs fitted them; one model's would
    not). A host's second model is then priced as its first was."""
    from edgedeploy.costmodel import CostModel
    from edgedeploy.costmodel.segments import MODELS, measure_factors

    model = CostModel.for_target(target)
    measured, runs = measure_factors(model, model.configs, lambda c: c.cpus(target), [],
                                     progress=info, own=own)
    _add_own(profile_file, own, measured[MODELS][own.sha256], runs)
    return measured[MODELS][own.sha256]


def _add_own(profile_file: Path, own: OwnModel, measured: dict[str, Any],
             runs: list[dict[str, Any]]) -> None:
    """Store one model's own factors (and its runs) beside those already there."""
    from edgedeploy.costmodel.segments import MODELS, factors_lock, save_factors, stored

    with factors_lock(profile_file):
        # never calibrated whole (or against another prior): the model's own factors alone
        factors, detail = stored(profile_file)
        factors[MODELS] = {**(factors.get(MODELS) or {}), own.sha256: measured}
        save_factors(profile_file, factors, detail + runs)


def _zoo_beside(models: Sequence[tuple[str, int]], own: OwnModel | None
                ) -> list[tuple[str, int]]:
    """The zoo's calibration models run beside ``own``: it takes the last one's place."""
    return list(models)[:-1] if own is not None and len(models) > 1 else list(models)


def _save_keeping(profile_file: Path, factors: dict[str, Any],
                  runs: list[dict[str, Any]]) -> None:
    """Save a profile's ``factors`` and ``runs`` beside it, keeping the own-model factors
    already there (read under the lock, after the measuring: models calibrated meanwhile
    stay)."""
    from edgedeploy.costmodel.segments import MODELS, factors_lock, save_factors, stored

    with factors_lock(profile_file):
        kept = stored(profile_file)[0].get(MODELS) or {}  # as written: each with its rule
        save_factors(profile_file, _keeping(kept, factors), runs)


def _keeping(kept: dict[str, Any], factors: dict[str, Any]) -> dict[str, Any]:
    """``factors`` with the own-model factors measured before (``kept``) that it does not
    measure again."""
    from edgedeploy.costmodel.segments import MODELS

    if kept or MODELS in factors:
        factors[MODELS] = {**kept, **(factors.get(MODELS) or {})}
    return factors


def _stored_factors(profile_file: Path) -> dict[str, Any]:
    from edgedeploy.costmodel.segments import load_factors

    return load_factors(profile_file)


# --- a board reached over a transport: the measuring runs there (runtime.probe) --------------

#: on_event(one JSON event of ``runtime.probe``)
OnEvent = Callable[[dict[str, Any]], None]


class Probe(Protocol):
    """Runs ``python -m edgedeploy.runtime.probe`` on a board (the deployer supplies one over
    SSH): sends ``request`` with ``files`` (request key -> local file), passes every event to
    ``on_event`` as it arrives (possibly from the transport's reader thread) and returns the
    ``start`` event (where the probe ran, the board's runtime versions and cores); a failure
    raises an ``EdgeDeployError``."""

    label: str

    def __call__(self, request: dict[str, Any], files: Mapping[str, Path],
                 on_event: OnEvent) -> dict[str, Any]: ...


class BoardMeasure:
    """The profiler's measure for a board: the whole ordered task list goes to the board in one
    request and the budget is spent there (``run_batch``); samples stream back as events."""

    def __init__(self, target: Target, probe: Probe, seed: int = 0) -> None:
        self.target, self.probe, self.seed = target, probe, seed
        #: the ``start`` event of the last run (runtime versions, cores, where the probe ran)
        self.start: dict[str, Any] = {}

    def run_batch(self, tasks: Sequence[Task], expect_ms: np.ndarray, budget_s: float,
                  progress: Progress | None) -> list[tuple[int, Measurement]]:
        from edgedeploy.costmodel.profiler import label
        from edgedeploy.runtime.probe import PROTOCOL

        shapes: dict[Any, int] = {}
        for d, _, _ in tasks:
            shapes.setdefault(d, len(shapes))
        request = {"protocol": PROTOCOL, "layers": {
            "budget_s": float(budget_s), "seed": self.seed,
            "shapes": [d.to_dict() for d in shapes],
            "tasks": [{"shape": shapes[d], "primitive": prim, "cpus": cfg.cpus(self.target),
                       "expect_ms": float(e)}
                      for (d, prim, cfg), e in zip(tasks, expect_ms, strict=True)]}}
        done: list[tuple[int, Measurement]] = []

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") != "sample":
                return
            i = int(event["index"])
            done.append((i, Measurement(float(event["ms"]), int(event["reps"]),
                                        float(event["spread"]))))
            if progress is not None:
                progress(float(event["elapsed_s"]), budget_s, len(done), float(event["eta_s"]),
                         label(tasks[i]))

        self.start = self.probe(request, {}, on_event)
        return done

    def __call__(self, d: Any, primitive: str, config: CoreConfig) -> Measurement:
        """One task, one round trip (held-out layers); a batch is what profiling sends."""
        done = self.run_batch([(d, primitive, config)], np.array([np.nan]), float("inf"), None)
        if not done:
            raise ExecutionError(f"{self.probe.label}: the probe measured nothing")
        return done[0][1]


def profile_board(target: Target, probe: Probe, budget_s: float, shapes: str = "designed",
                  progress: Progress | None = None,
                  info: Callable[[str], None] | None = None,
                  calibration: Sequence[tuple[str, int]] | None = None,
                  graph: Any | None = None, own: OwnModel | None = None,
                  total_s: float | None = None) -> dict[str, Any]:
    """:func:`profile_local` for a board the probe reaches: the same shapes, order and budget
    (spent on the board, ``total_s`` as there), the samples and the segment factors and replica
    speed-ups stored in ``target``'s profile -- the board's, by its descriptor's fingerprint,
    never this host's. ``graph``'s conv shapes are measured first; ``own`` (that model's file)
    travels with the calibration models and is run whole through onnxruntime on the board, as
    on this host (a TFLite model is not: the probe times onnxruntime and native runs only)."""
    from edgedeploy.costmodel import profile as prof_mod
    from edgedeploy.costmodel import shapes as shapes_mod
    from edgedeploy.costmodel.evaluate import ensure_fit_sample
    from edgedeploy.costmodel.segments import calibration_models
    from edgedeploy.runtime.vocab import ONNXRUNTIME

    check_shapes(shapes)
    sample = with_model_shapes(shape_sample(shapes), graph)
    own = own if own is not None and own.engine == ONNXRUNTIME else None
    prof = prof_mod.open_profile(target)
    before = len(prof.samples)
    chosen = _zoo_beside(calibration or calibration_models(total_s or budget_s), own)
    runs_whole = calibration is None or bool(calibration)  # empty: the stored factors stay
    start = time.monotonic()
    board = None
    if total_s is not None and runs_whole:
        board = _board_runs(target, probe, info, chosen, own)
        budget_s = _layer_budget(budget_s, total_s, time.monotonic() - start, info)
    measure = BoardMeasure(target, probe)
    new = ensure_fit_sample(target, prof, budget_s, measure, progress, sample)
    if before == 0 and measure.start.get("runtime"):
        prof.runtime = dict(measure.start["runtime"])  # the board's versions, not this host's
        prof.save()
    if runs_whole:
        factors = _save_board_priced(target, Path(prof.path), board if board is not None
                                     else _board_runs(target, probe, info, chosen, own), own)
    else:
        factors = _stored_factors(Path(prof.path))
    return {"target": prof.target_name, "host": probe.label,
            "fingerprint": prof.fingerprint, "profile": str(prof.path),
            "new_samples": len(new), "samples": before + len(new),
            "shapes": len({shapes_mod.shape_key(s.descriptor) for s in new}),
            "layer_budget_s": round(budget_s, 2),
            "segment_factors": factors, "probe": measure.start.get("probe"),
            "python": measure.start.get("python"),
            "elapsed_s": round(time.monotonic() - start, 2)}


def _save_board_priced(target: Target, profile_file: Path, board: BoardRuns,
                       own: OwnModel | None) -> dict[str, Any]:
    """A board's runs priced by its cost model as its profile now fits it, saved beside the
    profile (:func:`save_priced` for a board: the runs travel as ONNX files and IR graphs, the
    times come back); the factors."""
    from edgedeploy.costmodel.segments import MODELS, REPLICAS, summarise

    detail = board.priced(target)
    factors: dict[str, Any] = {**summarise(detail),
                               REPLICAS: replica_speedups(detail, board.replicas)}
    mine = _own_measured(detail, board.replicas, own) if own is not None else None
    if mine is not None:
        factors[MODELS] = {own.sha256: mine}
    _save_keeping(profile_file, factors, detail)
    return factors


def own_board_factors(target: Target, profile_file: Path, probe: Probe, own: OwnModel,
                      info: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """:func:`own_model_factors` on a board the probe reaches: ``own`` alone run whole there,
    its factors kept beside those already there; None where it did not run."""
    board = _board_runs(target, probe, info, [], own)
    detail = board.priced(target)
    mine = _own_measured(detail, board.replicas, own)
    if mine is not None:
        _add_own(profile_file, own, mine, detail)
    return mine


@dataclass
class BoardRuns:
    """A board's whole-model runs as its probe sent them, not yet priced (:meth:`priced`)."""

    runs: list[dict[str, Any]]
    replicas: list[dict[str, Any]]
    graphs: dict[tuple[str, int | None], Any]

    def priced(self, target: Target) -> list[dict[str, Any]]:
        """Each run in ``costmodel.segments``' form, priced by ``target``'s cost model."""
        from edgedeploy.costmodel import CostModel
        from edgedeploy.costmodel.segments import summarise
        from edgedeploy.runtime.vocab import ONNXRUNTIME

        model = CostModel.for_target(target)
        int8 = summarise([{"config": r["config"], INT8: [r[INT8], r[ONNXRUNTIME]]}
                          for r in self.runs if r.get(INT8) is not None], (INT8,)).get(INT8)
        return [_priced(model, self.graphs[(r["model"], r["size"])], r, int8 or {})
                for r in self.runs]


def _board_runs(target: Target, probe: Probe, info: Callable[[str], None] | None,
                models: Sequence[tuple[str, int]], own: OwnModel | None) -> BoardRuns:
    """``models`` and ``own`` run whole on the board on every CPU configuration, and as
    replicas (measured there, not yet priced)."""
    import tempfile

    from edgedeploy.costmodel.configs import core_configs
    from edgedeploy.runtime.probe import PROTOCOL

    configs = [c for c in core_configs(target) if not c.is_gpu]
    runs: list[dict[str, Any]] = []
    replicas: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "info" and info is not None:
            info(str(event.get("message")))
        elif kind == "run":
            runs.append(event)
        elif kind in ("replicas", REPLICA_BATCH_EVENT):
            replicas.append(event)

    with tempfile.TemporaryDirectory() as tmp:
        specs, files, graphs = calibration_files(models, Path(tmp), own)
        request = {"protocol": PROTOCOL, "models": {
            "models": specs, "configs": [{"key": c.key, "cluster": c.cluster, "cores": c.cores,
                                          "cpus": c.cpus(target)} for c in configs]}}
        probe(request, files, on_event)
    return BoardRuns(runs, replicas, graphs)


def _own_measured(detail: list[dict[str, Any]], replicas: list[dict[str, Any]],
                  own: OwnModel) -> dict[str, Any] | None:
    """``own``'s factors from a board's runs (None where it did not run): as this host's
    (``segments.own_factors``), with its replicas' gains at each batch they were timed at."""
    from edgedeploy.costmodel.segments import REPLICA_BATCH, own_factors

    name = (own.path.stem, None)
    mine = [d for d in detail if (d["model"], d["size"]) == name]
    if not mine:
        return None
    events = [e for e in replicas if (e["model"], e.get("size")) == name]
    out = own_factors(mine, replica_speedups(mine, [e for e in events
                                                     if e["event"] == "replicas"]))
    gains: dict[str, dict[str, float]] = {}
    for e in events:
        if e["event"] == REPLICA_BATCH_EVENT and float(e["unbatched_fps"]) > 0:
            gains.setdefault(str(e["cluster"]), {})[str(e["batch"])] = round(
                float(e["fps"]) / float(e["unbatched_fps"]), 4)
    return {**out, REPLICA_BATCH: gains} if gains else out


def calibration_files(models: Sequence[tuple[str, int]], tmp: Path, own: OwnModel | None = None
                      ) -> tuple[list[dict[str, Any]], dict[str, Path],
                                 dict[tuple[str, int | None], Any]]:
    """Each calibration model exported from the zoo and imported, ``own`` first: its request
    entry, its files (keyed by the ONNX file's digest, so a board keeps one copy whatever the
    run; a zoo model's int8 variant beside it, where it quantizes) and its IR. ``own`` runs
    through onnxruntime only (``"native": false``), as on this host."""
    import hashlib

    from edgedeploy import zoo
    from edgedeploy.costmodel.segments import (
        BATCH_GAIN_MIN,
        BATCH_REPS,
        batched_file,
        int8_variant,
    )
    from edgedeploy.importers.onnx import import_onnx
    from edgedeploy.runtime.stages import BATCH_SIZES

    todo: list[tuple[str, int | None, Path, Any]] = (
        [(own.path.stem, None, own.path, own.graph)] if own is not None else [])
    for name, size in models:
        path = zoo.export(name, tmp / f"{name}-{size}.onnx", size=size)
        todo.append((name, size, path, import_onnx(path)))
    specs, files, graphs = [], {}, {}
    for name, size, path, graph in todo:
        key = f"{name}-{size}-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
        graph.save(tmp / key)
        files.update({f"{key}/model.onnx": path, f"{key}/graph.json": tmp / key / "graph.json",
                      f"{key}/weights.npz": tmp / key / "weights.npz"})
        spec: dict[str, Any] = {"name": name, "size": size, "onnx": f"{key}/model.onnx",
                                "graph": f"{key}/graph.json", "weights": f"{key}/weights.npz"}
        if own is not None and size is None:
            spec["native"] = False
            # the model a profile is taken for prices its plans: as on this host, the median
            # of a few replica windows
            spec["replica_windows"] = OWN_REPLICA_WINDOWS
            spec[FRAME] = True  # and its stage's own cost a frame, where a call is short
            opaque = _opaque_files(own, key, tmp)
            if opaque:
                spec[OPAQUE] = [entry for entry, _ in opaque]
                files.update(f for _, f in opaque)
            batched = batched_file(own.loaded(), tmp / key)
            if batched is not None:
                files[f"{key}/model.batched.onnx"] = Path(batched)
                spec[PROBE_BATCH] = {"onnx": f"{key}/model.batched.onnx",
                                     "sizes": list(BATCH_SIZES), "reps": BATCH_REPS,
                                     "gain_min": BATCH_GAIN_MIN, "every_short": True}
        else:
            int8 = int8_variant(path, graph, tmp)
            if int8 is not None:
                files[f"{key}/model.int8.onnx"] = int8
                spec[INT8] = f"{key}/model.int8.onnx"
        specs.append(spec)
        graphs[(name, size)] = graph
    return specs, files, graphs


def _opaque_files(own: OwnModel, key: str, tmp: Path
                  ) -> list[tuple[dict[str, Any], tuple[str, Path]]]:
    """The own model's opaque layers cut alone, as on this host (``segments.opaque_layers``):
    each one's request entry and its segment file, for the board to time them alone."""
    from edgedeploy.costmodel.segments import opaque_layers

    out = []
    for i, layer in enumerate(opaque_layers(own.loaded())):
        file = tmp / key / f"opaque-{i}.onnx"
        file.write_bytes(bytes(layer.segment))
        entry = {"names": list(layer.names), "segment": f"{key}/opaque-{i}.onnx",
                 "inputs": [{"name": t, "shape": list(np.shape(a)), "dtype": str(a.dtype)}
                            for t, a in layer.feeds.items()]}
        out.append((entry, (entry["segment"], file)))
    return out


def _priced(model: Any, graph: Any, run: dict[str, Any],
            int8: dict[str, float] | None = None) -> dict[str, Any]:
    """A board run in ``costmodel.segments``' form: per engine, [measured, predicted sum], an
    int8 layer summed at the board's int8 / float time (``int8``, as the runs measured it:
    ``segments.int8_of``)."""
    from edgedeploy.costmodel.segments import BATCH, LAYERS, _predicted_sum, int8_of
    from edgedeploy.runtime.executor import default_choice
    from edgedeploy.runtime.vocab import NATIVE, ONNXRUNTIME

    config = CoreConfig.parse(str(run["config"]))
    ort = {layer.name: ONNXRUNTIME for layer in graph.layers}
    native = {layer.name: default_choice(layer) for layer in graph.layers}
    timed = {str(k): float(v) for k, v in (run.get(OPAQUE) or {}).items()}
    scale = int8_of(int8 or {}, model, config)
    out = {"model": run["model"], "size": run["size"], "config": config.key,
           ONNXRUNTIME: [float(run[ONNXRUNTIME]),
                         _predicted_sum(model, graph, config, ort, timed, scale)]}
    if timed:  # the opaque layers timed alone on the board: they price its plans
        out[LAYERS] = timed
    if run.get(NATIVE) is not None:  # the model a profile is taken for runs onnxruntime only
        out[NATIVE] = [float(run[NATIVE]), _predicted_sum(model, graph, config, native,
                                                          int8=scale)]
    if run.get(INT8) is not None:  # over the float model's measured time
        out[INT8] = [float(run[INT8]), float(run[ONNXRUNTIME])]
    if run.get(PROBE_BATCH):  # per-frame ms at each batch size (segments.batch_speedups)
        out[BATCH] = {str(b): float(ms) for b, ms in run[PROBE_BATCH].items()}
    if run.get(FRAME) is not None:  # a stage's own cost a frame (segments.own_factors)
        out[FRAME] = float(run[FRAME])
    return out


def replica_speedups(detail: Sequence[dict[str, Any]], replicas: Sequence[dict[str, Any]]
                     ) -> dict[str, dict[str, float]]:
    """Throughput of r one-core replicas over one core's (its onnxruntime time), per cluster
    and r: the geometric mean over the models, as ``segments.measure_replicas`` computes it."""
    from edgedeploy.runtime.vocab import ONNXRUNTIME

    one = {(r["model"], r["size"], CoreConfig.parse(r["config"]).cluster): r[ONNXRUNTIME][0]
           for r in detail if CoreConfig.parse(r["config"]).cores == 1}
    logs: dict[str, dict[str, list[float]]] = {}
    for e in replicas:
        base = one.get((e["model"], e["size"], e["cluster"]))
        if not base:
            continue
        logs.setdefault(str(e["cluster"]), {}).setdefault(str(e["cores"]), []).append(
            float(np.log(max(float(e["fps"]) * base / 1000.0, 1e-3))))
    return {cl: {r: round(float(np.exp(np.mean(v))), 4) for r, v in m.items()}
            for cl, m in logs.items()}
