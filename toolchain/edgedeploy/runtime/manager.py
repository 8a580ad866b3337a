"""The runtime manager: switches the runner between the bundle's Pareto plans as conditions change.

Dynamic-OFA (2022) shows a runtime manager that watches targets and resources and swaps
configurations beats static choices; here the configurations are the planner's Pareto set carried
in ``app/config.json`` ("plans"). After every serving chunk (about a second, see runner_serve.py)
the :class:`ManagerPolicy` reads

* the chunk's measured throughput and latency p99 (the status snapshot),
* per-core *foreign* load: each core's busy share from ``/proc/stat`` deltas minus the share our own
  threads used there (``/proc/<pid>/task/<tid>/stat``: CPU time and the core each thread ran on),
  so another process loading a core shows up even while our stages share it,

and :class:`RuntimeManager` (pure: measured chunks in, switch decisions out) decides, with
hysteresis:

* **targets missed** (``min_throughput_fps``/``max_latency_ms``) for ``miss_chunks`` chunks in a
  row: switch to the plan with the best expected figures given the loaded cores (expected = the
  plan's unloaded figures x the share of its busiest core left to it; a core's load is its
  highest over the last ``recover_chunks`` chunks), if it beats what was measured by ``margin``;
* **load gone**: running a fallback plan while the home plan, under each core's highest load of
  the last ``recover_chunks`` chunks, is expected to beat the fallback's measured throughput by
  ``margin``: switch back (the window makes a core count as free only after staying free).

After a switch the first chunk (it spans the pipeline's start) is ignored and the next
``cooldown_chunks`` chunks count towards no decision. Device side: numpy-free, stdlib only.

Expectations come partly from the planner's predictions, which can be optimistic; a board once
flapped 24 times in 152 s between two byte-identical plans chasing a predicted rate. So:

* **identical plans** (same stages and choices under two names, :func:`plan_key`) are never
  candidates for each other: a switch between them cannot change anything;
* **the relative target is learned**: ``min_throughput_ratio`` guards that share of the median
  throughput the home plan *measured* over its first ``learn_chunks`` chunks (after its start-up
  chunk, whatever the load), never of a prediction, so it cannot be missed for good by a plan
  doing what it did at start; until learned there is no relative target;
* **switches are judged**: the ``miss_chunks`` chunks after a switch's cooldown are compared
  with the old plan's last ``miss_chunks`` (throughput, or latency p99 for a latency switch). If
  the new plan is not better by ``margin / 2`` under the same load (the same set of loaded
  cores), the manager switches back once (``revert``; a revert is not judged) and holds that
  switch (plan pair + loaded cores) for ``backoff_s``, doubled at each failure of it again;
  a changed load makes the verdict inconclusive (no revert, no hold);
* **at most ``max_switches_per_min``** switches in any 60 s.

Every switch, suppressed switch (``identical``, ``held``, ``cap``), verdict and learned target goes
into the ``timeline`` of :meth:`RuntimeManager.report` (status ``manager.timeline``, wall-clock
``t``); the switches themselves also reach the status ``switches`` timeline through the decision's
``trigger`` and ``reason``. A suppressed switch the manager keeps wanting is one entry with a
``count``.

Config (``app/config.json``; what the generator should write from the lockfile's constraints)::

    "targets": {"min_throughput_fps": 30.0, "max_latency_ms": 80.0},
    "manager": {"enabled": true, "miss_chunks": 3, "recover_chunks": 3, "cooldown_chunks": 2,
                "loaded_threshold": 0.3, "margin": 0.1, "chunk_s": 1.0,
                "min_throughput_ratio": 0.75, "learn_chunks": 3, "backoff_s": 30.0,
                "max_switches_per_min": 4}

``min_throughput_ratio`` (in ``targets`` or ``manager``) is a relative target (see above), for
manifests without absolute numbers; with both, the higher floor holds. ``manager.enabled``
defaults to on when the bundle carries >= 2 plans and at least one target, off otherwise (the
runner then behaves exactly as without a manager).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from edgedeploy.runtime.cpuload import CoreLoad
from edgedeploy.runtime.runner_config import BundleConfigError, PlanConfig, RunnerConfig

_EMA = 0.5  # weight of the newest chunk in the per-plan unloaded figures
_MINUTE_S = 60.0
_TIMELINE = 50  # timeline entries kept for the status file (oldest dropped)
_MAX_DOUBLINGS = 5  # a switch that keeps failing is held at most backoff_s x 2**5

#: What a plan runs (see :func:`plan_key`); None: unknown, the plan is only equal to itself.
PlanKey = tuple[Any, ...]
Cores = tuple[int, ...]


@dataclass(frozen=True)
class ManagerSettings:
    """The manager's knobs; every threshold counts chunks (about ``chunk_s`` seconds each)."""

    enabled: bool = False
    min_throughput_fps: float | None = None
    max_latency_ms: float | None = None
    #: relative target: at least this fraction of the home plan's learned (measured) throughput
    min_throughput_ratio: float | None = None
    miss_chunks: int = 3
    recover_chunks: int = 3
    cooldown_chunks: int = 2
    loaded_threshold: float = 0.3
    margin: float = 0.1
    chunk_s: float = 1.0
    #: home-plan chunks whose median throughput the relative target is a share of
    learn_chunks: int = 3
    #: how long a switch that did not help is not tried again (doubles at each repeat failure)
    backoff_s: float = 30.0
    max_switches_per_min: int = 4

    @property
    def has_targets(self) -> bool:
        return (self.min_throughput_fps is not None or self.max_latency_ms is not None
                or self.min_throughput_ratio is not None)


