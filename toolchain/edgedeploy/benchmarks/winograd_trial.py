"""Measure-to-decide's Winograd trial: the measured winner's configuration run on the model with
its faster 3x3 convolutions rewritten (``planner.winograd``), against the model as given.

Before the shortlist is measured, each convolution shape is timed in its context
(``planner.winograd.in_context``), one frame a call, on the core counts of the contenders
that run as they were timed (the whole model in one onnxruntime stage, threaded or replicated,
one frame a call: :func:`fits_rewrite`); the trial keeps a share of the budget only where a
layer ran faster. After the decision it runs only where the faster layers, together, save the
margin a rewritten model must win by, of a frame of the contender that would run them: the
fastest such contender of a core count runs on the rewritten model, against the winner on the
model as given, in alternated rounds by the decision's own estimator, and the rewrite is kept
only where it wins as any contender must beat a baseline: the model as given is what the user
has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedeploy.runtime import ir
from edgedeploy.runtime.vocab import GPU_CLUSTER, ONNXRUNTIME
from edgedeploy.schemas.plan import Plan, WinogradChoice

#: ``timings_of(sites, {cores: cpu ids}, seconds)``: each core count's layer timings, by node:
#: the ms of each layer's context as given and rewritten (``planner.winograd.layer_timings``).
TimingsOf = Callable[[list[Any], dict[int, list[int]], float],
                     dict[int, dict[str, tuple[float, float]]]]
#: ``open_trials(graph, model file, entries)``: those entries held open where they are timed
#: (a callable ``(entry, frames, warmup, latency)`` with ``close()``).
OpenTrials = Callable[[ir.Graph, Path, list[Any]], Any]
#: The share of measure-to-decide's budget the trial keeps, where a layer ran faster in context.
TRIAL_SHARE = 0.25
#: Seconds of timing layers in context, at most, per core count: this share of the budget, and
#: never more than LAYER_BUDGET_S.
LAYER_SHARE = 0.15
LAYER_BUDGET_S = 10.0
#: The trial's name for the winner's configuration on the model as given.
GIVEN = "as_given"


def takes_rewrite(stages: list[Any], choices: list[str], graph: ir.Graph) -> bool:
    """Whether a contender runs the whole model in one onnxruntime stage on CPUs: the rewritten
    model then runs the same configuration with no cut to place again."""
    return (len(stages) == 1 and stages[0].start == 0 and stages[0].stop == len(graph.layers)
            and stages[0].cluster != GPU_CLUSTER and all(c == ONNXRUNTIME for c in choices))


def fits_rewrite(e: Any, graph: ir.Graph) -> bool:
    """Whether contender ``e`` runs as the layers were timed, so that what they saved holds
    for it: fp32, the whole model in one onnxruntime stage (:func:`takes_rewrite`), one frame
    a call. A layer's time one frame a call says little of its time in a batch, where
    onnxruntime's own convolution reuses its weights across the frames as Winograd does:
    ResNet-50's trials from its 2- and 4-frame sessions, on layers that had saved 3 % or more
    of a frame, found no gain in three of three (seen while developing)."""
    return (e.precision != "int8" and takes_rewrite(e.stages, e.choices, graph)
            and e.stages[0].batch == 1)


@dataclass
class WinogradTrial:
    """The layers' gains, by core count, for one manifest's model."""

    manifest: Any
    gains: dict[int, dict[str, float]]
    #: What rewriting each timed convolution saved in its context, ms a frame, by core count.
    saved_ms: dict[int, dict[str, float]] = field(default_factory=dict)

    def saved(self, cores: int) -> float | None:
        """The ms a frame the layers worth rewriting on ``cores`` save together, each as it
        saved in its context (None: not every one was timed)."""
        from edgedeploy.planner.winograd import chosen

        saved = self.saved_ms.get(cores, {})
        layers = chosen(self.gains[cores])
        if any(n not in saved for n in layers):
            return None
        return sum(saved[n] for n in layers)

    def saving(self, cores: int, frame_ms: float | None) -> float | None:
        """The share of a frame's ``frame_ms`` (on one replica of ``cores`` cores) that
        :meth:`saved` is (None: unknown)."""
        saved = self.saved(cores)
        return None if saved is None or not frame_ms else saved / frame_ms

    def needed_ms(self, frame_ms: float, replicas: int, beat_fps: float) -> float:
        """The ms a frame of one of ``replicas`` replicas taking ``frame_ms`` must lose for them
        to run the margin a rewritten contender must win by faster than ``beat_fps`` (the
        winner's measured rate); the margin of its own frame where it is the winner."""
        from edgedeploy.benchmarks.decide import WIN_MARGIN

        return frame_ms - (1.0 - WIN_MARGIN) * 1e3 * replicas / beat_fps

    def worth_trying(self, cores: int, frame_ms: float | None, replicas: int = 1,
                     beat_fps: float | None = None) -> bool:
        """Whether some layer ran faster on ``cores`` and, together, they save what the
        contender that would run them (``replicas`` replicas, ``frame_ms`` a frame each) needs
        to beat the winner's ``beat_fps`` by the margin a rewritten contender must win by
        (:meth:`needed_ms`; its own rate where ``beat_fps`` is None): short of that, the
        whole-model trial cannot keep the rewrite and would only spend the budget.
        ResNet-50's three layers that ran faster in context saved about 0.45 ms of a
        replica's 56 ms a frame; where its trial ran, it took about 16 s and measured the
        rewritten model 8 % slower. Eight layers that saved a few percent of the 2-thread
        session's frame, which ran 1 % slower than the winner, took the trial 9 s to lose by
        8 % (seen while developing)."""
        from edgedeploy.planner.winograd import chosen

        saved = self.saved(cores)
        if not chosen(self.gains[cores]):
            return False
        if saved is None or not frame_ms:
            return True
        beat = beat_fps or 1e3 * replicas / frame_ms
        return saved >= self.needed_ms(frame_ms, replicas, beat)

    @classmethod
    def prepare(cls, manifest: Any, graph: ir.Graph, entries: list[Any], budget_s: float,
                say: Callable[[str], None], timings_of: TimingsOf | None = None
                ) -> WinogradTrial | None:
        """Time the model's convolutions in context on the core counts of ``entries`` that
        could take the rewrite, within a share of measure-to-decide's ``budget_s``
        (``timings_of``: where they are timed, this host by default); None where the model
        has none or no contender could."""
        from edgedeploy.planner.winograd import gain, layer_timings, sites

        found = sites(manifest)
        fitting = [e for e in entries if fits_rewrite(e, graph)]
        counts = sorted({e.stages[0].cores for e in fitting})
        if not found or not counts:
            return None
        shapes = len({(s.c_in, s.c_out, s.h, s.w) for s in found})
        say(f"winograd: timing {shapes} 3x3 convolution shape(s) in context, as given and "
            f"rewritten, on {' and '.join(map(str, counts))} core(s)")
        seconds = min(LAYER_SHARE * budget_s, LAYER_BUDGET_S)
        if timings_of is None:
            timings = layer_timings(found, counts, seconds)
        else:
            cpus = {c: list(next(e for e in fitting if e.stages[0].cores == c).stages[0].cpus)
                    [:c] for c in counts}
            timings = timings_of(found, cpus, seconds)
        return cls(manifest, {c: {n: gain(*t) for n, t in ts.items()}
                              for c, ts in timings.items()},
                   {c: {n: t[0] - t[1] for n, t in ts.items()} for c, ts in timings.items()})

    @property
    def promising(self) -> bool:
        """Whether a layer ran faster as Winograd on some core count (worth keeping a share
        of the budget for: whether the layers save enough is known once the contenders that
        would run them are measured)."""
        from edgedeploy.planner.winograd import chosen

        return any(chosen(g) for g in self.gains.values())

    def apply(self, plan: Plan, graph: ir.Graph, model_path: Path, winner: Any,
              entries: list[Any], decision: Any, *, plan_file: Path, budget_s: float,
              latency_samples: int, progress: Callable[[str], None] | None = None,
              open_trials: OpenTrials | None = None, held: Any = None) -> Plan:
        """``plan`` (the measured winner's lockfile) with the trial's record; rewritten where a
        rewritten contender ran faster than the winner on the model as given.

        The rewritten contenders: for each core count where layers ran faster in context, the
        fastest measured contender of that count that runs as they were timed
        (:func:`fits_rewrite`), with those layers rewritten (the rewrite gains most on one
        thread, so the winner's own configuration need not be the one it lifts above the
        winner). The winner as given runs beside them
        as the baseline they must beat. ``open_trials(graph, model file, entries)``: where
        they run (this host's pinned pipelines by default); ``held``: the winner's own, still
        running it as :data:`GIVEN` (``decide.LocalTrials.hold``), where the model as given
        then runs, warm and probed (its caller closes it)."""
        from edgedeploy.benchmarks.decide import (
            CONFIRM_MARGIN,
            WIN_MARGIN,
            WIN_PAIR_SHARE,
            Entry,
            as_plan,
            decide,
            pairs_won,
            split_unconfirmed,
        )
        from edgedeploy.planner.api import plan_document
        from edgedeploy.planner.lock import relpath
        from edgedeploy.planner.winograd import MIN_LAYER_GAIN, chosen, planned_file, variant_graph

        say = progress or (lambda _m: None)
        if winner.precision == "int8":
            return plan
        tried = []
        short: tuple[int, Any, float | None] | None = None  # a count whose layers save too little
        for cores, gains in sorted(self.gains.items()):
            fitting = [e for e in entries if e.windows and fits_rewrite(e, graph)
                       and e.stages[0].cores == cores]
            if not (chosen(gains) and fitting):
                continue
            source = max(fitting, key=lambda e: e.measured_fps)
            frame_ms = (1e3 * source.stages[0].replicas / source.measured_fps
                        if source.measured_fps else None)
            if self.worth_trying(cores, frame_ms, source.stages[0].replicas,
                                 winner.measured_fps or None):
                tried.append((source, cores, chosen(gains)))
            else:  # layers ran faster, but too few to move the model past the winner
                short = (cores, source, frame_ms)
        if not tried:
            cores = (winner.stages[0].cores if takes_rewrite(winner.stages, winner.choices, graph)
                     else min(self.gains))
            if short is not None:
                cores, source, frame_ms = short
                layers = chosen(self.gains[cores])
                need = self.needed_ms(frame_ms or 0.0, source.stages[0].replicas,
                                      winner.measured_fps or source.measured_fps)
                why = (f"{len(layers)} convolution(s) ran {MIN_LAYER_GAIN:.2f}x faster or more "
                       f"as Winograd in context on {cores} core(s), saving "
                       f"{self.saved(cores) or 0.0:.2f} ms of "
                       f"the {frame_ms or 0.0:.1f} ms a frame takes {source.key} "
                       f"({self.saving(cores, frame_ms) or 0.0:.1%}), under the "
                       f"{need:.2f} ms it would need to run {WIN_MARGIN:.0%} faster than "
                       f"{winner.key}'s {winner.measured_fps:.4g} fps, the margin a rewritten "
                       "model must win by; not measured")
                return _record(plan, chosen=False, layers=layers,
                               layer_gains=self.gains[cores], cores=cores, reason=why)
            best = ", ".join(f"{max(g.values(), default=0.0):.2f}x on {c} core(s)"
                             for c, g in sorted(self.gains.items()))
            return _record(plan, chosen=False, layers=[], layer_gains=self.gains[cores],
                           cores=cores, reason=f"no 3x3 convolution ran {MIN_LAYER_GAIN:.2f}x "
                                               f"faster as Winograd in context (best {best})")
        given = Entry(GIVEN, list(winner.stages), list(winner.choices), winner.predicted,
                      baseline=True, probe_fps=winner.probe_fps if held is not None else None)
        models: dict[Path, tuple[ir.Graph, list[Any]]] = {model_path: (graph, [given])}
        route, rewritten, graphs = {given.name: model_path}, [], {}
        failed: list[str] = []
        for source, cores, layers in tried:
            record = {"chosen": True, "layers": layers, "layer_gains": self.gains[cores],
                      "cores": cores}
            if tuple(layers) not in graphs:  # two core counts may rewrite the same layers
                try:
                    graphs[tuple(layers)] = variant_graph(self.manifest, record)
                except Exception as exc:  # an optional rewrite never fails the plan
                    failed.append(f"{type(exc).__name__}: {exc}")
                    graphs[tuple(layers)] = None
            rewritten_graph = graphs[tuple(layers)]
            if rewritten_graph is None:
                continue
            path = planned_file(rewritten_graph)
            n = len(rewritten_graph.layers)
            stage = source.stages[0].model_copy(update={"stop": n,
                                                        "choices": [ONNXRUNTIME] * n})
            predicted = rewritten_prediction(source.predicted, source.stages[0].replicas,
                                             self.saved(cores) or 0.0)
            e = Entry(f"winograd:{source.key}", [stage], [ONNXRUNTIME] * n, predicted,
                      optional=True)
            rewritten.append((e, record, path))
            route[e.name] = path
            models.setdefault(path, (rewritten_graph, []))[1].append(e)
            say(f"winograd: {len(layers)} layer(s) ran faster in context on {cores} core(s); "
                f"measuring {source.key} on the model with them rewritten against {winner.key} "
                "as given")
        if not rewritten:
            _, cores, layers = tried[0]
            return _record(plan, chosen=False, layers=layers, layer_gains=self.gains[cores],
                           cores=cores, reason="the rewritten model could not be built "
                                               f"({failed[0]}); the model as given is kept")
        t0 = time.monotonic()
        opener = open_trials or _local_trials(latency_samples)
        trials: dict[Path, Any] = {}
        try:
            for path, (g, own) in models.items():
                trials[path] = held if held is not None and path == model_path else \
                    opener(g, path, own)
            won, _ = decide([given, *(e for e, _, _ in rewritten)],
                            lambda e, f, w, lat: trials[route[e.name]](e, f, w, lat),
                            objective=plan.objective, budget_s=budget_s,
                            target=decision.target, simulated=False, progress=progress)
        finally:
            for t in trials.values():
                if t is not held:
                    t.close()
        decision = decision.model_copy(update={"seconds": round(
            (decision.seconds or 0.0) + time.monotonic() - t0, 2)})
        ran = [r for r in rewritten if r[0].windows]
        # the rewritten contender the record reports: the one that won, else the fastest
        e, record, path = next((r for r in rewritten if r[0] is won), None) or max(
            ran or rewritten, key=lambda r: r[0].measured_fps)
        measured = {"as_given_fps": given.measured_fps,
                    "rewritten_fps": e.measured_fps if e.windows else None}
        fields = {"layers": record["layers"], "layer_gains": record["layer_gains"],
                  "cores": record["cores"], **measured}
        found = (f"{e.name} {e.measured_fps:.4g} fps against {given.measured_fps:.4g} for "
                 f"{winner.key} as given, faster in {pairs_won(e, given):.0%} of the paired "
                 "rounds")
        split = bool(e.confirm) and pairs_won(e, given) < WIN_PAIR_SHARE  # timed again alone
        if split and won is e:
            found += (f", then {e.confirmed_fps:.4g} against {given.confirmed_fps:.4g} in "
                      f"{len(e.confirm)} fresh rounds of the two alone")
        others = [f"{o.name} ({r['cores']} core(s), {len(r['layers'])} layer(s)) "
                  f"{o.measured_fps:.4g} fps" for o, r, _ in ran if o is not e]
        if others:
            found += f" (also measured: {'; '.join(others)})"
        if won is given:
            why = ("the rewritten model did not run" if not ran else
                   f"{found}; {split_unconfirmed(e, given)}; the model as given is kept"
                   if split else
                   f"{found}, but {e.confirmed_fps:.4g} against {given.confirmed_fps:.4g} in "
                   f"{len(e.confirm)} fresh rounds of the two alone: it must stay "
                   f"{CONFIRM_MARGIN:.1%} faster when timed again; the model as given is kept"
                   if e.confirm else
                   f"{found}: it must be {WIN_MARGIN:.0%} faster on average and in "
                   f"{WIN_PAIR_SHARE:.0%} of the pairs; the model as given is kept")
            kept = plan.model_copy(update={"decision": decision})
            return _record(kept, chosen=False, reason=why, **fields)
        rewritten_graph = graphs[tuple(record["layers"])]
        doc = plan_document(self.manifest, Path(self.manifest.source), decision.target,
                            plan.target["board"], rewritten_graph, plan_file)
        # the precision measurement chose (auto), which the rewritten model's plan keeps; the
        # baselines are what a user runs instead, on the model as given: the cost model has no
        # whole runs of the rewritten file, and priced VGG-16's at three times their speed
        given_baselines = {name: b.predicted for name, b in plan.baselines.items()}
        new = as_plan(Plan.model_validate(doc), rewritten_graph, e, decision)
        new = new.model_copy(update={"precision": plan.precision, "baselines": {
            name: b.model_copy(update={"predicted": given_baselines.get(name, b.predicted)})
            for name, b in new.baselines.items()}})
        return _record(new, chosen=True, model=relpath(path, plan_file.parent),
                       reason=f"{found}; rewritten", **fields)


def rewritten_prediction(predicted: Any, replicas: int, saved_ms: float) -> Any:
    """``predicted`` of a contender on the model as given, for the model with layers rewritten
    that saved ``saved_ms`` a frame in their context (one replica's): each replica's frame
    shorter by that much. The cost model prices no rewritten layer; the layers' own timings
    do (VGG-16's plan read 20 % faster than the model as given's prediction)."""
    fps = predicted.throughput_fps
    if not fps or not saved_ms:
        return predicted
    frame_ms = 1e3 * replicas / fps
    by = max(frame_ms - saved_ms, 0.1 * frame_ms) / frame_ms  # never below a tenth
    return predicted.per_frame_faster(1.0 / by, by)


def _local_trials(latency_samples: int) -> OpenTrials:
    """Contenders on this host's pinned pipelines (``decide.LocalTrials``)."""
    from edgedeploy.benchmarks.decide import LocalTrials

    def opener(graph: ir.Graph, path: Path, entries: list[Any]) -> Any:
        trials = LocalTrials(graph, path, latency_samples=latency_samples)
        trials.open(entries)
        return trials

    return opener


def _record(plan: Plan, **fields: Any) -> Plan:
    return plan.model_copy(update={"winograd": WinogradChoice(**fields)})


__all__ = ["GIVEN", "LAYER_BUDGET_S", "LAYER_SHARE", "TRIAL_SHARE", "TimingsOf", "WinogradTrial",
           "fits_rewrite", "rewritten_prediction", "takes_rewrite"]
