"""The runtime manager: switches the runner between the bundle's Pareto plans as conditions change.

Dynamic-OFA (2022) shows a runtime manager that watches targets and resources and swaps
configurations beats static choices; here the configurations are the planner's Pareto set carried
in ``app/config.json`` ("plans"). After every serving chunk (about a second, see runner_serve.py)
the :class:`ManagerPolicy` reads

* the chunk's measured throughput and latency p99 (the status snapshot),
* per-core *foreign* load: each core's busy share from ``/proc/stat`` deltas minus the share our own
  threads used there (``/proc/<pid>/task/<tid>/stat``: CPU time and the core each thread ran on),
  so another process loading a core shows up even while our stages share it,

and :class:`RuntimeManager` decides, with hysteresis:

* **targets missed** (``min_throughput_fps``/``max_latency_ms``) for ``miss_chunks`` chunks in a
  row: switch to the plan with the best expected figures given the loaded cores (expected = the
  plan's unloaded figures x the share of its busiest core left to it; a core's load is its
  highest over the last ``recover_chunks`` chunks), if it beats what was measured by ``margin``;
* **load gone**: running a fallback plan while the home plan, under each core's highest load of
  the last ``recover_chunks`` chunks, is expected to beat the fallback's measured throughput by
  ``margin``: switch back (the window makes a core count as free only after staying free).

After a switch the first chunk (it spans the pipeline's start) is ignored and the next
``cooldown_chunks`` chunks count towards no decision. Device side: numpy-free, stdlib only.

Config (``app/config.json``; what the generator should write from the lockfile's constraints)::

    "targets": {"min_throughput_fps": 30.0, "max_latency_ms": 80.0},
    "manager": {"enabled": true, "miss_chunks": 3, "recover_chunks": 3, "cooldown_chunks": 2,
                "loaded_threshold": 0.3, "margin": 0.1, "chunk_s": 1.0,
                "min_throughput_ratio": 0.75}

``min_throughput_ratio`` (in ``targets`` or ``manager``) is a relative target: at least that
fraction of what the home plan (the bundle's active one) measured on free cores, for manifests
without absolute numbers; with both, the higher floor holds. ``manager.enabled`` defaults to on
when the bundle carries >= 2 plans and at least one target, off otherwise (the runner then
behaves exactly as without a manager).
"""

from __future__ import annotations

import os
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from edgedeploy.runtime.cpuload import CoreLoad
from edgedeploy.runtime.runner_config import BundleConfigError, RunnerConfig

_EMA = 0.5  # weight of the newest chunk in the per-plan unloaded figures


@dataclass(frozen=True)
class ManagerSettings:
    """The manager's knobs; every threshold counts chunks (about ``chunk_s`` seconds each)."""

    enabled: bool = False
    min_throughput_fps: float | None = None
    max_latency_ms: float | None = None
    #: relative target: at least this fraction of the home plan's throughput on free cores
    min_throughput_ratio: float | None = None
    miss_chunks: int = 3
    recover_chunks: int = 3
    cooldown_chunks: int = 2
    loaded_threshold: float = 0.3
    margin: float = 0.1
    chunk_s: float = 1.0

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
    if key.endswith("_chunks"):
        if int(value) < 1:
            raise ValueError(f"{key} must be >= 1")
        return int(value)
    if float(value) <= 0:
        raise ValueError(f"{key} must be > 0")
    return float(value)


@dataclass(frozen=True)
class PlanView:
    """What the manager knows of a plan before running it: its cores and the planner's figures."""

    name: str
    cores: frozenset[int]
    predicted_fps: float | None = None
    predicted_latency_ms: float | None = None


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
                            plan.predicted.get("latency_ms")))
    return out


@dataclass(frozen=True)
class Observation:
    """One chunk as measured: figures, per-core foreign load (None: not measurable this chunk)."""

    plan: str
    throughput_fps: float
    latency_ms_p99: float
    foreign: Mapping[int, float] | None = None
    stage_service_ms: tuple[float, ...] = ()


