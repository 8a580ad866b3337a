"""Measure to decide, as TensorRT times its tactics when it builds an engine: the cost model
ranks, the board chooses.

The shortlist is the plan, the next best predicted plans of its Pareto set (``shortlist`` in all,
K = 4 by default) and every baseline that is an ordinary plan (the whole model through one
engine, threaded or replicated). Each contender is measured on the target under the one
estimator of ``benchmarks.estimator`` -- the same warm-up, the same frames, rounds alternated --
and the measured winner becomes the plan, its measured figures beside the predicted ones, so a
measured plan is never slower than what a user would load by hand. On this host contenders run
as pinned pipelines; on a board twin through the runner's ``measure`` protocol (simulated,
labelled so).
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.benchmarks.estimator import (
    PROBE_MIN_S,
    Window,
    pooled_fps,
    probe_rate,
    warmup_frames,
)
from edgedeploy.benchmarks.systems import LATENCY_SAMPLES
from edgedeploy.importers.onnx_batch import frames_kept_apart
from edgedeploy.runtime import ir
from edgedeploy.runtime.stages import BATCH_SIZES
from edgedeploy.schemas.plan import (
    Contender,
    Decision,
    ParetoStage,
    Plan,
    Predicted,
)
from edgedeploy.schemas.target import Target

log = logging.getLogger("edgedeploy.decide")
DEFAULT_SHORTLIST = 4
#: Rounds come in pairs, one in each order: a contender measured right after another can run
#: measurably slower or faster than one measured first, and an odd count would hand the
#: contender listed first (the planner's plan) one more round in its favoured position.
MIN_ROUNDS = 4
#: More rounds while the budget lasts shrink the noise of a shared machine, up to this many.
MAX_ROUNDS = 8
#: Seconds one contender's timed window aims at (frames per round follow from a probe), unless
#: the budget cannot hold MIN_ROUNDS rounds of such windows.
WINDOW_S = 0.4
#: Frames one window holds at most (a model at 5,000 fps still gets its 0.4 s).
MAX_WINDOW_FRAMES = 2000
#: The share of the budget measuring keeps however long a first calibration took: with none
#: left, windows shrank to a probe's length and read noise (two int8 replicas of YOLOv8n
#: measured 69 fps in 0.1 s windows, 106 fps in a bench's, and lost the decision).
MEASURE_SHARE = 0.5
#: The share of ``measure.quick_profile_s`` a quick profile's layer samples get however long
#: the models' whole runs before them took (they get what the budget leaves, this at least):
#: the cost model must still be fitted from them, and a VGG-16 runs whole for longer than 30 s.
QUICK_LAYER_MIN_SHARE = 1 / 3
#: Contenders start together while their start-up memory (about START_MEMORY_COPIES copies of
#: the model's weights a worker) fits in this share of the memory available ...
START_MEMORY_SHARE = 0.5
START_MEMORY_COPIES = 6
#: ... or SEGMENT_START_COPIES a worker whose layers all run in one engine segment (its spec
#: holds their weights' sizes only): a worker of VGG-16 whole in onnxruntime peaked at 1.57 GiB
#: for its 0.52 GiB of weights, and priced at six copies its contenders started one at a time,
#: 84 s for seven (seen while developing).
SEGMENT_START_COPIES = 3.5
#: One-in-flight latency samples after each window where the objective is not latency: reported
#: in the lockfile, not decided by, so a few per round do ...
REPORTED_LATENCY_SAMPLES = 4
#: ... in this many rounds (a pair, one in each order), not in every one: ResNet-50's frames
#: one at a time took 5-7 s of its decision's 25 s when every round and probe took them ...
REPORTED_LATENCY_ROUNDS = 2
#: ... and in the first alone where one round's samples took longer than this: four of
#: VGG-16's frames one at a time take 1-1.5 s a contender, 10 s a pair of rounds of seven.
REPORTED_LATENCY_SPAN_S = 0.5
#: A contender that is not a baseline must beat the best measured baseline by this fraction:
#: rounds on a shared machine move by a few percent, and a tie goes to what a user would run.
WIN_MARGIN = 0.03
#: ... and be faster in this share of the paired rounds: a mean lifted by one lucky pair (a
#: neighbour's load on the baseline's rounds) is not a win.
WIN_PAIR_SHARE = 0.75
#: A contender chosen over every baseline is timed against the best one again, in this many
#: fresh rounds (in pairs, one in each order), before it is kept: chosen as the fastest of
#: several noisy measurements, its figure is biased upward (the winner's curse). MobileNetV1's
#: 4-frame replicas beat one-thread replicas by 3.1 % in the rounds that chose them and measured
#: 0.98x them in the bench that followed.
CONFIRM_ROUNDS = 4
#: ... and must be faster by this fraction on average in those rounds: an unbiased estimate
#: now, so a smaller bar than the selection's, but a bar, since a tie goes to the baseline.
CONFIRM_MARGIN = 0.015
#: Where the budget cannot hold MIN_ROUNDS rounds of every contender, those measured this much
#: slower than the fastest after the first pair of rounds leave the race: ResNet-50's seven
#: contenders took 1-2.5 s a window on 2 cores, and four rounds of every one took 30 s of a
#: "30 s" decision. Its worker-process session, 24 % behind after a pair, was still 16 %
#: behind after four (seen while developing).
RACE_MARGIN = 0.15
#: Contenders are scored by their frames over the wall time of their rounds together
#: (``pooled_fps``), not the median: a configuration that runs slow in a quarter of its rounds
#: (a threaded stage fighting its feeding process for two cores measured 217-219 fps in six
#: rounds and 134-148 in two) is slow a quarter of the time, which a median hides ...
#: ... but for its slowest round, where it has :data:`TRIMMED_FROM` or more: a neighbour's burst
#: lands on one contender's round, not on every contender's, and a round at half speed weighs
#: twice in a pool. MobileNetV2's replicas read 160, 77.5, 156 and 161 fps, pooled 126 against
#: 128 for a 2-thread session (110-143), which then ran 0.80x of them in the bench; twice more
#: on ResNet-50 one such round decided against the configuration the bench found fastest
#: (seen while developing).
TRIMMED_FROM = 4
ESTIMATOR = ("frames / wall time over a contender's rounds but its slowest (of four or more), "
             "alternated in pairs, after the same warm-up, on the same frames")


@dataclass
class Entry:
    """A plan the board may choose: its stages and a choice per layer."""

    name: str
    stages: list[ParetoStage]
    choices: list[str]
    predicted: Predicted
    #: A baseline configuration (what a user would load by hand), which wins ties.
    baseline: bool = False
    #: A variant that may not run on this model (a micro-batch the graph hard-codes against):
    #: dropped from the decision when it fails, where any other contender's failure is an error.
    optional: bool = False
    #: The model precision it runs when ``model.precision: auto`` measures int8 against fp32
    #: (None otherwise: one precision, the planned one).
    precision: str | None = None
    windows: list[Window] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    energy_mj: list[float] = field(default_factory=list)
    #: Rounds of the confirmation (:data:`CONFIRM_ROUNDS`), for the winner and the baseline
    #: it was confirmed against; empty for every other contender.
    confirm: list[Window] = field(default_factory=list)
    #: Its probe's rate, frames a second: set where a decision probed it, or given where it
    #: runs warm on a system a decision already probed (not probed again).
    probe_fps: float | None = None

    @property
    def key(self) -> str:
        """Its name in the decision: the name, after its precision when precisions compete."""
        return f"{self.precision}:{self.name}" if self.precision else self.name

    @property
    def measured_fps(self) -> float:
        """Over its rounds, pooled but for the slowest (see :data:`ESTIMATOR`)."""
        return scored_fps(self.windows)

    @property
    def confirmed_fps(self) -> float:
        return scored_fps(self.confirm)


def scored_fps(windows: list[Window]) -> float:
    """A contender's rate over ``windows`` by :data:`ESTIMATOR`: pooled, the slowest left out
    where there are :data:`TRIMMED_FROM` or more."""
    if len(windows) >= TRIMMED_FROM:
        slowest = min(range(len(windows)), key=lambda k: windows[k].throughput_fps)
        windows = windows[:slowest] + windows[slowest + 1:]
    return pooled_fps(windows)


def _objective_value(predicted: Predicted, objective: str) -> float:
    value = {"throughput": -(predicted.throughput_fps or 0.0),
             "latency": predicted.latency_ms, "energy": predicted.energy_mj}[objective]
    return float("inf") if value is None else float(value)


def shortlist(plan: Plan, k: int = DEFAULT_SHORTLIST, *,
              graph: ir.Graph | None = None, factors: dict[str, Any] | None = None,
              cpus: Sequence[int] | None = None, feed_ms: float = 0.0) -> list[Entry]:
    """The plan, its next K-1 best predicted Pareto points, every runnable baseline and, given
    the ``graph`` (a target whose measurements run the real engines), micro-batched variants
    (priced by the model's measured batch speed-ups in ``factors``, its segment factors) and
    the variants inline that cover ``cpus``, every CPU the plan may use on its target (this
    host's by default; ``planner.adapter.plan_cpus``), priced without the frame's hand-over
    from the caller (``feed_ms``, :func:`inline_copies`)."""
    choices = [layer.choice for layer in plan.layers]
    own = [ParetoStage(start=s.start, stop=s.stop, cluster=s.cluster, cores=s.cores,
                       replicas=s.replicas, cpus=s.cpus, choices=choices[s.start:s.stop],
                       engine=s.engine, device_id=s.device_id, fp16=s.fp16, batch=s.batch,
                       inline=s.inline)
           for s in plan.stages]
    out = [Entry("plan", own, choices, plan.predicted)]
    #: each configuration once: its canonical text -> the entry that measures it
    seen = {json.dumps([p.model_dump() for p in own], sort_keys=True): out[0]}

    def add(name: str, stages: list[ParetoStage], predicted: Predicted,
            baseline: bool = False) -> bool:
        key = json.dumps([p.model_dump() for p in stages], sort_keys=True)
        if key in seen:
            # the plan or a Pareto point that is a baseline's configuration
            seen[key].baseline = seen[key].baseline or baseline
            return False
        seen[key] = Entry(name, stages, [c for s in stages for c in s.choices], predicted,
                          baseline)
        out.append(seen[key])
        return True

    ranked = sorted(enumerate(plan.pareto),
                    key=lambda kp: _objective_value(kp[1].predicted, plan.objective))
    taken = 1
    for k_, point in ranked:
        if taken >= k:
            break
        if plan.objective == "throughput" and _within_margin_of_a_baseline(point, plan):
            continue
        taken += add(f"pareto{k_}", point.stages, point.predicted)
    for name, b in sorted(plan.baselines.items()):
        if b.stages:
            add(name, b.stages, b.predicted, baseline=True)
    if graph is None:  # a twin: its measurements do not run the real engines
        return out
    # a batched whole-model stage on every core runs inline only: worker processes buy it
    # nothing, and each contender costs the decision its start-up and rounds
    batched = batched_variants(plan, graph, factors)
    inline = {name.removesuffix("_inline"): (name, stages, predicted)
              for name, stages, predicted in inline_copies(batched, cpus)}
    variants = [(inline.get(v[0], v), False) for v in batched]
    variants += [(v, True) for v in inline_variants(plan, cpus, feed_ms)]
    for (name, stages, predicted), baseline in variants:
        if add(name, stages, predicted, baseline=baseline):
            out[-1].optional = True
    return out


def _within_margin_of_a_baseline(point: Any, plan: Plan) -> bool:
    """Whether Pareto ``point`` runs a baseline's stages (cores, replicas, cuts, batch) with
    other layer choices only, predicted less than :data:`WIN_MARGIN` faster than it. Its
    rounds could not tell the two apart, and as no baseline it must beat it by that margin:
    ResNet-50's replicas with a native layer or two, predicted 0.04 % faster than onnxruntime's
    own replicas, took a contender's start-up and rounds of a 30 s decision (seen while
    developing). Where the choices save the margin it is measured, as the Winograd trial is."""
    def frame(stages: list[ParetoStage]) -> str:
        return json.dumps([s.model_dump(exclude={"choices"}) for s in stages], sort_keys=True)

    mine = frame(point.stages)
    fps = point.predicted.throughput_fps or 0.0
    return any(b.stages and frame(b.stages) == mine
               and fps < (b.predicted.throughput_fps or 0.0) * (1.0 + WIN_MARGIN)
               for b in plan.baselines.values())


def inline_variants(plan: Plan, cpus: Sequence[int] | None = None, feed_ms: float = 0.0
                    ) -> list[tuple[str, list[ParetoStage], Predicted]]:
    """Each baseline that is the whole model in one stage over every core of ``cpus`` (the
    target's; this host's by default), one frame a call, run inline (``<baseline>_inline``): in
    the feeding process, without the hop to a worker process -- one threaded session, or one
    one-thread session per core in a thread each (``runtime.inline_replicas``): the stock
    runtime exactly as its user runs it, in the caller's process. They count as baselines,
    whatever the model's size: a plan that is not one must beat them as it must beat every way a
    user would run the model by hand. They are measured whatever they are predicted at."""
    return inline_copies([(name, b.stages or [], b.predicted)
                          for name, b in sorted(plan.baselines.items())], cpus, batch=1,
                         feed_ms=feed_ms)


def inline_copies(variants: list[tuple[str, list[ParetoStage], Predicted]],
                  cpus: Sequence[int] | None = None, batch: int | None = None,
                  feed_ms: float = 0.0) -> list[tuple[str, list[ParetoStage], Predicted]]:
    """Those of ``variants`` that are one CPU stage over every core of ``cpus`` (this host's by
    default; of ``batch`` frames a call, if given), run inline (``<name>_inline``). A board's
    cores, not the planning host's: a 4-core board planned from a 2-core laptop had no inline
    contender. One session taking one frame a call is predicted without ``feed_ms``, the
    frame's hand-over from the feeding process the planner prices into a worker stage
    (``planner.partition``); replicas keep their prediction, whose measured speed-up holds
    their feeding."""
    from edgedeploy.runtime.affinity import available_cpus
    from edgedeploy.runtime.vocab import GPU_CLUSTER

    every = sorted(available_cpus() if cpus is None else cpus)
    return [(f"{name}_inline", [stages[0].model_copy(update={"inline": True})],
             _unfed(predicted, feed_ms) if stages[0].replicas == stages[0].batch == 1
             else predicted)
            for name, stages, predicted in variants
            if len(stages) == 1 and stages[0].cluster != GPU_CLUSTER
            and sorted(stages[0].cpus) == every and batch in (None, stages[0].batch)]


def _unfed(predicted: Predicted, feed_ms: float) -> Predicted:
    """``predicted`` of a worker stage without the frame's ``feed_ms`` hand-over, where it was
    priced in and less than the whole period."""
    period, latency = predicted.period_ms, predicted.latency_ms
    if feed_ms <= 0 or period is None or period <= feed_ms:
        return predicted
    by = 1.0 if latency is None or latency <= feed_ms else (latency - feed_ms) / latency
    return predicted.per_frame_faster(period / (period - feed_ms), by)


def batched_variants(plan: Plan, graph: ir.Graph, factors: dict[str, Any] | None = None
                     ) -> list[tuple[str, list[ParetoStage], Predicted]]:
    """Micro-batched copies of the baselines that run the whole model in onnxruntime
    (``<baseline>_batch<B>``): more frames per call amortise weight traffic, which the per-layer
    cost model does not price. Their predicted figures are the baseline's scaled by the
    per-frame speed-up a profile measured on this model at B frames a call
    (``costmodel.segments.batch_speedup`` of its ``factors``), else the baseline's as they are;
    either way they are measured. Every batch size of the baseline predicted fastest batched,
    and the largest of each other one: the predictions cannot rank them, since a batch of
    replicas is priced at no gain (measured alone, one session's speed-up does not carry over
    to replicas that share the memory bus). Ranked by their own figures, ResNet-50's 4-frame
    session was left out whenever the replicas were predicted 2 % ahead, though it had measured
    1.09x them; ranked by batched figures, PP-OCR's 4-frame replicas were, though they measured
    1.22x the replicas. Only for the throughput objective and within ``max_latency_ms`` (a
    frame may wait for a whole batch's call)."""
    from edgedeploy.runtime.stages import batchable

    if plan.objective != "throughput":
        return []
    names = [layer.name for layer in graph.layers]

    def whole_batchable(stages: list[ParetoStage]) -> bool:
        return all(batchable(graph, s.start, s.stop,
                             dict(zip(names[s.start:s.stop], s.choices, strict=True)))
                   for s in stages)

    whole = [(n, b) for n, b in plan.baselines.items() if b.stages and whole_batchable(b.stages)]
    bound = plan.constraints.get("max_latency_ms")

    def variants(name: str, base: Any) -> list[tuple[str, list[ParetoStage], Predicted]]:
        out = []
        for b in BATCH_SIZES:
            latency = base.predicted.latency_ms
            if bound is not None and latency is not None and latency * b > float(bound):
                continue
            stages = [s.model_copy(update={"batch": b}) for s in base.stages]
            out.append((f"{name}_batch{b}", stages,
                        _batched_prediction(base.predicted, stages, b, factors or {})))
        return out

    options = {n: variants(n, b) for n, b in sorted(whole, key=lambda nb: nb[0])}
    if not options:
        return []

    def rank(name: str) -> tuple[float, float, str]:
        best = max((p.throughput_fps or 0.0 for _, _, p in options[name]), default=0.0)
        return best, plan.baselines[name].predicted.throughput_fps or 0.0, name

    first = max(options, key=rank)
    # the others' largest batch too: a batch of replicas is priced at no gain, yet two
    # replicas of 4 frames measured 1.22x two of one on PP-OCR's recogniser
    return options[first] + [v for n in options if n != first for v in options[n][-1:]]


def _batched_prediction(predicted: Predicted, stages: list[ParetoStage], b: int,
                        factors: dict[str, Any]) -> Predicted:
    """``predicted`` of the unbatched stages at ``b`` frames a call: throughput and energy per
    frame by the measured speed-up of the slowest stage's configuration, latency a whole
    call's (a frame waits for its batch); per frame unchanged where no speed-up was measured in
    that configuration. A replicated stage takes its replicas' own measured gain
    (``segments.replica_batch_gain``); where that was not measured, one session's slow-down
    but not its gain, which replicas may not share: ZFNet-512's one-core session ran 4 frames
    1.28x faster per frame and its 2 replicas of 4 frames 1.02-1.15x faster than of one, while
    AlexNet's took its whole 1.95x (seen while developing)."""
    from edgedeploy.costmodel.configs import CoreConfig
    from edgedeploy.costmodel.segments import batch_speedup, replica_batch_gain

    def stage_up(s: ParetoStage) -> float:
        one = batch_speedup(factors, CoreConfig(s.cluster, s.cores), b) or 1.0
        if s.replicas == 1:
            return one
        return replica_batch_gain(factors, s.cluster, b) or min(one, 1.0)

    up = min((stage_up(s) for s in stages), default=1.0)
    return predicted.per_frame_faster(up, b / up)


Measure = Callable[[Entry, int, int, bool], tuple[Window, float | None, float | None]]


def _model_of(manifest: Any, graph: ir.Graph) -> Path:
    from edgedeploy.planner.precision import planned_model

    return planned_model(manifest, graph)


def decide(entries: list[Entry], measure: Measure, *, objective: str, budget_s: float,
           target: str, simulated: bool, progress: Callable[[str], None] | None = None,
           max_rounds: int = MAX_ROUNDS) -> tuple[Entry, Decision]:
    """Measure the entries in alternated rounds within ``budget_s``; the measured winner and
    the decision. Where the budget cannot hold :data:`MIN_ROUNDS` rounds of every entry, those
    far behind after the first pair of rounds leave the race (:func:`_race`).
    ``measure(entry, frames, warmup, latency) -> (window, latency ms, energy mJ)``: latency
    samples (None without them) where ``latency`` asks for them, in every round
    for the latency objective and in the first :data:`REPORTED_LATENCY_ROUNDS` otherwise
    (:func:`_reports_latency`)."""
    say = progress or (lambda _m: None)
    start = time.monotonic()
    entries = list(entries)
    probe: dict[str, float] = {}
    for e in list(entries):  # sizes the rounds; an optional variant that cannot run drops out
        try:
            if e.probe_fps is None:
                e.probe_fps = probe_rate(lambda n, e=e: measure(e, n, 1, False)[0], 2)
            probe[e.key] = e.probe_fps
        except Exception as exc:
            if not e.optional:
                raise
            entries.remove(e)
            why = ("too little memory to hold it beside the others"
                   if isinstance(exc, MemoryError) else "it does not run on this model")
            log.warning("dropped %s: %s: %s", e.key, why, exc)
            say(f"dropped {e.key}: {why} ({type(exc).__name__})")
    # windows of WINDOW_S, shorter (not below a probe's) where the budget cannot hold the
    # minimum rounds of them: a window of a few frames of a batched system reads nonsense
    window_s = float(np.clip(budget_s / (MIN_ROUNDS * max(len(entries), 1)), PROBE_MIN_S,
                             WINDOW_S))
    frames = {e.key: int(np.clip(probe[e.key] * window_s, 4, MAX_WINDOW_FRAMES))
              for e in entries}

    def timed(e: Entry, latency: bool = False) -> tuple[Window, float | None, float | None]:
        """One window of ``e``: its frames, after the warm-up every round gives it."""
        return measure(e, frames[e.key], warmup_frames(frames[e.key]), latency)
    # until a round has been timed: the frames each contender's round streams at its probe's
    # rate, a quarter more for the latency samples
    per_round_s = max(sum(1.25 * streamed_frames(e, frames[e.key]) / max(probe[e.key], 1e-9)
                          for e in entries), 1e-3)
    if MIN_ROUNDS * per_round_s > budget_s > 0:  # said before it happens, not only after
        say(f"measure: {MIN_ROUNDS} rounds of {len(entries)} contender(s), the fewest a "
            f"decision takes, need about {MIN_ROUNDS * per_round_s:.0f} s on this model, over "
            f"the {budget_s:.0f} s budget"
            + (": those far behind after two leave the race" if objective == "throughput"
               and len(entries) > 2 else ""))
    running = list(entries)  # those still in the race (:func:`_race`)
    for r in range(max_rounds):
        order = running if r % 2 == 0 else running[::-1]
        t0 = time.monotonic()
        # rounds that fit the budget, at least MIN_ROUNDS, in pairs (for the progress line)
        fit = int(np.clip((budget_s - (t0 - start)) / per_round_s + r, MIN_ROUNDS, max_rounds))
        rounds = min(fit + fit % 2, max_rounds)
        for e in order:
            elapsed = time.monotonic() - start
            eta = per_round_s * (rounds - r)
            say(f"measure round {r + 1}/{rounds}: {e.key} ({elapsed:.0f} s, ETA {eta:.0f} s)")
            window, latency, energy = timed(e, objective == "latency" or _reports_latency(e, r))
            e.windows.append(window)
            if latency is not None:
                e.latency_ms.append(latency)
            if energy is not None:
                e.energy_mj.append(energy)
        per_round_s = time.monotonic() - t0
        paired = (r + 1) % 2 == 0  # stop only after a round in each order
        if paired and r + 1 >= MIN_ROUNDS and time.monotonic() - start + 2 * per_round_s \
                > budget_s:
            break
        left = MIN_ROUNDS - r - 1  # rounds every contender still takes
        if paired and left > 0 and objective == "throughput" \
                and time.monotonic() - start + left * per_round_s > budget_s:
            for e in _race(running):
                running.remove(e)
                say(f"measure: {e.key} leaves the race after {r + 1} rounds at "
                    f"{e.measured_fps:.4g} fps, over {RACE_MARGIN:.0%} behind the fastest "
                    "(the budget holds no more rounds of every contender)")
            if len(running) == 1:  # nothing left to measure it against
                break
    winner = _winner(running, objective)
    reason = _kept_baseline(running, winner, objective)
    base = _best_baseline(running)
    split = _split(running, base) if objective == "throughput" and winner.baseline else None
    challenger = split or (winner if objective == "throughput" and not winner.baseline
                           else None)
    if challenger is not None and base is not None:
        again = CONFIRM_ROUNDS + CONFIRM_ROUNDS % 2  # in pairs, one in each order
        for r in range(again):
            for e in (challenger, base) if r % 2 == 0 else (base, challenger):
                say(f"confirm round {r + 1}/{again}: {e.key} "
                    f"({time.monotonic() - start:.0f} s)")
                e.confirm.append(timed(e)[0])
        if split is not None:
            if _clears(split.confirmed_fps, base.confirmed_fps,
                       _pair_share(split.confirm, base.confirm)):
                winner, reason = split, _split_confirmed(split, base)
            else:
                reason = f"{reason}; {split_unconfirmed(split, base)}"
        elif winner.confirmed_fps <= base.confirmed_fps * (1.0 + CONFIRM_MARGIN):
            reason = _unconfirmed(winner, base)
            winner = base
    for e in entries:
        log.info("measured %s on %s: %.4g fps (rounds %s), predicted %.4g fps%s", e.key,
                 target, e.measured_fps, ", ".join(f"{w.throughput_fps:.4g}" for w in e.windows),
                 e.predicted.throughput_fps or 0.0, " <- chosen" if e is winner else "")
    decision = Decision(
        measured=True, target=target, simulated=simulated, estimator=ESTIMATOR,
        budget_s=budget_s, seconds=round(time.monotonic() - start, 2), winner=winner.key,
        reason=reason,
        contenders=[Contender(name=e.key, predicted=e.predicted,
                              measured_fps=e.measured_fps,
                              rounds_fps=[w.throughput_fps for w in e.windows],
                              latency_ms=statistics.median(e.latency_ms) if e.latency_ms
                              else None,
                              energy_mj=statistics.median(e.energy_mj) if e.energy_mj
                              else None, baseline=e.baseline, precision=e.precision,
                              confirm_fps=[w.throughput_fps for w in e.confirm] or None)
                    for e in entries])
    return winner, decision


def streamed_frames(e: Entry, frames: int) -> int:
    """Frames one round of ``e`` streams for a window of ``frames``: the warm-up every round
    gives, the window in whole periods of its completions, three at least
    (``runtime.metrics.timed_frames``), and the frames fed behind it, as its pipeline runs
    (inline, one replica of one frame: one frame at a time, none behind). A round of VGG-16's two
    replicas of four frames a call streams 42 frames for a window of 5; counted on the 5, the
    first round's ETA said 31 s, and the four rounds took 76 s more (seen while developing)."""
    from edgedeploy.runtime.metrics import timed_frames
    from edgedeploy.runtime.pipeline_spec import period_of, tail_of

    if any(s.inline and s.replicas == s.batch == 1 for s in e.stages):
        return warmup_frames(frames) + frames
    return (warmup_frames(frames) + timed_frames(frames, period_of(e.stages))
            + tail_of(e.stages))


def _reports_latency(e: Entry, r: int) -> bool:
    """Whether round ``r`` (from 0) of ``e`` samples its reported latency: the first, and the
    next of :data:`REPORTED_LATENCY_ROUNDS` where the first's samples took no longer than
    :data:`REPORTED_LATENCY_SPAN_S` together."""
    if r == 0:
        return True
    return (r < REPORTED_LATENCY_ROUNDS and bool(e.latency_ms)
            and REPORTED_LATENCY_SAMPLES * e.latency_ms[0] / 1e3 <= REPORTED_LATENCY_SPAN_S)


def _race(running: list[Entry]) -> list[Entry]:
    """Those of ``running`` that leave the race: even their fastest round over
    :data:`RACE_MARGIN` slower than the fastest contender, save the fastest baseline (what any
    other must beat). Not their rounds together: one round under a neighbour's burst (11.5 fps
    against 20.0 in the next) put ResNet-50's replicas 25 % behind, out of the race, and the
    2-thread session that won ran 0.87x of them in the bench (seen while developing)."""
    fastest = max(running, key=lambda e: e.measured_fps)
    base = _best_baseline(running)
    return [e for e in running if e is not fastest and e is not base
            and max(w.throughput_fps for w in e.windows)
            < (1.0 - RACE_MARGIN) * fastest.measured_fps]


def _best_baseline(entries: list[Entry]) -> Entry | None:
    return max((e for e in entries if e.baseline), key=lambda e: e.measured_fps, default=None)


def _clears(fps: float, base_fps: float, pair_share: float) -> bool:
    """A contender's win over a baseline: :data:`WIN_MARGIN` faster on average and in
    :data:`WIN_PAIR_SHARE` of the paired rounds."""
    return fps > base_fps * (1.0 + WIN_MARGIN) and pair_share >= WIN_PAIR_SHARE


def _split(entries: list[Entry], base: Entry | None) -> Entry | None:
    """The fastest contender where it is no baseline and its rounds split: faster than the best
    baseline by the margin on average, but not in enough of the pairs. Such a one is timed
    again alone against that baseline rather than dropped: YOLO-tiny's rewritten model ran
    32.2 fps against 29.1, faster in half the pairs, where other plans of it won every pair
    by 15-27 % (seen while developing)."""
    if base is None:
        return None
    fastest = max(entries, key=lambda e: (e.measured_fps, e.baseline))
    split = (not fastest.baseline
             and fastest.measured_fps > base.measured_fps * (1.0 + WIN_MARGIN)
             and pairs_won(fastest, base) < WIN_PAIR_SHARE)
    return fastest if split else None


def _split_confirmed(split: Entry, base: Entry) -> str:
    """Why a contender whose rounds split won after all."""
    return (f"{split.key} measured {split.measured_fps:.4g} fps against {base.key}'s "
            f"{base.measured_fps:.4g}, faster in only {pairs_won(split, base):.0%} of the paired "
            f"rounds, then {split.confirmed_fps:.4g} against {base.confirmed_fps:.4g} in "
            f"{len(split.confirm)} fresh rounds of the two alone, faster in "
            f"{_pair_share(split.confirm, base.confirm):.0%} of their pairs: it is kept")


def split_unconfirmed(split: Entry, base: Entry) -> str:
    """Why a contender whose rounds split lost in the fresh ones too (also the Winograd
    trial's)."""
    return (f"timed again alone, {split.confirmed_fps:.4g} against {base.confirmed_fps:.4g} in "
            f"{len(split.confirm)} fresh rounds, faster in "
            f"{_pair_share(split.confirm, base.confirm):.0%} of their pairs, where it must be "
            f"{WIN_MARGIN:.0%} faster on average and in {WIN_PAIR_SHARE:.0%} of the pairs too")


def _unconfirmed(winner: Entry, base: Entry) -> str:
    """Why a winner of the shortlist's rounds lost to the baseline in the fresh ones."""
    return (f"{winner.key} measured {winner.measured_fps:.4g} fps against {base.key}'s "
            f"{base.measured_fps:.4g} in the shortlist's rounds, but {winner.confirmed_fps:.4g} "
            f"against {base.confirmed_fps:.4g} in {len(winner.confirm)} fresh rounds of the two "
            f"alone: a contender that is no baseline must stay {CONFIRM_MARGIN:.1%} faster "
            "when timed again; the baseline is kept")


def _winner(entries: list[Entry], objective: str) -> Entry:
    if objective == "latency":
        return min(entries, key=lambda e: (statistics.median(e.latency_ms), e.key))
    if objective == "energy" and all(e.energy_mj for e in entries):
        return min(entries, key=lambda e: (statistics.median(e.energy_mj), e.key))
    best = max(entries, key=lambda e: (e.measured_fps, e.baseline, e.name == "plan"))
    base = _best_baseline(entries)
    if best.baseline or base is None:
        return _inline_on_a_tie(best, entries)
    if _clears(best.measured_fps, base.measured_fps, pairs_won(best, base)):
        return best
    return _inline_on_a_tie(base, entries)


def _inline_twin(e: Entry, entries: list[Entry]) -> Entry | None:
    """The contender that runs ``e``'s stages inline, where ``e`` runs in worker processes."""
    if not e.stages or any(s.inline for s in e.stages):
        return None
    stages = [s.model_copy(update={"inline": True}) for s in e.stages]
    return next((t for t in entries
                 if t.stages == stages and t.choices == e.choices and t.windows), None)


def _inline_on_a_tie(e: Entry, entries: list[Entry]) -> Entry:
    """``e``, or its inline twin where ``e`` runs in worker processes and does not clear it as
    a contender clears a baseline: the same sessions in the feeding process are the stock
    runtime as its user runs it (the bench's baselines) and need no worker processes, so a tie
    goes to them. Chosen by a few noisy rounds, PP-OCRv6's detector ran as two worker
    replicas, then 0.93x the same replicas as threads in the bench (seen while developing)."""
    twin = _inline_twin(e, entries)
    if twin is None or _clears(e.measured_fps, twin.measured_fps, pairs_won(e, twin)):
        return e
    return twin


def _kept_baseline(entries: list[Entry], winner: Entry, objective: str) -> str | None:
    """Why the winner is not the contender measured fastest (a baseline kept), else None."""
    fastest = max(entries, key=lambda e: e.measured_fps)
    if objective != "throughput" or fastest is winner:
        return None
    if _inline_twin(fastest, entries) is winner:
        return (f"{fastest.key} measured {fastest.measured_fps:.4g} fps against its inline "
                f"twin {winner.key}'s {winner.measured_fps:.4g}, faster in "
                f"{pairs_won(fastest, winner):.0%} of the paired rounds: worker processes must "
                f"be {WIN_MARGIN:.0%} faster than the same stage inline on average and in "
                f"{WIN_PAIR_SHARE:.0%} of the pairs; the inline twin is kept")
    return (f"{fastest.key} measured {fastest.measured_fps:.4g} fps against {winner.key}'s "
            f"{winner.measured_fps:.4g}, faster in {pairs_won(fastest, winner):.0%} of the "
            f"paired rounds: a contender that is no baseline must be {WIN_MARGIN:.0%} faster "
            f"on average and in {WIN_PAIR_SHARE:.0%} of the pairs; the baseline is kept")


def pairs_won(entry: Entry, other: Entry) -> float:
    """The share of paired rounds (one in each order) in which ``entry`` completed more frames
    a second than ``other``; 1.0 before a pair was measured."""
    return _pair_share(entry.windows, other.windows)


def _pair_share(mine: list[Window], theirs: list[Window]) -> float:
    """:func:`pairs_won` over two lists of rounds (the shortlist's, or a confirmation's)."""
    n = min(len(mine), len(theirs)) // 2 * 2
    if n == 0:
        return 1.0
    rates = [[w.throughput_fps for w in ws[:n]] for ws in (mine, theirs)]
    won = [rates[0][i] + rates[0][i + 1] > rates[1][i] + rates[1][i + 1] for i in range(0, n, 2)]
    return sum(won) / len(won)


def as_plan(plan: Plan, graph: ir.Graph, winner: Entry, decision: Decision) -> Plan:
    """The plan rewritten as the winner, measured figures beside the predicted ones."""
    measured = {"throughput_fps": winner.measured_fps,
                "latency_ms": statistics.median(winner.latency_ms) if winner.latency_ms
                else None, "simulated": decision.simulated, "source": "measure-to-decide"}
    update: dict[str, Any] = {"measured": measured, "decision": decision,
                              "planner": {**plan.planner, "measured": True}}
    if winner.name != "plan":
        update.update(_stages_and_layers(plan, graph, winner))
        update["predicted"] = winner.predicted
    return plan.model_copy(update=update)


def _stages_and_layers(plan: Plan, graph: ir.Graph, winner: Entry) -> dict[str, Any]:
    from edgedeploy.planner.document import plan_layers, plan_stage
    from edgedeploy.runtime.stages import plan_stage_io
    from edgedeploy.runtime.vocab import GPU_CLUSTER

    ios = plan_stage_io(graph, [s.start for s in winner.stages[1:]])
    period = winner.predicted.period_ms
    stages, layers = [], []
    for k, (s, io) in enumerate(zip(winner.stages, ios, strict=True)):
        gpu = s.engine if s.cluster == GPU_CLUSTER else None
        device = {"fp16": s.fp16, **({"device_id": s.device_id} if gpu else {})}
        # a lone stage's time a frame on one replica is the period times its replicas; the
        # stages of a pipeline are not priced one by one where the winner was planned
        ms = period * s.replicas if period and len(winner.stages) == 1 else None
        stage = plan_stage(k, io, s.cluster, s.cores, s.replicas, s.cpus, s.choices, gpu,
                           predicted_ms=ms, **device)
        stages.append(stage.model_copy(update={"batch": s.batch, "inline": s.inline}))
        layers += plan_layers(graph, k, s.start, s.choices)
    return {"stages": stages, "layers": layers}


# --- measuring on this host and on a twin ----------------------------------------------------
class LocalTrials:
    """Contenders as pinned pipelines on this host, started once, timed by the estimator.

    ``latency_samples`` one-in-flight frames follow each window that asks for them: the
    latency objective decides by them, the others only report them (a ResNet-50 frame alone
    takes 25 ms)."""

    def __init__(self, graph: ir.Graph, model_path: Any, seed: int = 0,
                 latency_samples: int = LATENCY_SAMPLES) -> None:
        from edgedeploy.runtime.executor import random_inputs
        from edgedeploy.runtime.layouts import to_model

        self.graph, self.model_path = graph, model_path
        self.latency_samples = latency_samples
        names = [t.name for t in graph.inputs]
        self.frames = [[f[n] for n in names] for f in  # as the application feeds them
                       (to_model(graph, random_inputs(graph, seed + k)) for k in range(4))]
        self.systems: dict[str, Any] = {}
        # one provider per batch axis: contenders started together share each segment's cut
        self._providers: dict[bool, Any] = {}
        self._lock = threading.Lock()
        #: optional contenders left unstarted (memory), raised where they are measured
        self._refused: dict[str, Exception] = {}

    def frame(self, k: int) -> list[np.ndarray]:
        return self.frames[k % len(self.frames)]

    def open(self, entries: list[Entry]) -> None:
        """Start the contenders together, as many at a time as memory allows: each start is
        mostly a worker process importing its engine and loading its model, and one after
        another they took 20 s for a ResNet-50's five contenders -- but a worker loading a
        VGG-16 holds several copies of its 0.5 GB of weights while it starts, and nine at once
        ran a 24 GB host out of memory. An optional contender (a variant) that does not fit is
        not started; it and one that cannot start fail where they are first measured, and the
        decision drops them."""
        from concurrent.futures import ThreadPoolExecutor
        from pathlib import Path

        from edgedeploy.runtime.process_memory import available_bytes

        def start(e: Entry) -> None:
            try:
                self._system(e)
            except Exception:  # raised again where it is first measured
                log.debug("contender %s did not start", e.key, exc_info=True)

        weights = Path(self.model_path).stat().st_size if Path(self.model_path).is_file() else 0
        need = {e.name: start_bytes(e, weights) for e in entries}
        pending = list(entries)
        while pending:
            budget = START_MEMORY_SHARE * (available_bytes() or float("inf"))
            if pending[0].optional and need[pending[0].name] > budget:  # not worth running out
                e = pending.pop(0)
                self._refused[e.name] = MemoryError(
                    f"{need[e.name] / 2**30:.1f} GiB to start beside the others, "
                    f"{budget / 2**30:.1f} GiB to spare")
                continue
            wave, used = [], 0.0
            while pending and (not wave or used + need[pending[0].name] <= budget):
                used += need[pending[0].name]
                wave.append(pending.pop(0))
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=len(wave)) as pool:
                list(pool.map(start, wave))
            log.info("measure: started %s together in %.1f s",
                     ", ".join(e.key for e in wave), time.monotonic() - t0)
        self._providers.clear()  # the cut segments live on in the workers that run them

    def _provider(self, dynamic: bool) -> Any:
        from edgedeploy.importers.segments import segment_provider

        with self._lock:
            if False not in self._providers:
                self._providers[False] = segment_provider(self.graph, self.model_path)
            if dynamic not in self._providers:  # cut from the same cuts as the others
                self._providers[dynamic] = segment_provider(
                    self.graph, self.model_path, dynamic_batch=True,
                    cut_by=self._providers[False])
            return self._providers[dynamic]

    def _system(self, e: Entry) -> Any:
        if e.name in self._refused:
            raise self._refused[e.name]
        if e.name not in self.systems:
            from edgedeploy import execute
            from edgedeploy.benchmarks import systems
            from edgedeploy.runtime.stages import plan_stage_io

            ios = plan_stage_io(self.graph, [s.start for s in e.stages[1:]])
            stages = [execute.stage_from_io(io, s.cpus, s.replicas, f"stage{k}",
                                            engine=s.engine, device_id=s.device_id or 0,
                                            fp16=s.fp16, batch=s.batch, inline=s.inline)
                      for k, (io, s) in enumerate(zip(ios, e.stages, strict=True))]
            choices = {layer.name: c for layer, c in zip(self.graph.layers, e.choices,
                                                         strict=True)}
            self.systems[e.name] = systems.pipelined(e.name, e.name, self.graph, stages,
                                                     choices, self.model_path,
                                                     self._provider)
        return self.systems[e.name]

    def __call__(self, e: Entry, frames: int, warmup: int, latency: bool = True
                 ) -> tuple[Window, float | None, None]:
        system = self._system(e)
        samples = self.latency_samples if latency else 0
        window = system.measure_round(frames, warmup, self.frame, samples)
        taken = system.latencies_s[-1]
        return window, float(np.median(taken) * 1e3) if len(taken) else None, None

    def hold(self, e: Entry, name: str) -> None:
        """Close every contender but ``e``, which runs on as ``name``: the Winograd trial's
        model as given is the winner's system, warm, not started and probed again (4 s of a
        ResNet-50's plan)."""
        kept = self.systems.pop(e.name, None)
        self.close()
        if kept is not None:
            self.systems[name] = kept

    def close(self) -> None:
        for system in self.systems.values():
            system.close()
        self.systems.clear()


def start_bytes(e: Entry, weights: int) -> float:
    """Memory a contender may hold while it starts: every worker (the caller, inline) holds
    its spec, the spec unpickled and its primitives' packed weights or its engine's session,
    each about two copies of the model's weights (the IR's and the segment's); a worker of
    segment engines only, the session alone."""
    from edgedeploy.runtime.engines.base import is_segment_choice

    def copies(s: ParetoStage) -> float:
        return (SEGMENT_START_COPIES if all(map(is_segment_choice, s.choices))
                else START_MEMORY_COPIES)

    return weights * (sum(s.replicas * copies(s) for s in e.stages) or START_MEMORY_COPIES)


class TwinTrials:
    """Contenders measured by a board twin's runner protocol (simulated clock and figures)."""

    def __init__(self, device: Any, python: str = "python3") -> None:
        self.device, self.python = device, python

    def __call__(self, e: Entry, frames: int, warmup: int, latency: bool = True
                 ) -> tuple[Window, float | None, float | None]:
        from edgedeploy.refine.candidate import internal_choice

        variant = {"stages": [{"name": f"stage{k}", "start": s.start, "stop": s.stop,
                               "cpus": s.cpus, "replicas": s.replicas, "cluster": s.cluster,
                               "cores": s.cores} for k, s in enumerate(e.stages)],
                   "choices": {layer.name: internal_choice(c)
                               for layer, c in zip(self.device.graph.layers, e.choices,
                                                   strict=True)}}
        out = self.device.run([self.python, "main.py", "measure", "--config-json",
                               json.dumps(variant, sort_keys=True), "--frames", str(frames),
                               "--warmup", str(warmup), "--json"])
        data = json.loads(out)
        fps = float(data["throughput_fps"])
        wall = frames / fps if fps > 0 else float("inf")
        energy = data.get("energy_mj")
        return (Window(frames, wall),  # the twin's latency is computed, not timed: free
                float(data.get("latency_ms_p50", 0.0)), None if energy is None else float(energy))

    def close(self) -> None:
        pass


__all__ = ["DEFAULT_SHORTLIST", "Arm", "Entry", "LocalTrials", "TwinTrials", "as_plan",
           "decide", "measure_result", "pairs_won", "shortlist", "split_unconfirmed"]


def measure_result(manifest: Any, alias: str, result: Any, graph: ir.Graph, *,
                   budget_s: float | None = None, progress: Callable[[str], None] | None = None,
                   access: Any = None) -> Decision:
    """Measure-to-decide for one planned target alias, rewriting ``result`` (a
    ``planner.api.PlanResult``) as the measured winner: on this host, on a twin, or on a board
    reached over SSH (``access``: the deployer's ``TransportOptions``). A target that cannot be
    measured (another board named local, an SSH board that is unreachable or serving) is
    planned from the model alone and the lockfile says why."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.planner.adapter import plan_cpus
    from edgedeploy.refine.api import resolve_kind

    plan = Plan.model_validate(result.doc)
    _, board, kind = resolve_kind(manifest, alias)
    settings = manifest.measure
    budget = budget_s if budget_s is not None else settings.budget_s
    floor = MEASURE_SHARE * budget  # what measuring keeps, whatever calibrating took
    if kind == "local" and board != "local":
        return plan.decision or Decision(measured=False, target=alias)  # as the planner says
    say = progress or (lambda _m: None)
    if kind == "ssh":  # asked first: a quick profile would run on a busy board too
        from edgedeploy.benchmarks.board_trials import why_unmeasurable

        why = why_unmeasurable(manifest, alias, access)
        if why is not None:
            return _unmeasured(plan, alias, why, say)
    if kind != "sim" and settings.quick_profile_s > 0:
        t0 = time.monotonic()
        calibrated = (_quick_profile(manifest, alias, graph, settings.quick_profile_s, progress)
                      if kind == "local" else
                      _quick_board_profile(manifest, alias, board, graph,
                                           settings.quick_profile_s, say, access))
        if calibrated is not None:
            result.doc, result.text = calibrated.doc, calibrated.text
            plan = Plan.model_validate(result.doc)
            # calibration comes out of the measuring time, but never more than its share
            budget = max(budget - (time.monotonic() - t0), floor)
    arms = _arms(manifest, alias, result, board, graph, say) if kind in ("local", "ssh") else []
    if not arms:  # the graph the plan was made for (auto may have kept the model as given)
        from edgedeploy.planner.api import planned_graph

        arms = [Arm(None, plan, planned_graph(manifest, result.doc, graph))]
    entries = []
    target = load_target(board)  # once: for this host, a detection
    cpus = plan_cpus(target)
    for arm in arms:
        real = kind != "sim"  # a twin's measurements do not run the real engines
        arm_entries = shortlist(arm.plan, settings.shortlist, graph=arm.graph if real else None,
                                factors=_model_factors(manifest, alias, target, arm.graph)
                                if real else None, cpus=cpus,
                                feed_ms=_feed_ms(target, arm.graph))
        batched = [e for e in arm_entries if any(s.batch > 1 for s in e.stages)]
        if batched and not frames_kept_apart(arm.graph, _model_of(manifest, arm.graph)):
            for e in batched:
                arm_entries.remove(e)
                say(f"dropped {e.name}: a batch of two frames is not answered as each frame "
                    "alone (an operator of the model mixes the batch)")
        for e in arm_entries:
            e.precision = arm.precision
            # what a user would run by hand is the model they have, in fp32
            e.baseline = e.baseline and arm.precision in (None, "fp32")
            entries.append(e)
    samples = LATENCY_SAMPLES if plan.objective == "latency" else REPORTED_LATENCY_SAMPLES
    trial, trial_s = None, 0.0
    if kind == "ssh":
        from functools import partial

        from edgedeploy.benchmarks.board_trials import board_opener as opener_on
        from edgedeploy.benchmarks.board_trials import board_timings

        board_opener = partial(opener_on, manifest, alias, board, latency_samples=samples,
                               access=access, say=say)
    if kind in ("local", "ssh"):  # the model with its faster 3x3 convolutions as Winograd
        from edgedeploy.benchmarks.winograd_trial import GIVEN, TRIAL_SHARE, WinogradTrial

        t0 = time.monotonic()
        fp32 = next(a for a in arms if a.precision in (None, "fp32"))
        trial = WinogradTrial.prepare(manifest, fp32.graph, entries, budget, say,
                                      timings_of=board_timings(manifest, alias, access)
                                      if kind == "ssh" else None)
        log.info("winograd: layers timed in context in %.1f s", time.monotonic() - t0)
        budget = max(budget - (time.monotonic() - t0), floor)
        if trial is not None and trial.promising:
            trial_s = TRIAL_SHARE * budget
            budget = max(budget - trial_s, floor)
    if kind == "sim":
        from edgedeploy.twins import TwinDevice, twin_target

        trials: dict[str | None, Any] = {None: TwinTrials(TwinDevice(twin_target(board), graph))}
    elif kind == "ssh":
        from edgedeploy.benchmarks.board_trials import UNMEASURABLE

        trials = {}
        try:  # one session a precision: its own model file, its contenders' segments cut from it
            for a in arms:
                trials[a.precision] = board_opener(a.plan)(
                    a.graph, _model_of(manifest, a.graph),
                    [e for e in entries if e.precision == a.precision])
        except BaseException as exc:
            for t in trials.values():
                t.close()
            if isinstance(exc, UNMEASURABLE):
                return _unmeasured(plan, alias, exc.message, say)
            raise
    else:
        # each precision's model file (the int8 one where the guard accepted it), same frames
        trials = {a.precision: LocalTrials(a.graph, _model_of(manifest, a.graph),
                                           latency_samples=samples) for a in arms}
    held = None  # the winner's system, left running for the Winograd trial
    try:
        t0 = time.monotonic()
        for precision, t in trials.items():
            if isinstance(t, LocalTrials):
                t.open([e for e in entries if e.precision == precision])
        log.info("measure: %d contender(s) started in %.1f s", len(entries),
                 time.monotonic() - t0)
        winner, decision = decide(entries, lambda e, n, w, lat: trials[e.precision](e, n, w, lat),
                                  objective=plan.objective, budget_s=budget, target=alias,
                                  simulated=kind == "sim", progress=progress)
        if trial is not None and isinstance(trials[winner.precision], LocalTrials):
            held = trials.pop(winner.precision)
            held.hold(winner, GIVEN)
    finally:
        for t in trials.values():
            t.close()
    try:
        arm = next(a for a in arms if a.precision == winner.precision)
        new = as_plan(arm.plan, arm.graph, winner, decision)
        if len(arms) > 1:
            new = new.model_copy(update={"precision": _measured_precision(new, arms, entries,
                                                                          winner)})
        if trial is not None:
            new = trial.apply(new, arm.graph, _model_of(manifest, arm.graph), winner, entries,
                              decision, plan_file=result.plan_file, budget_s=trial_s,
                              latency_samples=samples, progress=progress,
                              open_trials=board_opener(arm.plan) if kind == "ssh" else None,
                              held=held)
    finally:
        if held is not None:
            held.close()
    result.replace_plan(new)
    return new.decision or decision


def _unmeasured(plan: Plan, alias: str, why: str, say: Callable[[str], None]) -> Decision:
    """The plan as the cost model made it, byte for byte (an unmeasured lockfile is checked
    against the planner's, and the board's error text differs from one machine to the next);
    why the board was not measured goes to stderr."""
    say(f"measure: {alias} not measured: {why}; planned from the cost model (`push` measures "
        "on the board, its runner stopped)")
    return plan.decision or Decision(measured=False, target=alias)


def _quick_board_profile(manifest: Any, alias: str, board: str, graph: ir.Graph,
                         budget_s: float, say: Callable[[str], None], access: Any) -> Any:
    """:func:`_quick_profile` for a board over SSH, on the board: one never profiled gets a
    quick profile (the model's own conv shapes first, the model run whole there); one profiled
    that never ran the model whole runs it whole first (its own factors alone). Then the plan
    is made again from it; None when neither was needed, or the target names no descriptor of
    its own (``board: local`` is this host's profile)."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel.profile import profile_path
    from edgedeploy.costmodel.profiling import has_own_factors
    from edgedeploy.costmodel.segments import OwnModel, calibration_models
    from edgedeploy.deploy.probe import own_model_over_ssh, profile_over_ssh
    from edgedeploy.planner.api import plan as replan
    from edgedeploy.runtime.vocab import LOCAL, ONNXRUNTIME

    if board == LOCAL:
        return None
    ref, own = manifest.target(alias), OwnModel.of(_model_of(manifest, graph), graph)
    profile = profile_path(load_target(board))
    if profile.exists():
        # the probe runs ONNX models whole, not TFLite ones
        if own is None or own.engine != ONNXRUNTIME or has_own_factors(profile, own):
            return None
        say(f"first plan of {own.path.name} on {alias}: timing it whole on the board on every "
            "core count before measuring")
        if own_model_over_ssh(ref, alias, own, info=say, access=access) is None:
            say(f"{own.path.name} did not run whole on the board; planning from its profile")
            return None
    else:
        say(f"{alias}: the board has no profile yet: a quick {budget_s:.0f} s profile on it "
            f"before measuring ({_QUICK_PARTS}; `edgedeploy profile --target {alias}` for a "
            "fuller one)")
        start = time.monotonic()
        profile_over_ssh(ref, alias, budget_s=budget_s * QUICK_LAYER_MIN_SHARE, info=say,
                         access=access, graph=graph, own=own, total_s=budget_s,
                         calibration=calibration_models(budget_s))
        say(f"quick profile of {alias} done in {time.monotonic() - start:.0f} s")
    return replan(manifest.source, alias, write=False, manifest=manifest, graph=graph)[0]


def _feed_ms(target: Target, graph: ir.Graph) -> float:
    """The frame's hand-over from the feeding process into a worker stage on ``target``, as
    the planner prices it (``Problem.feed_ms``: the frame's bytes through the ring)."""
    from edgedeploy.costmodel.model import ring_hop_ms
    from edgedeploy.planner.problem import frame_bytes, tensors_from_graph

    return ring_hop_ms(target, frame_bytes(tensors_from_graph(graph)))


def _model_factors(manifest: Any, alias: str, target: Target, graph: ir.Graph
                   ) -> dict[str, Any]:
    """The segment factors the target's cost model prices ``graph`` by (its own, where a
    profile ran it whole): read beside the profile ``planner.api.cost_model`` reads, without
    fitting the cost model again."""
    from edgedeploy.costmodel.profile import profile_path
    from edgedeploy.costmodel.segments import for_model, load_factors

    profile = manifest.target(alias).profile or profile_path(target)
    return for_model(load_factors(profile), graph.source.get("sha256"))


@dataclass
class Arm:
    """One precision's plan and the graph it runs: ``model.precision: auto`` measures the int8
    model and the model computed in fp16 that the guard accepted against the model as given."""

    precision: str | None
    plan: Plan
    graph: ir.Graph


def _arms(manifest: Any, alias: str, result: Any, board: str, graph: ir.Graph,
          say: Callable[[str], None]) -> list[Arm]:
    """``auto``'s precisions timed side by side on the board: int8 where the guard accepted it,
    fp16 where the board's cores compute it and the guard accepts it, each beside fp32; none
    (one precision, the planned one) otherwise."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.errors import ModelError
    from edgedeploy.planner.precision import SOURCE_KEY

    if manifest.model.precision != "auto":
        return []
    arms = []
    if (graph.source.get(SOURCE_KEY) or {}).get("chosen") == "int8":
        arms.append(_arm(manifest, alias, result, board, "int8", graph))
    if manifest.model.format == "tflite" and any(
            c.fp16_arithmetic for c in load_target(board).clusters):
        try:
            arms.append(_arm(manifest, alias, result, board, "fp16", graph))
        except ModelError as exc:
            say(f"measure: no fp16 contender: {exc.message}")
    return [*arms, _arm(manifest, alias, result, board, "fp32", graph)] if arms else []


def _arm(manifest: Any, alias: str, result: Any, board: str, precision: str,
         graph: ir.Graph) -> Arm:
    """One precision's plan for the target and lockfile path of ``result``: its own plan where
    ``result`` is of that precision, else planned here (``graph``: the int8 one)."""
    from pathlib import Path

    from edgedeploy.planner.api import model_graph, plan_document

    own = graph if precision == "int8" else model_graph(manifest, precision=precision)
    doc = result.doc
    if (doc.get("precision") or {}).get("chosen") != precision:
        doc = plan_document(manifest, Path(manifest.source), alias, board, own, result.plan_file)
    return Arm(precision, Plan.model_validate(doc), own)


def _measured_precision(plan: Plan, arms: list[Arm], entries: list[Entry],
                        winner: Entry) -> Any:
    """The winner's precision record, saying what measurement found: each precision's best
    measured contender."""
    best = {}
    for e in entries:
        if e.precision and e.measured_fps > best.get(e.precision, (0.0, ""))[0]:
            best[e.precision] = (e.measured_fps, e.key)
    found = "; ".join(f"{p} best {fps:.4g} fps ({key})" for p, (fps, key) in sorted(best.items()))
    accepted = " and ".join(_guarded(a) for a in arms if a.precision not in (None, "fp32"))
    why = f"{accepted} accepted by the guard; measured on the board: {found}; chosen {winner.key}"
    return plan.precision.model_copy(update={"reason": why}) if plan.precision else None


def _guarded(arm: Arm) -> str:
    """An accepted precision with the guard's error (kept here: the lockfile keeps only the
    winner's record)."""
    error = arm.plan.precision.measured_error if arm.plan.precision else None
    return f"{arm.precision} (error {error:.3g})" if error is not None else str(arm.precision)


#: What a quick profile does, as announced.
_QUICK_PARTS = (f"the model run whole, then layer samples for what that leaves, at least "
                f"{QUICK_LAYER_MIN_SHARE:.0%} of it")


def _quick_profile(manifest: Any, alias: str, graph: ir.Graph, budget_s: float,
                   progress: Callable[[str], None] | None) -> Any:
    """Calibrate a host never profiled, or a model never run whole on it (announced), then
    re-plan with the calibrated model; None when both were already. The model's own conv
    shapes are measured first and it is run whole for its own segment factors
    (``costmodel.segments``)."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel.model import MIN_FIT_SAMPLES
    from edgedeploy.costmodel.profile import profile_path
    from edgedeploy.costmodel.profiling import has_own_factors, own_model_factors, profile_local
    from edgedeploy.costmodel.segments import OwnModel, calibration_models
    from edgedeploy.planner.api import plan as replan

    target = load_target("local")
    say = progress or (lambda _m: None)
    own = OwnModel.of(_model_of(manifest, graph), graph)
    if profile_path(target).exists():
        if own is None or has_own_factors(profile_path(target), own):
            return None
        say(f"first plan of {own.path.name} on this host: timing it whole on every core "
            "count before measuring")
        start = time.monotonic()
        try:
            own_model_factors(target, profile_path(target), own, info=say)
        except Exception as exc:  # runs in a plan, not whole here (as segment_factors says)
            say(f"{own.path.name} does not run whole here ({exc}); planning from the host's "
                "profile alone")
            return None
        say(f"{own.path.name} timed whole in {time.monotonic() - start:.0f} s")
    else:
        say(f"this host has no profile yet: a quick {budget_s:.0f} s profile before measuring "
            f"({_QUICK_PARTS}; `edgedeploy profile --target local` for a fuller one)")
        start = time.monotonic()
        done = profile_local(target, budget_s * QUICK_LAYER_MIN_SHARE, info=say,
                             calibration=calibration_models(budget_s),
                             min_fit_samples=MIN_FIT_SAMPLES, own=own, total_s=budget_s)
        # said, since a large model's whole runs can still take the profile past its budget
        say(f"quick profile done in {time.monotonic() - start:.0f} s: "
            f"{'the model and ' if own else ''}the calibration models run whole, then "
            f"{done['new_samples']} layer samples")
    return replan(manifest.source, alias, write=False, manifest=manifest, graph=graph)[0]
