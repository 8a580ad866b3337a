"""Segment-level calibration: what a layer costs inside a whole run, not in isolation.

The profiler times each conv layer alone (one single-conv onnxruntime session, one primitive
call). Inside a run two things change, and both bias the planner towards native layers:

* onnxruntime optimises a whole segment (operator fusion, NCHWc layout propagation between
  convolutions), so its layers cost less there than alone: measured 0.58-1.03 x on the zoo;
* native layers pay Python dispatch, fresh allocations and cold caches between layers, and
  non-conv ops are not profiled at all, so they cost more than predicted (about 1.5 x).

So `edgedeploy profile` also runs a few whole models both ways on each core count and stores,
per engine and configuration, the factor *measured whole-model time / sum of per-layer
predictions*. The planner multiplies each engine's per-layer predictions by it.

int8 is measured the same way: each calibration model is also quantized as a user's model is
(static QDQ, per-channel weights, calibrated on seeded frames: its speed is what counts here) and
run whole through onnxruntime, and ``factors["int8"]`` holds its time over the float model's per
configuration. The planner prices an int8 layer as its float prediction times that factor, so an
unmeasured ``precision: auto`` weighs int8 by what this board's integer kernels do.
fp16 is measured on a TFLite model a profile is taken for (below), where the board's cores
compute fp16: run whole in LiteRT computing fp16, ``factors["fp16"]`` holds its time over the
fp32 run's; an fp16 plan's LiteRT layers are priced by it (``CostModel.half_factor``).

Replicas are measured the same way: r one-core replicas of a whole model in the pipeline executor
share memory bandwidth, caches and the feeding process, so they are rarely r times as fast as one;
the measured speed-up per cluster and replica count replaces the planner's linear assumption.

The factors differ by model: onnxruntime ran twelve zoo models at 0.70-1.04 of their per-layer
sums on a 2-core host. So a profile taken for a model (``plan``'s first quick profile, ``profile
--model``) also runs that model whole through the engine of its format (onnxruntime, LiteRT for
TFLite): its own factors and replica speed-ups, kept under its file's sha256
(``factors["models"]``), price it (:func:`for_model`), and they count in the board's as one more
calibration model (the only one that measures LiteRT, which otherwise takes onnxruntime's).
Where onnxruntime can take several of its frames a call (``importers.onnx_batch``), the model is
also timed at each micro-batch size: its per-frame speed-up (``"batch"``) prices the batched
variants measure-to-decide tries, which had carried the unbatched baseline's figures.

Its opaque layers (operators the IR has no descriptor for, which only the engine runs) are timed
alone in onnxruntime on each configuration (``"layers"``): the cost model's prior cannot price
them, and its guess hid in the whole model's factor until a plan ran them beside native layers
(ZFNet-512's two LRNs were priced 1.8 ms and took 41 ms on one core).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.costmodel.configs import CoreConfig
from edgedeploy.costmodel.prior import PRIOR_VERSION
from edgedeploy.runtime import ir
from edgedeploy.runtime.model_timing import (
    FRAME,
    FRAME_MAX_CALL_MS,
    OWN_REPLICA_WINDOWS,
    REPLICA_WARMUP,
    WHOLE_MIN_S,
    OpaqueLayer,
    batch_ms,
    median_ms,
    median_window_fps,
    replica_frames,
    replica_windows,
    session_ms,
    stage_frame_ms,
    time_layers,
)
from edgedeploy.runtime.stages import BATCH_SIZES, StageIO
from edgedeploy.runtime.vocab import (
    FP16,
    INT8,
    LITERT,
    NATIVE,
    ONNX,
    ONNXRUNTIME,
    TFLITE,
    canonical_choice,
)

#: Small zoo models at a reduced size: a few seconds for every core count of a cluster, the
#: cheapest first (a short profile calibrates on the first ones only, see calibration_models).
CALIBRATION_MODELS = (("squeezenet1_1", 160), ("mobilenet_v2", 160), ("resnet18", 160))
#: Profile budget that pays for one calibration model: quantizing it, running it whole on every
#: configuration and as replicas took 4-6 s each on a 2-core host.
CALIBRATION_BUDGET_S = 10.0

REPLICAS = "replicas"
#: Factors of models calibrated by name: {sha256: {engine, "replicas" or "batch": table}}.
MODELS = "models"
#: The rule a model's own entry was measured and priced by (its key ``RULE``). Bumped when what
#: an entry holds changes, so that a profile measures the models it holds again once, the next
#: time one is planned, and plans no model by an entry of an older rule -- without profiling the
#: board again (``prior.PRIOR_VERSION``). 2: an int8 model's factor no longer counts its int8
#: speed-up twice, and the entry holds the stage's own cost a frame (``FRAME``).
OWN_RULE = 2
RULE = "rule"
#: A model's per-frame speed-up at B frames a call, per configuration: {config: {B: speed-up}}.
BATCH = "batch"
#: A model's replicas' throughput at B frames a call over theirs at one, per cluster (as many
#: one-core replicas as its cores): {cluster: {B: gain}}. Measured, not derived from BATCH: two
#: one-core replicas of 4 frames gained AlexNet's one-core 1.95x whole, ZFNet-512's 1.28x only in
#: part (1.02x and 1.15x in two runs; seen while developing).
REPLICA_BATCH = "replica_batch"
#: The per-frame speed-up one session on one core must show at a batch before its replicas are
#: timed at that batch too (a gain within the host's noise would cost a plan seconds for none).
BATCH_GAIN_MIN = 1.05
#: Timed calls of a model at each batch size (a VGG-16 call of four frames takes a second).
BATCH_REPS = 3
#: A model's opaque layers timed alone, per configuration: {layer name: {config: ms}}.
LAYERS = "layers"
#: Distinct opaque layers (operator, attributes, input shapes) a profile times at most.
MAX_TIMED_LAYERS = 32
log = logging.getLogger("edgedeploy.costmodel")
#: Seeded frames an int8 calibration model is calibrated on (its speed, not its accuracy, counts).
INT8_FRAMES = 4
#: A whole-model call this long is timed once on a configuration (:func:`_second_pass`).
LONG_CALL_MS = 150.0


def calibration_models(budget_s: float) -> tuple[tuple[str, int], ...]:
    """The calibration models a profile of ``budget_s`` runs whole: one per
    :data:`CALIBRATION_BUDGET_S`, at least one. All three cost about 14 s on a 2-core host,
    which a 2 s quick profile would overrun sevenfold."""
    n = int(budget_s // CALIBRATION_BUDGET_S)
    return CALIBRATION_MODELS[:max(1, min(len(CALIBRATION_MODELS), n))]


def factors_path(profile_file: Path) -> Path:
    return profile_file.with_suffix(".segments.json")


def stored(profile_file: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The factors and runs stored beside ``profile_file`` as written; none when never
    measured, unreadable, or measured against another prior (``prior.PRIOR_VERSION``): a factor
    is a whole-model run over that prior's predictions, which this one no longer makes."""
    try:
        data = json.loads(factors_path(profile_file).read_text())
        if data.get("prior_version") != PRIOR_VERSION:
            return {}, []
        return dict(data["factors"]), list(data.get("runs") or [])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}, []