def settings_from_config(raw: Mapping[str, Any]) -> ManagerSettings:
    """Read ``targets`` and ``manager`` from config.json (``manager`` may also be a bool)."""
    block = raw.get("manager")
    block = {"enabled": block} if isinstance(block, bool) else dict(block or {})
    targets = {**dict(raw.get("targets") or {}), **dict(block.pop("targets", None) or {})}
    known = {f.name for f in fields(ManagerSettings)}
    unknown = sorted(set(block) - known)
    if unknown:
        raise BundleConfigError(f"config.json manager: unknown keys {unknown}",
                                hint=f"known: {', '.join(sorted(known))}")
    try:
        values: dict[str, Any] = {k: _number(k, v) for k, v in block.items() if k != "enabled"}
        for key in ("min_throughput_fps", "max_latency_ms", "min_throughput_ratio"):
            if targets.get(key) is not None:
                values[key] = float(targets[key])
    except (TypeError, ValueError) as exc:
        raise BundleConfigError(f"config.json manager/targets: {exc}") from None
    draft = ManagerSettings(**values)
    default_on = len(raw.get("plans") or {}) >= 2 and draft.has_targets
    return ManagerSettings(**{**values, "enabled": bool(block.get("enabled", default_on))})


def _number(key: str, value: Any) -> float | int:
    if key.endswith(("_chunks", "_per_min")):
        if int(value) < 1:
            raise ValueError(f"{key} must be >= 1")
        return int(value)
    if float(value) <= 0:
        raise ValueError(f"{key} must be > 0")
    return float(value)


def plan_key(plan: PlanConfig) -> PlanKey:
    """What a plan runs: its stages (every field but the name) and its per-layer choices. Two
    plans with one key are one pipeline under two names; switching between them cannot help."""
    return (tuple(replace(s, name="") for s in plan.stages), tuple(sorted(plan.choices.items())))


@dataclass(frozen=True)
class PlanView:
    """What the manager knows of a plan before running it: its cores and the planner's figures."""

    name: str
    cores: frozenset[int]
    predicted_fps: float | None = None
    predicted_latency_ms: float | None = None
    #: :func:`plan_key` of the plan; None: only equal to itself
    key: PlanKey | None = None


def plan_views(cfg: RunnerConfig, allowed: Iterable[int]) -> list[PlanView]:
    """Every plan that can run here; a stage without cpus runs on every allowed core."""
    allowed = frozenset(allowed)
    out = []
    for name in sorted(cfg.plans):
        plan = cfg.plans[name]
        cores = frozenset(c for st in plan.stages for c in (st.cpus or allowed))
        if not cores <= allowed:
            continue  # the pipeline would refuse these cpus: never a candidate
        out.append(PlanView(name, cores, plan.predicted.get("throughput_fps"),
                            plan.predicted.get("latency_ms"), plan_key(plan)))
    return out


@dataclass(frozen=True)
class Observation:
    """One chunk as measured: figures, per-core foreign load (None: not measurable this chunk),
    and ``t``, monotonic seconds at its end (None: the previous chunk's plus ``chunk_s``)."""

    plan: str
    throughput_fps: float
    latency_ms_p99: float
    foreign: Mapping[int, float] | None = None
    stage_service_ms: tuple[float, ...] = ()
    t: float | None = None


