"""Whole-model runs for segment-level calibration, on the board that will run the plan.

Per-layer samples miss what a whole run adds or saves (onnxruntime fuses a segment; native
layers pay dispatch and cold caches; replicas share bandwidth): ``costmodel.segments`` explains
the factors. The host turns these times into them: measured whole-model time over the sum of
per-layer predictions, and the throughput of r one-core replicas over one core's; and the
model's opaque layers (operators the IR cannot describe) timed alone, which price them. Only the
measuring is here, so it runs where the runtime runs; the model comes as its ONNX file (for
onnxruntime) and its IR graph folder (``graph.json`` + ``weights.npz``, for the native engine).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgedeploy.runtime import ir
from edgedeploy.runtime.affinity import available_cpus, limit_blas_threads, pin_process
from edgedeploy.runtime.stages import (
    GraphStage,
    StageIO,
    plan_stage_io,
    ring_dtype,
    segment_key,
)
from edgedeploy.runtime.vocab import LITERT, ONNXRUNTIME

#: Frames and warm-up of one replica throughput run of a model never timed alone (as the host's
#: calibration runs them): a model at 1,000 fps ran its 40 frames in 40 ms, and its speed-up
#: read 30 % low, so a run of a timed model lasts :data:`REPLICA_WINDOW_S` instead.
REPLICA_FRAMES, REPLICA_WARMUP = 40, 8
#: Frames each replica completes in a run at least, where :data:`REPLICA_WINDOW_S` holds fewer:
#: a floor of REPLICA_FRAMES for every model made a ResNet-50's two replicas run 2 s windows
#: for a 0.5 s target, and its three windows took 9 s of a 30 s quick profile.
REPLICA_MIN_FRAMES_EACH = 6
#: Seconds a replica throughput run aims at, and the most frames it takes for them.
REPLICA_WINDOW_S, REPLICA_MAX_FRAMES = 0.5, 2000
#: Replica windows of the model a profile is taken for, whose median prices its plans: a typical
#: window, as measure-to-decide's mean over rounds reads one, with one window under a
#: neighbour's burst outvoted. The fastest of two priced BlazeFace's two replicas at 1,182 fps
#: on a noisy 2-core host, where ten windows read 769-1,039 (median 833) and measure-to-decide
#: 884 (seen while developing).
OWN_REPLICA_WINDOWS = 3
#: Seconds of windows a replica median spans, where fewer than it asks for already do
#: (:func:`replica_windows`).
REPLICA_SPAN_S = 1.5
#: Seconds of timed calls a timing spans at most, once :data:`MIN_REPS` are timed
#: (:func:`median_ms`).
TIMING_SPAN_S = 2.0
MIN_REPS = 3
#: Timed calls of one opaque layer alone (:func:`time_layers`).
LAYER_REPS = 5
#: Seconds of calls each batch size is timed for at least (:func:`batch_ms`): three calls of a
#: 1 ms model's four frames read its batch 0.78x as fast a frame once, 0.95-1.0x in 15 (seen
#: while developing).
BATCH_MIN_S = 0.2
#: Calls a timing makes at most, however short a call is.
MAX_REPS = 500
#: Seconds of calls a model's whole-run timing spans at least (up to :data:`MAX_REPS` calls): a
#: small model's seven calls read its time noise-high -- an audio model of 15 us a call on two
#: cores read 13-26 us in seven calls and 34 us in a profile, 15-16 us in 0.05 s of calls --
#: where a large model's seven calls already span longer.
WHOLE_MIN_S = 0.05
#: The key of a stage's own cost a frame: a run's figure (ms), a factor table's ({config: ms})
#: and a board request's model spec asking for it.
FRAME = "frame"
#: A stage's own cost a frame is measured where a call is shorter than FRAME_MAX_CALL_MS, in
#: FRAME_WINDOWS windows (their median) of FRAME_WINDOW_S, at most MAX_FRAME_WINDOW frames each
#: (:func:`stage_frame_ms`).
FRAME_MAX_CALL_MS = 1.0
FRAME_WINDOW_S, MAX_FRAME_WINDOW, FRAME_WINDOWS = 0.1, 2000, 3
#: Seconds of alternated calls a paired timing aims at (:func:`paired_ms`), in pairs between
#: MIN_PAIRS and the most asked for: nine pairs of VGG-16's large layers (85 ms a pair on one
#: core) spent the Winograd trial's layer budget on two of its nine shapes, and its plan fell
#: from 1.52x to 1.03x its best baseline. A long call averages out more of the host's jitter
#: by itself, and those layers gain 1.3-1.9x; ResNet-50's (20-40 ms a pair, four copies of a
#: layer) keep their nine pairs, for gains of a few percent.
PAIRED_S = 0.3
MIN_PAIRS = 3
log = logging.getLogger("edgedeploy.runtime")


def replica_frames(one_core_ms: float, replicas: int) -> int:
    """Frames of a replica run that last about :data:`REPLICA_WINDOW_S` at ``replicas`` times
    the one-core rate (``one_core_ms`` a frame), and :data:`REPLICA_MIN_FRAMES_EACH` a replica
    at least."""
    if one_core_ms <= 0:
        return REPLICA_FRAMES
    want = _window_frames(one_core_ms, replicas)
    return int(min(max(want, REPLICA_MIN_FRAMES_EACH * replicas), REPLICA_MAX_FRAMES))


def replica_windows(most: int, one_core_ms: float, replicas: int, batch: int = 1) -> int:
    """How many of ``most`` windows a replica median takes: as many as :data:`REPLICA_SPAN_S`
    needs, one at least. A window that long by itself averages a neighbour's burst over its
    frames, as a long call is timed once (``segments.LONG_CALL_MS``): VGG-16's three windows of
    two one-core replicas took 13 s of a quick profile meant to take 30, and three of them
    taking four frames a call 26 s (seen while developing)."""
    from edgedeploy.runtime.window import whole_periods

    if one_core_ms <= 0:
        return most
    frames = whole_periods(replica_frames(one_core_ms, replicas), batch * replicas)
    window_s = frames * one_core_ms / 1e3 / replicas
    return max(1, min(most, math.ceil(REPLICA_SPAN_S / window_s)))


def short_replica_windows(one_core_ms: float, replicas: int) -> bool:
    """Whether ``replicas`` one-core replicas of a model at ``one_core_ms`` a frame complete
    more than :data:`REPLICA_FRAMES` frames in :data:`REPLICA_WINDOW_S`: a fast model, whose
    replica runs are short."""
    return one_core_ms > 0 and _window_frames(one_core_ms, replicas) > REPLICA_FRAMES


def _window_frames(one_core_ms: float, replicas: int) -> float:
    """Frames ``replicas`` one-core replicas complete in :data:`REPLICA_WINDOW_S`."""
    return REPLICA_WINDOW_S * 1000.0 / one_core_ms * replicas


@dataclass(frozen=True)
class OpaqueLayer:
    """Opaque layers of one kind (operator, attributes, input shapes) as one one-layer
    onnxruntime segment (its bytes, or its file on a board) and seeded inputs: one timing
    prices all of them."""

    names: tuple[str, ...]
    segment: bytes | str
    feeds: Mapping[str, Any]


def time_layers(layers: Sequence[OpaqueLayer], cpus: Sequence[int]) -> dict[str, float]:
    """Each opaque layer's milliseconds alone in onnxruntime on ``cpus``; one that does not
    run on seeded inputs is left out (its prior prices it)."""
    out: dict[str, float] = {}
    for layer in layers:
        try:
            ms = session_ms(layer.segment, layer.feeds, cpus, reps=LAYER_REPS)
        except Exception as exc:  # onnxruntime's own errors on inputs it does not take
            log.info("opaque layer %s does not run alone: %s", layer.names[0], exc)
            continue
        out.update(dict.fromkeys(layer.names, round(ms, 4)))
    return out


def gained_batches(batch_ms: Mapping[str, float], one_core_ms: float, gain_min: float,
                   replicas: int = 0) -> list[tuple[int, float]]:
    """``(b, per-frame ms)`` of each batch size (``batch_ms``: per-frame ms at b frames a call)
    one core ran at least ``gain_min`` faster per frame than one frame a call (``one_core_ms``),
    smallest first: the batches worth timing replicas at, on this host and on a board.

    Every size is, where windows of ``replicas`` one-core replicas are short
    (:func:`short_replica_windows`): timing them there costs a second or two a size, and one
    session's speed at a batch foretold the replicas' poorly both ways. PP-OCR's text-direction
    classifier ran 4 frames a call 1.0-1.1x as fast a frame in one session on one core, and its
    two replicas 1.2-1.26x, a replica's own cost a call (feeding it, the hand-offs) spread over
    the batch; its text detector read 0.79x in the session, and its replicas 1.0-1.13x (seen
    while developing)."""
    every = replicas > 0 and short_replica_windows(one_core_ms, replicas)
    return sorted((int(b), float(ms)) for b, ms in batch_ms.items()
                  if float(ms) > 0 and (every or float(ms) * gain_min <= one_core_ms))


def median_ms(fn: Callable[[], object], reps: int = 7, min_s: float = 0.0) -> float:
    """Warm-up, then the median of the faster half of ``reps`` timed runs, or of as many more
    as ``min_s`` seconds of them take (at most :data:`MAX_REPS`); of fewer, :data:`MIN_REPS` at
    least, where ``reps`` of them would span more than :data:`TIMING_SPAN_S`: a long call
    averages the host's jitter over itself, and seven of VGG-16's one-core calls took 7 s of a
    quick profile (seen while developing)."""
    t0 = time.perf_counter()
    fn()
    first_s = time.perf_counter() - t0  # the cold call: longer, so never too few
    if first_s > 0:
        reps = max(min(reps, MIN_REPS), min(reps, int(TIMING_SPAN_S / first_s) + 1))
    times: list[float] = []
    while len(times) < reps or (sum(times) < min_s * 1e3 and len(times) < MAX_REPS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(sorted(times)[: max(1, (len(times) + 1) // 2)]))


def engine_ms(graph: ir.Graph, onnx_path: str, cpus: Sequence[int]) -> tuple[float, float]:
    """(onnxruntime ms, native ms) of one whole frame on ``cpus`` (pinned, BLAS bounded)."""
    from edgedeploy.runtime.executor import GraphExecutor, default_choice, random_inputs

    feeds = random_inputs(graph)
    native = {layer.name: default_choice(layer) for layer in graph.layers}
    ort_ms = session_ms(onnx_path, feeds, cpus, min_s=WHOLE_MIN_S)
    with limit_blas_threads(len(cpus)):
        ex = GraphExecutor(graph, native)
        native_ms = median_ms(lambda: ex.run(feeds), min_s=WHOLE_MIN_S)
    return ort_ms, native_ms


def batch_ms(onnx_path: str, feeds: Mapping[str, Any], cpus: Sequence[int],
             sizes: Sequence[int], reps: int) -> dict[str, float]:
    """Per-frame milliseconds of one onnxruntime call of ``b`` copies of the frame, for each
    ``b`` of ``sizes`` (``onnx_path``: a file with a free batch axis), keyed ``str(b)``: the
    batch timings of a model's runs, on this host and on a board; ``reps`` calls each, or
    :data:`BATCH_MIN_S` of them."""
    import numpy as np

    return {str(b): session_ms(onnx_path, {k: np.concatenate([v] * int(b))
                                           for k, v in feeds.items()}, cpus, reps=reps,
                               min_s=BATCH_MIN_S) / int(b)
            for b in sizes}


def session_ms(onnx_path: str | bytes, feeds: Mapping[str, object], cpus: Sequence[int],
               engine: str = ONNXRUNTIME, reps: int = 7, *, fp16: bool = False,
               min_s: float = 0.0) -> float:
    """Milliseconds of one onnxruntime call of the model on ``cpus`` (pinned, BLAS bounded):
    the model as given, or its int8 variant (the same float inputs); with ``engine`` LiteRT,
    one interpreter call of a .tflite file, ``feeds`` in the file's own layout (the transposes
    from the IR's are priced apart, as layout transforms), computing in fp16 with ``fp16``; the
    median of the faster half of ``reps`` calls, or of those ``min_s`` seconds hold."""
    from edgedeploy.runtime.engines.litert import LiteRTHalfModel, LiteRTModel
    from edgedeploy.runtime.engines.onnxruntime import OrtSegment

    if engine not in (ONNXRUNTIME, LITERT):
        raise ValueError(f"session_ms times onnxruntime or LiteRT, not {engine!r}")
    pin_process(list(cpus))
    with limit_blas_threads(len(cpus)):
        # LiteRT allocated at the feeds' shapes: a file's placeholder for a dynamic size (a
        # mel front end's one sample) may not even prepare
        session = (OrtSegment(onnx_path, cpus=list(cpus)) if engine == ONNXRUNTIME
                   else (LiteRTHalfModel if fp16 else LiteRTModel)(
                       onnx_path, cpus=list(cpus),
                       input_shapes={n: tuple(getattr(x, "shape", ())) for n, x in feeds.items()}))
        try:
            return median_ms(lambda: session.run(feeds), reps, min_s)
        finally:
            session.close()


def paired_ms(first: str | bytes, second: str | bytes, feeds: Mapping[str, object],
              cpus: Sequence[int], pairs: int = 9) -> tuple[float, float]:
    """Milliseconds of one onnxruntime call of ``first`` and of ``second`` on ``cpus`` (pinned,
    BLAS bounded), timed in alternation, each pair in the other order from the last: the median
    of ``first``'s calls, and that over the median of the pairs' ratios. A host that drifts
    (a neighbour's burst, a clock step) moves both calls of a pair alike, where two timings one
    after the other each take their own share of it; a ratio of a few percent is all a
    Winograd layer gains. At most ``pairs`` pairs, as many as :data:`PAIRED_S` holds after the
    first (:func:`pairs_for`).

    Neither session's idle threads spin: threads that spin on after their session's call hold
    the cores the other's call then needs. On two cores, with spinning, a 256-channel 56 px
    convolution in context read 45 ms as given and 22 rewritten, against 20 and 13 for either
    session alone; VGG-16's rewritten 2-thread session was then predicted at 22 fps and ran
    6.5."""
    from edgedeploy.runtime.engines.onnxruntime import OrtSegment

    pin_process(list(cpus))
    with limit_blas_threads(len(cpus)):
        sessions = [OrtSegment(m, cpus=list(cpus), allow_spinning=False)
                    for m in (first, second)]
        try:
            for session in sessions:  # warm-up
                session.run(feeds)
            firsts, ratios = [], []
            k, todo = 0, max(1, pairs)
            while k < todo:
                ms = {}
                for i in ((0, 1) if k % 2 == 0 else (1, 0)):
                    t0 = time.perf_counter()
                    sessions[i].run(feeds)
                    ms[i] = (time.perf_counter() - t0) * 1e3
                firsts.append(ms[0])
                ratios.append(ms[0] / ms[1])
                if k == 0:
                    todo = pairs_for((ms[0] + ms[1]) / 1e3, todo)
                k += 1
        finally:
            for session in sessions:
                session.close()
    first_ms = float(statistics.median(firsts))
    return first_ms, first_ms / float(statistics.median(ratios))


def pairs_for(pair_s: float, most: int) -> int:
    """Pairs of a paired timing whose first pair took ``pair_s``: as many as
    :data:`PAIRED_S` holds, at least :data:`MIN_PAIRS` and at most ``most``."""
    fit = int(PAIRED_S / pair_s) if pair_s > 0 else most
    return max(min(fit, most), min(MIN_PAIRS, most))


def whole_model_stage(graph: ir.Graph, io: StageIO, choices: Mapping[str, str],
                      segments: Mapping) -> GraphStage:
    """Pipeline factory (module-level so spawn can pickle it): the model as one onnxruntime
    segment on the cores this replica was pinned to."""
    return GraphStage(graph, io, choices, segments, cpus=available_cpus())


def replica_fps(graph: ir.Graph, onnx_path: str, cpus: Sequence[int], replicas: int,
                frames: int = REPLICA_FRAMES, batch: int = 1, windows: int = 1) -> float:
    """Throughput of ``replicas`` one-core onnxruntime replicas of the whole model on ``cpus``,
    over ``frames`` frames (rounded up to whole batches for every replica), ``batch`` frames a
    call (``onnx_path`` then a file with a free batch axis); the median of ``windows`` runs,
    as the host keeps for the model a profile is taken for (:data:`OWN_REPLICA_WINDOWS`)."""
    from edgedeploy.runtime.pipeline import Pipeline
    from edgedeploy.runtime.window import whole_periods

    spec, frame = whole_model_spec(graph, onnx_path, cpus, replicas, batch)
    with Pipeline([spec]) as pipe:
        return median_window_fps(pipe, frame, whole_periods(frames, batch * replicas),
                                 REPLICA_WARMUP * batch, windows)


def whole_model_spec(graph: ir.Graph, onnx_path: str, cpus: Sequence[int], replicas: int,
                     batch: int = 1) -> tuple[Any, list[Any]]:
    """The model whole as one stage of ``replicas`` one-core onnxruntime replicas on ``cpus``
    (a ``StageSpec``), and a seeded frame to feed it."""
    from edgedeploy.runtime.executor import random_inputs
    from edgedeploy.runtime.pipeline import StageSpec, TensorSpec

    io = plan_stage_io(graph, [])[0]
    choices = {layer.name: ONNXRUNTIME for layer in graph.layers}
    segments = {segment_key(ONNXRUNTIME, list(io.inputs), list(io.outputs)): onnx_path}
    feeds = random_inputs(graph)
    spec = StageSpec(name="replicas", cpus=tuple(cpus), replicas=replicas, batch=batch,
                     factory=whole_model_stage, factory_args=(graph, io, choices, segments),
                     inputs=tuple(TensorSpec(graph.shape(t), ring_dtype(graph, t))
                                  for t in io.inputs),
                     outputs=tuple(TensorSpec(graph.shape(t), ring_dtype(graph, t))
                                   for t in io.outputs))
    return spec, [feeds[t] for t in io.inputs]


def stage_frame_ms(spec: Any, frame: Sequence[Any], call_ms: float) -> float | None:
    """A stage's own cost a frame around its engine call: ``spec`` (one replica, the model
    whole, on the cores this process is pinned to) streamed inline, less ``call_ms``, the
    call's time alone; None where a call is :data:`FRAME_MAX_CALL_MS` or longer (the cost is
    then under a percent of a frame and the difference noise). An audio model of 7 us a call
    streamed at 16 us a frame, and was predicted 1.5x too fast without it."""
    from .inline_pipeline import InlinePipeline

    if not 0 < call_ms < FRAME_MAX_CALL_MS:
        return None
    frames = int(min(max(FRAME_WINDOW_S * 1e3 / call_ms, 20), MAX_FRAME_WINDOW))
    with InlinePipeline([spec]) as pipe:
        fps = median_window_fps(pipe, frame, frames, REPLICA_WARMUP, FRAME_WINDOWS)
    return round(max(1e3 / fps - call_ms, 0.0), 6)


def median_window_fps(pipe: Any, frame: Sequence[Any], frames: int, warmup: int,
                      windows: int) -> float:
    """The median throughput of ``windows`` windows of ``frames`` copies of ``frame`` each
    (:data:`OWN_REPLICA_WINDOWS` for the model a profile is taken for), one after another in
    one stream through a started pipeline, after ``warmup`` frames and fed ``pipe.tail`` more
    behind the last; each window scored as the estimator scores a round (``runtime.window``).
    One stream, not a run a window: each run paid its own warm-up and tail, 48 frames for the
    16 counted of two replicas taking four frames a call, and VGG-16's three such windows took
    42 s of a quick profile (seen while developing)."""
    from edgedeploy.runtime.window import timed_rounds

    return statistics.median(w.throughput_fps for w in timed_rounds(
        lambda n, f: pipe.stream(f, n), lambda _k: frame, frames, warmup, windows, pipe.tail,
        pipe.period))