def load_factors(profile_file: Path) -> dict[str, dict[str, Any]]:
    """``{engine: {config key: factor}, "int8": {config key: int8 / float time}, "replicas":
    {cluster: {r: speed-up}}, "models": {sha256: the same for one model}}``; empty when never
    measured, unreadable or measured against another prior (:func:`stored`). A model's entry
    measured by an older rule (:data:`OWN_RULE`) is left out: the model is timed again."""
    factors, _ = stored(profile_file)
    try:
        out = _parsed(factors)
        if MODELS in factors:
            out[MODELS] = {sha: _parsed(d) for sha, d in factors[MODELS].items()
                           if d.get(RULE) == OWN_RULE}
        return out
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _parsed(factors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e, d in factors.items():
        if e in (REPLICAS, BATCH, LAYERS, REPLICA_BATCH):
            out[e] = {cl: {str(r): float(v) for r, v in m.items()} for cl, m in d.items()}
        elif e not in (MODELS, RULE):
            out[canonical_choice(e)] = {k: float(v) for k, v in d.items()}
    return out


def for_model(factors: dict[str, Any], sha256: str | None) -> dict[str, Any]:
    """The board's factors with those measured on the model of file digest ``sha256`` in
    their place, per engine and configuration (per cluster and replica count) it was run on."""
    own = (factors.get(MODELS) or {}).get(sha256 or "")
    if not own:
        return factors
    out = dict(factors)
    for key, table in own.items():
        if key == REPLICAS:
            board = factors.get(REPLICAS) or {}
            out[key] = {**board, **{cl: {**board.get(cl, {}), **m} for cl, m in table.items()}}
        else:
            out[key] = {**(factors.get(key) or {}), **table}
    return out


def replica_scaling(factors: dict[str, Any]) -> dict[str, dict[int, float]]:
    """The planner's form of the measured replica speed-ups: {cluster: {r: speed-up}}."""
    return {cl: {int(r): float(v) for r, v in m.items()}
            for cl, m in (factors.get(REPLICAS) or {}).items()}


@contextlib.contextmanager
def factors_lock(profile_file: Path) -> Iterator[None]:
    """Held while one writer reads, merges and writes the factors beside ``profile_file``: two
    plans calibrating two models at once would otherwise each write the file back without the
    other's model. The measuring happens before, outside it. The lock is the profiles folder's
    (the file itself is replaced on every write, and a lock file would sit beside it)."""
    import fcntl

    folder = factors_path(profile_file).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def save_factors(profile_file: Path, factors: dict[str, dict[str, float]],
                 detail: list[dict[str, Any]]) -> Path:
    path = factors_path(profile_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"schema_version": 1, "prior_version": PRIOR_VERSION,
                               "factors": factors, "runs": detail},
                              indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _predicted_sum(model: Any, graph: ir.Graph, config: CoreConfig,
                   choices: dict[str, str], timed: dict[str, float] | None = None,
                   int8: float = 1.0) -> float:
    """The per-layer predictions of ``choices`` summed, a layer ``timed`` alone taking its
    time, an int8 layer's float prediction times ``int8`` (the board's int8 / float time): the
    planner prices them so (``planner.adapter``), and the factor must scale the same. Summed
    at float, an int8 TFLite model's LiteRT factor took its int8 speed-up in, and the planner
    applied that speed-up again."""
    table = model.predict_table(graph, [config])
    total = 0.0
    for i, layer in enumerate(graph.layers):
        name = choices[layer.name]
        if timed and layer.name in timed:
            total += timed[layer.name]
        elif name in table.primitives:
            ms = float(table.ms[i, table.primitives.index(name), 0])
            scale = int8 if layer.descriptor.precision == INT8 else 1.0
            total += ms * scale if np.isfinite(ms) else 0.0
    return total


@dataclass(frozen=True)
class OwnModel:
    """The model a profile is taken for, run whole as a calibration model through the engine of
    its format (onnxruntime for ONNX, LiteRT for TFLite) only: its native run and int8 variant
    would cost a large model's profile tens of seconds."""

    path: Path
    graph: ir.Graph

    @classmethod
    def of(cls, path: Path, graph: ir.Graph) -> OwnModel | None:
        """``path`` as an own model: an ONNX or TFLite file whose digest the import recorded."""
        known = graph.source.get("format") in WHOLE_ENGINES and graph.source.get("sha256")
        return cls(Path(path), graph) if known else None

    @property
    def sha256(self) -> str:
        return str(self.graph.source.get("sha256") or "")

    @property
    def engine(self) -> str:
        return WHOLE_ENGINES[str(self.graph.source.get("format"))]

    def loaded(self) -> _Loaded:
        """This model as a calibration run takes it (named for its file, no zoo size)."""
        return _Loaded(self.path.stem, None, self.path, self.graph, self.sha256, self.engine)


#: The engine that runs a model file of each format whole.
WHOLE_ENGINES = {ONNX: ONNXRUNTIME, TFLITE: LITERT}


@dataclass(frozen=True)
class _Loaded:
    name: str
    size: int | None
    path: Path
    graph: ir.Graph
    sha256: str | None = None
    engine: str = ONNXRUNTIME


def _load(models: Sequence[tuple[str, int]], own: OwnModel | None, folder: Path
          ) -> list[_Loaded]:
    from edgedeploy import zoo
    from edgedeploy.importers.onnx import import_onnx

    out = [own.loaded()] if own else []
    for name, size in models:
        path = zoo.export(name, folder / f"{name}.onnx", size=size)
        out.append(_Loaded(name, size, path, import_onnx(path)))
    return out


def whole_ms(run: dict[str, Any]) -> float:
    """A run's measured time of the model whole through the engine of its format."""
    return float(run[ONNXRUNTIME][0] if ONNXRUNTIME in run else run[LITERT][0])


def measure_factors(model: Any, configs: Sequence[CoreConfig], cpus_of: Callable,
                    models: Sequence[tuple[str, int]] = CALIBRATION_MODELS,
                    progress: Callable[[str], None] | None = None,
                    own: OwnModel | None = None
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run each calibration model whole, both engines, on every CPU configuration (pinned);
    ``own`` first, through its format's engine only, its factors also kept apart
    (``factors["models"]``): :func:`measure_runs`, priced by ``model`` (:func:`price`)."""
    return price(model, measure_runs(model.target, configs, cpus_of, models, progress, own))


@dataclass
class WholeRuns:
    """Whole-model runs as measured, not yet priced: a profile times its models whole before
    its layers, and the cost model those layers fit prices the runs after (:func:`price`)."""

    #: one per model and configuration; per engine [measured ms, predicted sum (None here)]
    runs: list[dict[str, Any]]
    #: each run's model, by its (name, size)
    graphs: dict[tuple[str, int | None], ir.Graph]
    #: r one-core replicas' speed-up over one core, per cluster: over every model, the own
    #: model's alone, and the own model's at each batch (:func:`measure_replica_batches`)
    replicas: dict[str, dict[str, float]]
    own_replicas: dict[str, dict[str, float]]
    batched_replicas: dict[str, dict[str, float]]
    own: OwnModel | None = None


def price(model: Any, whole: WholeRuns) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The factors of ``whole``'s runs, each engine's measured time over ``model``'s per-layer
    predictions summed (an opaque layer timed alone taking its time), and the runs priced."""
    from edgedeploy.runtime.executor import default_choice

    int8 = summarise(whole.runs, (INT8,)).get(INT8) or {}
    for run in whole.runs:
        graph = whole.graphs[(run["model"], run["size"])]
        config = CoreConfig.parse(run["config"])
        int8_factor = int8_of(int8, model, config)
        for engine in (ONNXRUNTIME, LITERT):
            if engine in run:
                run[engine][1] = _predicted_sum(
                    model, graph, config, {layer.name: engine for layer in graph.layers},
                    run.get(LAYERS), int8_factor)
        if NATIVE in run:
            run[NATIVE][1] = _predicted_sum(
                model, graph, config, {layer.name: default_choice(layer) for layer in graph.layers},
                int8=int8_factor)
    factors: dict[str, Any] = {**summarise(whole.runs), REPLICAS: whole.replicas}
    own = whole.own
    if own is not None:
        mine = [r for r in whole.runs if r.get("sha256") == own.sha256]
        factors[MODELS] = {own.sha256: {**own_factors(mine, whole.own_replicas),
                                        **({REPLICA_BATCH: whole.batched_replicas}
                                           if whole.batched_replicas else {})}}
    return factors, whole.runs


def int8_of(measured: dict[str, float], model: Any, config: CoreConfig) -> float:
    """What the planner will price an int8 layer by on ``config``: the int8 / float time runs
    ``measured`` ({config: factor}, over the models' float runs, not priced), else as the
    board's profile holds it (``model.precision_factor``)."""
    return (factor({INT8: measured}, INT8, config) if measured
            else model.precision_factor(INT8, config))


def measure_runs(target: Any, configs: Sequence[CoreConfig], cpus_of: Callable,
                 models: Sequence[tuple[str, int]] = CALIBRATION_MODELS,
                 progress: Callable[[str], None] | None = None,
                 own: OwnModel | None = None) -> WholeRuns:
    """Run each calibration model whole, both engines, on every CPU configuration (pinned),
    then as replicas; ``own`` first, through its format's engine only, and batched where it
    can be. Measured only: :func:`price` prices them."""
    import tempfile

    from edgedeploy.runtime.affinity import available_cpus, limit_blas_threads, pin_process
    from edgedeploy.runtime.executor import GraphExecutor, default_choice, random_inputs

    original = available_cpus()
    half = {c.name for c in target.clusters if c.fp16_arithmetic}
    runs: list[dict[str, Any]] = []
    graphs: dict[tuple[str, int | None], ir.Graph] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            loaded = _load(models, own, Path(tmp))
            # the own model (first) with a free batch axis, where its frames stay apart
            own_batched = batched_file(loaded[0], Path(tmp)) if own is not None else None
            for m in loaded:
                graph = graphs[(m.name, m.size)] = m.graph
                feeds = random_inputs(graph)
                native = {layer.name: default_choice(layer) for layer in graph.layers}
                int8 = None if m.sha256 else int8_variant(m.path, graph, Path(tmp))
                batched = own_batched if m.sha256 else None
                opaque = opaque_layers(m) if m.sha256 else []
                for config in configs:
                    if config.is_gpu:
                        continue
                    cpus = list(cpus_of(config))
                    if progress:
                        progress(f"segments: {m.name} on {config.key}")
                    ms = session_ms(str(m.path), _file_feeds(m, feeds), cpus, m.engine,
                                    min_s=WHOLE_MIN_S)
                    timed = time_layers(opaque, cpus)
                    run: dict[str, Any] = {
                        "model": m.name, "size": m.size, "config": config.key,
                        m.engine: [ms, None]}
                    if timed:
                        run[LAYERS] = timed
                    if m.sha256:
                        run["sha256"] = m.sha256
                        if batched is not None:
                            run[BATCH] = batch_ms(batched, feeds, cpus, BATCH_SIZES,
                                                  BATCH_REPS)
                    else:
                        with limit_blas_threads(len(cpus)):
                            ex = GraphExecutor(graph, native)
                            native_ms = median_ms(lambda e=ex, f=feeds: e.run(f),
                                                  min_s=WHOLE_MIN_S)
                        run[NATIVE] = [native_ms, None]
                    if int8 is not None:  # measured over the float model's measured time
                        run[INT8] = [session_ms(str(int8), feeds, cpus, min_s=WHOLE_MIN_S),
                                     ms]
                    if m.engine == LITERT and m.sha256 and config.cluster in half:
                        half_ms = _half_ms(m, feeds, cpus)  # over the fp32 run's time, too
                        if half_ms is not None:
                            run[FP16] = [half_ms, ms]
                    runs.append(run)
                if m.sha256:
                    mine = [r for r in runs if r.get("sha256") == m.sha256]
                    _second_pass(m, feeds, mine, cpus_of)
                    _frame_overhead(m, mine, cpus_of)
            pin_process(original)  # the replicas' stages pin themselves, within these cores
            replicas, own_replicas = measure_replicas(configs, cpus_of, loaded, runs, progress)
            batched_replicas = {} if own is None else measure_replica_batches(
                configs, cpus_of, loaded[0], runs, own_replicas, own_batched, progress)
    finally:
        pin_process(original)
    return WholeRuns(runs, graphs, replicas, own_replicas, batched_replicas, own)


def _half_ms(m: _Loaded, feeds: dict[str, Any], cpus: list[int]) -> float | None:
    """Milliseconds of the own TFLite model whole in LiteRT computing fp16 on ``cpus``; None
    where LiteRT cannot (logged: fp16 then stays priced by the prior)."""
    from edgedeploy.runtime.errors import ModelError

    try:
        return session_ms(str(m.path), _file_feeds(m, feeds), cpus, LITERT, fp16=True,
                          min_s=WHOLE_MIN_S)
    except ModelError as exc:
        log.warning("no fp16 calibration run of %s: %s", m.path.name, exc)
        return None


def own_factors(runs: Sequence[dict[str, Any]], replicas: dict[str, dict[str, float]]
                ) -> dict[str, Any]:
    """One model's entry under ``factors["models"]``: the factors of the engine it ran whole
    through, its replica speed-ups and, where it was timed batched, its batch speed-ups; stamped
    with the rule it was measured by (:data:`OWN_RULE`)."""
    layers: dict[str, dict[str, float]] = {}
    for run in runs:
        for name, ms in (run.get(LAYERS) or {}).items():
            layers.setdefault(name, {})[run["config"]] = float(ms)
    frame = {run["config"]: float(run[FRAME]) for run in runs if FRAME in run}
    return {RULE: OWN_RULE, **{e: t for e, t in summarise(list(runs)).items() if t},
            REPLICAS: replicas,
            **batch_speedups(runs), **({LAYERS: layers} if layers else {}),
            **({FRAME: frame} if frame else {})}


def opaque_layers(m: _Loaded) -> list[OpaqueLayer]:
    """The ONNX model's opaque layers as one-layer onnxruntime segments with seeded inputs of
    their shapes, one per kind, at most :data:`MAX_TIMED_LAYERS` kinds, the heaviest
    (:func:`opaque_work`) where there are more; a layer that cannot be cut alone is left to
    the prior."""
    from edgedeploy.importers.segments import segment_provider
    from edgedeploy.runtime.executor import random_tensor, segment_io, tensor_dtype

    if m.engine != ONNXRUNTIME:
        return []
    graph = m.graph
    provide = segment_provider(graph, m.path)
    rng = np.random.default_rng(0)
    #: kind -> (its layers' names, the first one's segment inputs and outputs)
    kinds: dict[str, tuple[list[str], list[str], list[str]]] = {}
    work: dict[str, int] = {}  # kind -> its layers' opaque_work
    for i, layer in enumerate(graph.layers):
        if layer.op != ir.OPAQUE:
            continue
        ins, outs = segment_io(graph, i, i + 1)
        kind = json.dumps([{k: v for k, v in layer.attrs.items() if k != "onnx_inputs"},
                           [graph.shape(t) for t in ins],
                           [np.shape(graph.weights[w]) for w in layer.weights.values()
                            if w in graph.weights]], sort_keys=True, default=str)
        kinds.setdefault(kind, ([], ins, outs))[0].append(layer.name)
        work[kind] = work.get(kind, 0) + opaque_work(graph, layer)
    heaviest = set(sorted(work, key=lambda k: -work[k])[:MAX_TIMED_LAYERS])
    out = []
    for names, ins, outs in (v for k, v in kinds.items() if k in heaviest):
        try:
            segment = provide(ONNXRUNTIME, ins, outs)
        except Exception as exc:  # the cutter's or onnx's: this layer keeps its prior
            log.info("opaque layer %s not timed alone: %s", names[0], exc)
            continue
        feeds = {t: random_tensor(graph.shape(t), tensor_dtype(graph, t), rng) for t in ins}
        out.append(OpaqueLayer(tuple(names), segment, feeds))
    return out


def opaque_work(graph: ir.Graph, layer: ir.Layer) -> int:
    """A rough count of an opaque layer's multiply-adds: its output elements times the weights
    one output channel reads (a quantized convolution's or matrix product's MACs, an
    elementwise layer's outputs); what decides which kinds are timed where there are many
    (an int8 model in onnxruntime's QLinearConv form has about a hundred, its widest
    convolutions late in the model)."""
    shape = graph.shape(layer.outputs[0]) if layer.outputs else ()
    channels = int(shape[1]) if len(shape) >= 2 else 1
    weights = sum(int(np.size(graph.weights[w])) for w in layer.weights.values()
                  if w in graph.weights)
    return int(np.prod(shape)) * max(1, weights // max(channels, 1))


def _file_feeds(m: _Loaded, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """IR-layout ``feeds`` in the layout of the model's file (a .tflite file's is NHWC), as an
    application hands them to the model's stage and to its own engine."""
    from edgedeploy.runtime.layouts import to_model

    return to_model(m.graph, feeds)


def _second_pass(m: _Loaded, feeds: dict[str, np.ndarray], runs: list[dict[str, Any]],
                 cpus_of: Callable) -> None:
    """Time the model whole once more on each configuration, in the other order, keeping the
    faster: the factors price this one model, and on a shared host a neighbour's burst over
    one timing (two cores timed no faster than one) set a plan's prediction 40 % off. Its fp16
    time likewise, then over the fp32 time kept. Not where a call takes :data:`LONG_CALL_MS`:
    a burst then spans a few of the timing's calls, whose faster half it leaves out, and a
    second pass cost VGG-16's quick profile 14.5 s (seen while developing)."""
    for run in reversed(runs):
        if whole_ms(run) >= LONG_CALL_MS:
            continue
        cpus = list(cpus_of(CoreConfig.parse(run["config"])))
        again = session_ms(str(m.path), _file_feeds(m, feeds), cpus, m.engine,
                           min_s=WHOLE_MIN_S)
        run[m.engine][0] = min(run[m.engine][0], again)
        if FP16 in run:
            half = _half_ms(m, feeds, cpus)
            run[FP16] = [min(run[FP16][0], half or run[FP16][0]), run[m.engine][0]]


def _frame_overhead(m: _Loaded, runs: list[dict[str, Any]], cpus_of: Callable) -> None:
    """The own model's run on the most cores it ran on gets the per-frame cost of a stage
    around its engine's own call (``FRAME``, ``model_timing.stage_frame_ms``), less the call's
    time its factor scales the layers' predictions to, where a call is short."""
    from edgedeploy import execute
    from edgedeploy.runtime.affinity import pin_process

    cpu = [r for r in runs if not CoreConfig.parse(r["config"]).is_gpu]
    if not cpu:
        return
    run = max(cpu, key=lambda r: CoreConfig.parse(r["config"]).cores)
    call_ms = whole_ms(run)
    if call_ms >= FRAME_MAX_CALL_MS:  # not measured: cut no segment for it
        return
    cpus = tuple(cpus_of(CoreConfig.parse(run["config"])))
    choices, io, frame = _whole_model_run(m)
    pin_process(list(cpus))
    try:
        segments = execute.segments_for(m.graph, [io], choices, m.path)
        stage = execute.stage_from_io(io=io, cpus=cpus, replicas=1, inline=True)
        (spec,) = execute.stage_specs(m.graph, [stage], choices, segments)
        ms = stage_frame_ms(spec, frame, call_ms)
    except Exception as exc:  # the model ran whole already: its plan is priced without it
        log.warning("no per-frame stage cost measured for %s: %s", m.path.name, exc)
        return
    if ms is not None:
        run[FRAME] = ms


def batched_file(m: _Loaded, folder: Path) -> str | None:
    """The model with a free batch axis, where onnxruntime answers a batch of frames as each
    frame alone (``onnx_batch.frames_kept_apart``); None where it does not, or not onnxruntime."""
    from edgedeploy.importers.onnx_batch import batched_model
    from edgedeploy.runtime.stages import batchable

    whole = {layer.name: ONNXRUNTIME for layer in m.graph.layers}
    if m.engine != ONNXRUNTIME or not batchable(m.graph, 0, len(m.graph.layers), whole):
        return None
    free = batched_model(m.graph, m.path)
    if free is None:
        return None
    out = folder / f"{m.path.stem}.batched.onnx"
    out.write_bytes(free)
    return str(out)


def batch_speedups(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{"batch": {config: {B: per-frame speed-up at B frames a call}}}`` of one model's runs
    (empty where it was not timed batched)."""
    table = {r["config"]: {b: round(whole_ms(r) / ms, 4) for b, ms in r[BATCH].items() if ms > 0}
             for r in runs if r.get(BATCH)}
    return {BATCH: table} if table else {}


def batch_speedup(factors: dict[str, Any], config: CoreConfig, b: int) -> float | None:
    """The measured per-frame speed-up of ``b`` frames a call on ``config`` (factors of one
    model, :func:`for_model`); None where never measured."""
    value = ((factors.get(BATCH) or {}).get(config.key) or {}).get(str(b))
    return None if value is None else float(value)


def _whole_model_run(m: _Loaded) -> tuple[dict[str, str], StageIO, list[np.ndarray]]:
    """What a replica run of ``m`` whole through its engine needs: every layer's choice, the
    one stage's tensors and a seeded frame."""
    from edgedeploy.runtime.executor import random_inputs
    from edgedeploy.runtime.layouts import to_model
    from edgedeploy.runtime.stages import plan_stage_io

    io = plan_stage_io(m.graph, [])[0]
    feeds = to_model(m.graph, random_inputs(m.graph))  # as an application feeds the stage
    return ({layer.name: m.engine for layer in m.graph.layers}, io,
            [feeds[t] for t in io.inputs])


def replica_batch_gain(factors: dict[str, Any], cluster: str, b: int) -> float | None:
    """The measured throughput of ``cluster``'s replicas at ``b`` frames a call over theirs at
    one (factors of one model, :func:`for_model`); None where never measured."""
    value = ((factors.get(REPLICA_BATCH) or {}).get(cluster) or {}).get(str(b))
    return None if value is None else float(value)


def measure_replica_batches(configs: Sequence[CoreConfig], cpus_of: Callable, m: _Loaded,
                            runs: list[dict[str, Any]], replicas: dict[str, dict[str, float]],
                            batched: str | None,
                            progress: Callable[[str], None] | None = None,
                            every_short: bool = True) -> dict[str, dict[str, float]]:
    """Per cluster, the own model's one-core replicas at each of :data:`BATCH_SIZES` frames a
    call (``batched``: its file with a free batch axis, :func:`batched_file`) over the same
    replicas at one (``replicas``: their measured speed-ups, :func:`measure_replicas`), as
    :data:`REPLICA_BATCH`; only the batches that one session on one of its cores ran
    :data:`BATCH_GAIN_MIN` faster per frame, since a batch's slow-down is priced from the
    session alone; with ``every_short``, every batch where the replicas' windows are short
    (``model_timing.gained_batches``). A board's probe measures the same
    (``runtime.probe.measure_models``)."""
    from edgedeploy.runtime.model_timing import gained_batches, replica_fps

    one = {CoreConfig.parse(r["config"]).cluster: r for r in runs
           if r.get("sha256") == m.sha256 and CoreConfig.parse(r["config"]).cores == 1}
    out: dict[str, dict[str, float]] = {}
    for config in configs:
        run = one.get(config.cluster)
        speedup = (replicas.get(config.cluster) or {}).get(str(config.cores))
        if (batched is None or config.is_gpu or config.cores < 2 or run is None
                or not run.get(BATCH) or not speedup):
            continue
        base = whole_ms(run)
        unbatched_fps = float(speedup) * 1000.0 / base
        for b, ms in gained_batches(run[BATCH], base, BATCH_GAIN_MIN,
                                    config.cores if every_short else 0):
            if progress:
                progress(f"replicas: {m.name} x{config.cores} on {config.cluster}, "
                         f"{b} frames a call")
            # the median of as many windows as the unbatched replicas'
            fps = replica_fps(m.graph, batched, cpus_of(config), config.cores,
                              frames=replica_frames(ms, config.cores), batch=b,
                              windows=replica_windows(OWN_REPLICA_WINDOWS, ms, config.cores, b))
            out.setdefault(config.cluster, {})[str(b)] = round(fps / unbatched_fps, 4)
    return out


def measure_replicas(configs: Sequence[CoreConfig], cpus_of: Callable,
                     models: Sequence[_Loaded], runs: list[dict[str, Any]],
                     progress: Callable[[str], None] | None = None
                     ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Throughput of r one-core replicas (of the engine each model ran whole through) over one
    core's, per cluster and r: over every model, and of the own model (the one with a sha256)
    alone."""
    from edgedeploy import execute
    from edgedeploy.runtime.pipeline import Pipeline

    one = {(r["model"], r["size"], CoreConfig.parse(r["config"]).cluster):
           whole_ms(r) for r in runs if CoreConfig.parse(r["config"]).cores == 1}
    logs: dict[str, dict[str, list[float]]] = {}
    own: dict[str, dict[str, float]] = {}
    for m in models:
        graph = m.graph
        choices, io, frame = _whole_model_run(m)
        segments = execute.segments_for(graph, [io], choices, m.path)
        for config in configs:
            base = one.get((m.name, m.size, config.cluster))
            if config.is_gpu or config.cores < 2 or not base:
                continue
            if progress:
                progress(f"replicas: {m.name} x{config.cores} on {config.cluster}")
            plan = execute.stage_from_io(io=io, cpus=tuple(cpus_of(config)),
                                 replicas=config.cores)
            with Pipeline(execute.stage_specs(graph, [plan], choices, segments)) as pipe:
                # the own model's speed-up prices its plans: the median of a few windows
                # (one window under a neighbour's burst priced SqueezeNet's 2 replicas at
                # 212 fps, which measured 318 a minute later)
                windows = (replica_windows(OWN_REPLICA_WINDOWS, base, config.cores)
                           if m.sha256 else 1)
                fps = median_window_fps(pipe, frame, replica_frames(base, config.cores),
                                        REPLICA_WARMUP, windows)
            speedup = max(fps * base / 1000.0, 1e-3)
            logs.setdefault(config.cluster, {}).setdefault(str(config.cores), []).append(
                float(np.log(speedup)))
            if m.sha256:
                own.setdefault(config.cluster, {})[str(config.cores)] = round(speedup, 4)
    return ({cl: {r: round(float(np.exp(np.mean(v))), 4) for r, v in by_r.items()}
             for cl, by_r in logs.items()}, own)


def int8_variant(path: Path, graph: ir.Graph, folder: Path) -> Path | None:
    """The calibration model quantized as ``model.precision: int8`` quantizes a user's model,
    on seeded frames; None where onnxruntime.quantization cannot (the factor is then left out,
    and int8 stays unpriced)."""
    from edgedeploy.errors import EdgeDeployError
    from edgedeploy.importers.quantize import quantize
    from edgedeploy.runtime.executor import random_inputs

    out = folder / f"{path.stem}.int8.onnx"
    try:
        quantize(path, out, [random_inputs(graph, seed=k) for k in range(INT8_FRAMES)])
    except EdgeDeployError as exc:
        log.warning("no int8 calibration run of %s: %s", path.name, exc)
        return None
    return out


def summarise(runs: list[dict[str, Any]],
              engines: Sequence[str] = (ONNXRUNTIME, NATIVE, LITERT, INT8, FP16)
              ) -> dict[str, dict[str, float]]:
    """Per engine (of ``engines``) and config: the geometric mean of measured / predicted over
    the models (for ``int8``: of its time over the float model's, where measured; ``fp16``: of
    LiteRT's time computing fp16 over its fp32 time)."""
    out: dict[str, dict[str, float]] = {ONNXRUNTIME: {}, NATIVE: {}}
    for engine in engines:
        by_config: dict[str, list[float]] = {}
        for run in runs:
            if engine not in run:
                continue
            measured, predicted = run[engine]
            if predicted > 0 and measured > 0:
                by_config.setdefault(run["config"], []).append(np.log(measured / predicted))
        for key, logs in by_config.items():
            out.setdefault(engine, {})[key] = round(float(np.exp(np.mean(logs))), 4)
    return out


def factor(factors: dict[str, dict[str, float]], engine: str, config: CoreConfig) -> float:
    """The factor for ``engine`` on ``config``: its own, else the nearest core count's, else 1."""
    table = factors.get(engine) or {}
    if config.key in table:
        return table[config.key]
    same = [(abs(CoreConfig.parse(k).cores - config.cores), v) for k, v in table.items()
            if CoreConfig.parse(k).cluster == config.cluster]
    return min(same)[1] if same else 1.0