@dataclass
class _PlanHistory:
    fps: float | None = None  # EMA over chunks with the plan's cores free
    latency_ms: float | None = None
    best_fps: float | None = None  # over every chunk: a floor while no free chunk was seen
    best_latency_ms: float | None = None
    service_ms: list[float] = field(default_factory=list)


@dataclass
class _Trial:
    """A switch the manager made, waiting for the new plan's measured verdict."""

    src: str
    dst: str
    load: Cores  # the loaded cores when it switched: the verdict needs the same load
    by: str  # "fps" or "latency": the figure the switch was made for
    before_fps: float
    before_latency_ms: float
    started: bool = False  # the runner did start dst


@dataclass
class _Hold:
    strikes: int  # failures of this switch under this load
    until: float


def _cores(cores: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cores)) or "none"


class RuntimeManager:
    """The decision logic, free of I/O so it can be driven by synthetic chunk sequences."""

    def __init__(self, settings: ManagerSettings, plans: Iterable[PlanView], home: str) -> None:
        self.settings = settings
        self.plans = {p.name: p for p in plans}
        if home not in self.plans:
            raise BundleConfigError(f"the active plan {home!r} cannot run on this device's cores")
        self.home = home
        self.current: str | None = None
        self.cooldown = 0
        self.miss_streak = 0
        self.history = {name: _PlanHistory() for name in self.plans}
        self.last: Observation | None = None
        self._window: deque[Mapping[int, float]] = deque(maxlen=settings.recover_chunks)
        self.clock = 0.0
        #: median throughput of the home plan's first ``learn_chunks`` chunks
        self.learned_fps: float | None = None
        self._learning: list[float] = []
        #: the current plan's counted chunks: (fps, latency p99, loaded cores)
        self._recent: deque[tuple[float, float, Cores]] = deque(maxlen=settings.miss_chunks)
        self._settled = 0
        self._trial: _Trial | None = None
        self._holds: dict[tuple[str, str, Cores], _Hold] = {}
        self._switch_times: deque[float] = deque()
        self.timeline: deque[dict[str, Any]] = deque(maxlen=_TIMELINE)

    def same(self, a: str, b: str) -> bool:
        """Whether two plans run the same stages and choices (a switch between them is moot)."""
        if a == b:
            return True
        key = self.plans[a].key if a in self.plans else None
        return key is not None and b in self.plans and key == self.plans[b].key

    # -- what each plan is expected to do -------------------------------------------------------
    def loaded(self, foreign: Mapping[int, float] | None) -> set[int]:
        return {c for c, f in (foreign or {}).items() if f >= self.settings.loaded_threshold}

    def recent_load(self) -> dict[int, float]:
        """Each core's highest foreign load over the last ``recover_chunks`` chunks: a core
        counts as loaded at once and as free only after staying free that long (hysteresis)."""
        out: dict[int, float] = {}
        for sample in self._window:
            for c, f in sample.items():
                out[c] = max(out.get(c, 0.0), f)
        return out

    def _calibration(self, key: str) -> float:
        """Measured (free cores) over predicted, pooled over plans with both: the cost model is
        a hint, and its error is mostly shared by the plans of one device."""
        ratios = []
        for name, h in self.history.items():
            got = h.fps if key == "fps" else h.latency_ms
            pred = (self.plans[name].predicted_fps if key == "fps"
                    else self.plans[name].predicted_latency_ms)
            if got and pred:
                ratios.append(got / pred)
        return statistics.median(ratios) if ratios else 1.0

    def nominal(self, name: str) -> tuple[float | None, float | None]:
        """(fps, latency ms) of a plan on free cores: measured when known, else the calibrated
        prediction, bounded by the best figures seen under load (a plan did at least that)."""
        h, view = self.history[name], self.plans[name]
        fps, lat = h.fps, h.latency_ms
        if fps is None:
            pred = view.predicted_fps * self._calibration("fps") if view.predicted_fps else None
            fps = max((v for v in (pred, h.best_fps) if v is not None), default=None)
        if lat is None:
            pred = (view.predicted_latency_ms * self._calibration("lat")
                    if view.predicted_latency_ms else None)
            lat = min((v for v in (pred, h.best_latency_ms) if v is not None), default=None)
        return fps, lat

    def expected(self, name: str, foreign: Mapping[int, float] | None
                 ) -> tuple[float | None, float | None]:
        """Nominal figures scaled by the share of its most loaded core that the plan would get."""
        fps, lat = self.nominal(name)
        share = max(0.05, min((1.0 - (foreign or {}).get(c, 0.0)
                               for c in self.plans[name].cores), default=1.0))
        return (None if fps is None else fps * share, None if lat is None else lat / share)

    def min_fps(self) -> float | None:
        """The throughput target: the absolute one and/or the ratio of the home plan's learned
        (measured) throughput; never of a prediction, which may be out of reach for good."""
        s = self.settings
        wanted = [] if s.min_throughput_fps is None else [s.min_throughput_fps]
        if s.min_throughput_ratio is not None and self.learned_fps is not None:
            wanted.append(s.min_throughput_ratio * self.learned_fps)
        return max(wanted) if wanted else None

    def _feasible(self, fps: float | None, lat: float | None) -> bool:
        s, floor = self.settings, self.min_fps()
        return ((floor is None or (fps or 0.0) >= floor)
                and (s.max_latency_ms is None or (lat is not None and lat <= s.max_latency_ms)))

    def missed(self, obs: Observation) -> list[str]:
        s, out, floor = self.settings, [], self.min_fps()
        if floor is not None and obs.throughput_fps < floor:
            out.append(f"throughput {obs.throughput_fps:.1f} < {floor:.4g} fps")
        if s.max_latency_ms is not None and obs.latency_ms_p99 > s.max_latency_ms:
            out.append(f"latency p99 {obs.latency_ms_p99:.1f} > {s.max_latency_ms:g} ms")
        return out

    # -- one chunk --------------------------------------------------------------------------------
    def observe(self, obs: Observation) -> dict[str, Any] | None:
        """Take one chunk's measurements; return a switch decision or None to stay."""
        s = self.settings
        self.clock = obs.t if obs.t is not None else self.clock + s.chunk_s
        self.last = obs
        if obs.plan != self.current:  # a new pipeline: its first chunk includes its start-up
            self._started(obs.plan)
            return None
        if self._trial is not None and not self._trial.started:
            self._trial = None  # the runner did not switch (a request file won): nothing to judge
        if obs.plan not in self.plans or obs.foreign is None:
            return None
        self._window.append(dict(obs.foreign))
        h = self.history[obs.plan]
        h.best_fps = max(h.best_fps or 0.0, obs.throughput_fps)
        h.best_latency_ms = min(h.best_latency_ms or float("inf"), obs.latency_ms_p99)
        if not self.loaded(obs.foreign) & self.plans[obs.plan].cores:
            self._learn(obs)
        self._learn_target(obs)
        if self.cooldown > 0:  # the new plan settles: nothing counts towards a decision yet
            self.cooldown -= 1
            return None
        self._recent.append((obs.throughput_fps, obs.latency_ms_p99,
                             tuple(sorted(self.loaded(obs.foreign)))))
        self._settled += 1
        missed = self.missed(obs)
        self.miss_streak = self.miss_streak + 1 if missed else 0
        recent = self.recent_load()
        if self._trial is not None:
            if len(self._recent) < s.miss_chunks:
                return None  # still measuring the plan it switched to
            failed, revert = self._judge(self._trial, obs, recent)
            if failed:
                return revert
        # the load window spans plans (load is the machine's), but a plan is judged on chunks
        # after its cooldown only: as many as the window holds
        full = len(self._window) >= s.recover_chunks and self._settled >= s.recover_chunks
        away = not self.same(obs.plan, self.home)
        decision = self._recover(obs, recent) if away and full else None
        if decision is None and self.miss_streak >= s.miss_chunks:
            decision = self._fallback(obs, missed, recent)
        return decision

    def _started(self, plan: str) -> None:
        self.current = plan
        self.cooldown = self.settings.cooldown_chunks
        self.miss_streak = 0
        self._recent.clear()
        self._settled = 0  # chunks counted since this plan's cooldown
        trial = self._trial
        if trial is not None and plan == trial.dst and not trial.started:
            trial.started = True
        else:
            self._trial = None  # not the plan it switched to (a request file): nothing to judge

    def _learn(self, obs: Observation) -> None:
        h = self.history[obs.plan]
        h.fps = obs.throughput_fps if h.fps is None else (
            _EMA * obs.throughput_fps + (1 - _EMA) * h.fps)
        h.latency_ms = obs.latency_ms_p99 if h.latency_ms is None else (
            _EMA * obs.latency_ms_p99 + (1 - _EMA) * h.latency_ms)
        if len(h.service_ms) != len(obs.stage_service_ms):
            h.service_ms = list(obs.stage_service_ms)
        else:
            h.service_ms = [min(a, b) for a, b in zip(h.service_ms, obs.stage_service_ms,
                                                       strict=True)]

    def _learn_target(self, obs: Observation) -> None:
        """The home plan's own rate, whatever the load: a target it met at start stays in reach."""
        if self.learned_fps is not None or obs.plan != self.home:
            return
        self._learning.append(obs.throughput_fps)
        if len(self._learning) < self.settings.learn_chunks:
            return
        self.learned_fps = statistics.median(self._learning)
        ratio = self.settings.min_throughput_ratio
        if ratio is not None:
            self._event("target", self.home, None, f"{self.home} measured a median "
                        f"{self.learned_fps:.1f} fps over its first {len(self._learning)} "
                        f"chunks: guarding {ratio:g}x = {ratio * self.learned_fps:.1f} fps")

    def _judge(self, trial: _Trial, obs: Observation, recent: Mapping[int, float]
               ) -> tuple[bool, dict[str, Any] | None]:
        """The verdict on the last switch: (it failed, the revert decision or None)."""
        self._trial = None
        fps = statistics.median(r[0] for r in self._recent)
        lat = statistics.median(r[1] for r in self._recent)
        seen = tuple(sorted({c for r in self._recent for c in r[2]}))
        half = self.settings.margin / 2
        helped = (fps > trial.before_fps * (1 + half) if trial.by == "fps"
                  else lat < trial.before_latency_ms * (1 - half))
        figures = (f"{trial.dst} {fps:.1f} fps, p99 {lat:.1f} ms vs {trial.src} "
                   f"{trial.before_fps:.1f} fps, p99 {trial.before_latency_ms:.1f} ms before")
        if seen != trial.load:
            self._event("verdict", trial.src, trial.dst, f"inconclusive: loaded cores "
                        f"{_cores(trial.load)} -> {_cores(seen)}; {figures}", helped=None)
            return False, None
        key = (trial.src, trial.dst, trial.load)
        if helped:
            self._holds.pop(key, None)
            self._event("verdict", trial.src, trial.dst, f"helped: {figures}", helped=True)
            return False, None
        strikes = self._holds[key].strikes + 1 if key in self._holds else 1
        span = self.settings.backoff_s * 2 ** min(strikes - 1, _MAX_DOUBLINGS)
        self._holds[key] = _Hold(strikes, self.clock + span)
        why = (f"{trial.src} -> {trial.dst} did not help (not better by {half:.0%} on "
               f"{trial.by}) with loaded cores {_cores(trial.load)}: {figures}; held {span:g} s "
               f"(failure {strikes})")
        self._event("verdict", trial.src, trial.dst, why, helped=False)
        return True, self._propose(trial.src, "revert", f"back to {trial.src}: {why}", obs,
                                   recent, trial.before_fps, trial.before_latency_ms, trial.by,
                                   revert=True)

    def _fallback(self, obs: Observation, missed: list[str], recent: Mapping[int, float]
                  ) -> dict[str, Any] | None:
        """The best plan given the loaded cores, if it is expected to beat this chunk's figures."""
        wants_fps = any(m.startswith("throughput") for m in missed)
        best = self.best(recent, exclude=obs.plan, by="fps" if wants_fps else "latency")
        if best is None:
            return None
        fps, lat = self.expected(best, recent)
        better_fps = fps is not None and fps > obs.throughput_fps * (1 + self.settings.margin)
        better_lat = lat is not None and lat < obs.latency_ms_p99 * (1 - self.settings.margin)
        if not (better_fps if wants_fps else better_lat):
            return None
        why = f"targets missed for {self.miss_streak} chunks: {'; '.join(missed)}"
        return self._propose(best, "targets_missed", why, obs, recent, fps, lat,
                             "fps" if wants_fps else "latency")

    def _recover(self, obs: Observation, recent: Mapping[int, float]) -> dict[str, Any] | None:
        """Back to the home plan once, under the load of the last ``recover_chunks`` chunks, it
        is expected to beat what the fallback measures now."""
        fps, lat = self.expected(self.home, recent)
        if fps is None or fps <= obs.throughput_fps * (1 + self.settings.margin):
            return None
        cores = self.plans[self.home].cores
        busy = self.loaded(recent) & cores
        what = "load gone from" if not busy else "load eased on"
        why = (f"{what} cores {','.join(str(c) for c in sorted(cores))} over the last "
               f"{len(self._window)} chunks: {self.home} expected {fps:.1f} fps > "
               f"{obs.throughput_fps:.1f} measured")
        return self._propose(self.home, "load_gone", why, obs, recent, fps, lat, "fps")

    def best(self, foreign: Mapping[int, float] | None, exclude: str | None = None,
             by: str = "fps") -> str | None:
        """Feasible plans first, then the highest expected throughput (``by="fps"``) or the
        lowest expected latency (``by="latency"``); plans with no figure for it are skipped, and
        so are ``exclude`` and every plan identical to it."""
        ranked = []
        for name in sorted(self.plans):
            if exclude is not None and self.same(name, exclude):
                continue
            fps, lat = self.expected(name, foreign)
            if (fps if by == "fps" else lat) is None:
                continue
            score = (fps, -(lat or 0.0)) if by == "fps" else (-(lat or 0.0), fps or 0.0)
            ranked.append((self._feasible(fps, lat), *score, name))
        return max(ranked)[-1] if ranked else None

    # -- the gate every switch passes -----------------------------------------------------------
    def _propose(self, to: str, trigger: str, why: str, obs: Observation,
                 recent: Mapping[int, float], fps: float | None, lat: float | None, by: str,
                 revert: bool = False) -> dict[str, Any] | None:
        """The switch decision, unless suppressed (recorded either way); a switch that is not a
        revert is judged once the new plan has run (:meth:`_judge`)."""
        load = tuple(sorted(self.loaded(recent)))
        blocked = self._blocked(obs.plan, to, load, revert)
        if blocked is not None:
            self._suppress(obs.plan, to, trigger, *blocked, why)
            return None
        decision = self._decision(to, trigger, why, obs, set(load), fps, lat)
        self._switch_times.append(self.clock)
        self._event("switch", obs.plan, to, decision["reason"], trigger=trigger)
        if not revert:
            before = list(self._recent) or [(obs.throughput_fps, obs.latency_ms_p99, ())]
            self._trial = _Trial(obs.plan, to, load, by, statistics.median(r[0] for r in before),
                                 statistics.median(r[1] for r in before))
        return decision

    def _blocked(self, src: str, to: str, load: Cores, revert: bool) -> tuple[str, str] | None:
        """(kind, why) a switch must not happen now, or None."""
        if self.same(src, to):
            return "identical", f"{to} runs the same stages and choices as {src}"
        hold = self._holds.get((src, to, load))
        if not revert and hold is not None and self.clock < hold.until:
            return "held", (f"{src} -> {to} did not help with loaded cores {_cores(load)} "
                            f"({hold.strikes}x): held {hold.until - self.clock:.0f} s more")
        while self._switch_times and self.clock - self._switch_times[0] >= _MINUTE_S:
            self._switch_times.popleft()
        cap = self.settings.max_switches_per_min
        if len(self._switch_times) >= cap:
            return "cap", f"{len(self._switch_times)} switches in the last minute (cap {cap})"
        return None

    def _suppress(self, src: str, to: str, trigger: str, kind: str, block: str, why: str
                  ) -> None:
        last = self.timeline[-1] if self.timeline else None
        if (last is not None and last["kind"] == "suppressed" and last["from"] == src
                and last["to"] == to and last["suppressed"] == kind):
            last.update(count=last["count"] + 1, t_last=round(self.clock, 3))
            return
        self._event("suppressed", src, to, f"{block}; wanted: {why}", trigger=trigger,
                    suppressed=kind, count=1)

    def _event(self, kind: str, src: str | None, to: str | None, reason: str,
               **extra: Any) -> None:
        self.timeline.append({"t": round(self.clock, 3), "kind": kind, "from": src, "to": to,
                              "reason": reason, **extra})

    def _decision(self, to: str, trigger: str, why: str, obs: Observation, loaded: set[int],
                  fps: float | None, lat: float | None) -> dict[str, Any]:
        foreign = {str(c): round(f, 3) for c, f in sorted((obs.foreign or {}).items())}
        if loaded:
            why += f"; loaded cores {','.join(str(c) for c in sorted(loaded))}"
        measured: dict[str, Any] = {"throughput_fps": round(obs.throughput_fps, 3),
                                    "latency_ms_p99": round(obs.latency_ms_p99, 3),
                                    "core_foreign_load": foreign}
        base = self.history[obs.plan].service_ms
        if base and len(base) == len(obs.stage_service_ms):
            measured["stage_service_inflation"] = [
                round(s / b, 3) if b > 0 else None for s, b in zip(obs.stage_service_ms, base,
                                                                   strict=True)]
        return {"to": to, "trigger": trigger, "reason": why, "measured": measured,
                "expected": {"throughput_fps": None if fps is None else round(fps, 3),
                             "latency_ms": None if lat is None else round(lat, 3)}}

    def report(self) -> dict[str, Any]:
        """The manager's view for the status file (``t`` in the timeline: the manager's clock)."""
        obs = self.last
        foreign = (obs.foreign or {}) if obs else {}
        recent_switches = sum(1 for t in self._switch_times if self.clock - t < _MINUTE_S)
        return {"enabled": True, "home": self.home, "miss_streak": self.miss_streak,
                "cooldown": self.cooldown,
                "targets": {"min_throughput_fps": self.settings.min_throughput_fps,
                            "max_latency_ms": self.settings.max_latency_ms,
                            "min_throughput_ratio": self.settings.min_throughput_ratio,
                            "effective_min_fps": None if (f := self.min_fps()) is None
                            else round(f, 3)},
                "learned_fps": None if self.learned_fps is None else round(self.learned_fps, 3),
                "core_foreign_load": {str(c): round(f, 3) for c, f in sorted(foreign.items())},
                "loaded_cores": sorted(self.loaded(foreign)),
                "nominal_fps": {n: None if (v := self.nominal(n)[0]) is None else round(v, 3)
                                for n in sorted(self.plans)},
                "measured_free": sorted(n for n, h in self.history.items() if h.fps is not None),
                "switches_last_min": recent_switches,
                "held": [{"from": a, "to": b, "loaded_cores": list(load),
                          "failures": h.strikes, "left_s": round(h.until - self.clock, 1)}
                         for (a, b, load), h in sorted(self._holds.items())
                         if h.until > self.clock],
                "timeline": [dict(e) for e in self.timeline]}