@dataclass
class _PlanHistory:
    fps: float | None = None  # EMA over chunks with the plan's cores free
    latency_ms: float | None = None
    best_fps: float | None = None  # over every chunk: a floor while no free chunk was seen
    best_latency_ms: float | None = None
    service_ms: list[float] = field(default_factory=list)


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
        """The throughput target: the absolute one and/or the ratio of the home plan's nominal."""
        s = self.settings
        wanted = [] if s.min_throughput_fps is None else [s.min_throughput_fps]
        home = self.nominal(self.home)[0] if s.min_throughput_ratio is not None else None
        if home is not None:
            wanted.append(s.min_throughput_ratio * home)  # type: ignore[operator]
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
        self.last = obs
        if obs.plan != self.current:  # a new pipeline: its first chunk includes its start-up
            self.current = obs.plan
            self.cooldown = self.settings.cooldown_chunks
            self.miss_streak = 0
            return None
        if obs.plan not in self.plans or obs.foreign is None:
            return None
        self._window.append(dict(obs.foreign))
        h = self.history[obs.plan]
        h.best_fps = max(h.best_fps or 0.0, obs.throughput_fps)
        h.best_latency_ms = min(h.best_latency_ms or float("inf"), obs.latency_ms_p99)
        if not self.loaded(obs.foreign) & self.plans[obs.plan].cores:
            self._learn(obs)
        if self.cooldown > 0:  # the new plan settles: nothing counts towards a decision yet
            self.cooldown -= 1
            return None
        missed = self.missed(obs)
        self.miss_streak = self.miss_streak + 1 if missed else 0
        recent = self.recent_load()
        full = len(self._window) >= self.settings.recover_chunks
        decision = self._recover(obs, recent) if obs.plan != self.home and full else None
        if decision is None and self.miss_streak >= self.settings.miss_chunks:
            decision = self._fallback(obs, missed, recent)
        return decision

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
        return self._decision(best, "targets_missed", why, obs, self.loaded(recent), fps, lat)

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
        return self._decision(self.home, "load_gone", why, obs, self.loaded(recent), fps, lat)

    def best(self, foreign: Mapping[int, float] | None, exclude: str | None = None,
             by: str = "fps") -> str | None:
        """Feasible plans first, then the highest expected throughput (``by="fps"``) or the
        lowest expected latency (``by="latency"``); plans with no figure for it are skipped."""
        ranked = []
        for name in sorted(self.plans):
            fps, lat = self.expected(name, foreign)
            if name == exclude or (fps if by == "fps" else lat) is None:
                continue
            score = (fps, -(lat or 0.0)) if by == "fps" else (-(lat or 0.0), fps or 0.0)
            ranked.append((self._feasible(fps, lat), *score, name))
        return max(ranked)[-1] if ranked else None

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
        """The manager's view for the status file."""
        obs = self.last
        foreign = (obs.foreign or {}) if obs else {}
        return {"enabled": True, "home": self.home, "miss_streak": self.miss_streak,
                "cooldown": self.cooldown,
                "targets": {"min_throughput_fps": self.settings.min_throughput_fps,
                            "max_latency_ms": self.settings.max_latency_ms,
                            "min_throughput_ratio": self.settings.min_throughput_ratio,
                            "effective_min_fps": None if (f := self.min_fps()) is None
                            else round(f, 3)},
                "core_foreign_load": {str(c): round(f, 3) for c, f in sorted(foreign.items())},
                "loaded_cores": sorted(self.loaded(foreign)),
                "nominal_fps": {n: None if (v := self.nominal(n)[0]) is None else round(v, 3)
                                for n in sorted(self.plans)},
                "measured_free": sorted(n for n, h in self.history.items() if h.fps is not None)}


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
                                   for s in snapshot.get("stages") or []))
        return self.manager.observe(obs)

    def report(self) -> dict[str, Any]:
        return self.manager.report()


def policy_from_config(cfg: RunnerConfig) -> ManagerPolicy | None:
    """The manager for this bundle, or None when it is disabled (see the module doc)."""
    settings = settings_from_config(cfg.raw)
    return ManagerPolicy(cfg, settings) if settings.enabled else None