class ManagerPolicy:
    """The :data:`runner_serve.SwitchPolicy` the runner uses when the manager is enabled."""

    def __init__(self, cfg: RunnerConfig, settings: ManagerSettings,
                 allowed: Iterable[int] | None = None, load: CoreLoad | None = None) -> None:
        if allowed is None:
            from edgedeploy.runtime.affinity import available_cpus

            allowed = available_cpus()
        self.settings = settings
        self.chunk_s = settings.chunk_s
        self.manager = RuntimeManager(settings, plan_views(cfg, allowed), cfg.active)
        self.load = load or CoreLoad()
        self._pids: tuple[int, ...] = ()

    def __call__(self, snapshot: Mapping[str, Any], cfg: RunnerConfig) -> dict[str, Any] | None:
        pids = tuple(sorted({os.getpid(), *(int(r["pid"]) for r in snapshot.get("replicas") or []
                                            if r.get("pid"))}))
        if pids != self._pids:  # threads of a closed pipeline vanish: restart the deltas
            self.load.reset()
            self._pids = pids
        foreign = self.load.sample(pids)
        obs = Observation(
            plan=str(snapshot.get("active")),
            throughput_fps=float(snapshot.get("throughput_fps") or 0.0),
            latency_ms_p99=float(snapshot.get("latency_ms_p99") or 0.0), foreign=foreign,
            stage_service_ms=tuple(float(s.get("service_ms_mean") or 0.0)
                                   for s in snapshot.get("stages") or []),
            t=time.monotonic())
        return self.manager.observe(obs)

    def report(self) -> dict[str, Any]:
        """The manager's view, its timeline on the wall clock like the status ``switches``."""
        out = self.manager.report()
        offset = time.time() - time.monotonic()
        for event in out["timeline"]:
            for key in ("t", "t_last"):
                if key in event:
                    event[key] = round(event[key] + offset, 3)
        return out


def policy_from_config(cfg: RunnerConfig) -> ManagerPolicy | None:
    """The manager for this bundle, or None when it is disabled (see the module doc)."""
    settings = settings_from_config(cfg.raw)
    return ManagerPolicy(cfg, settings) if settings.enabled else None
