"""The Pareto set over (throughput, latency, energy): what the device's runtime manager switches
between when conditions change (Dynamic-OFA keeps such a set of operating points)."""

from __future__ import annotations

from edgedeploy.planner.partition import Candidate

REL_TOL = 1e-9


def dominates(a: Candidate, b: Candidate) -> bool:
    """a is at least as good on all three and strictly better on one."""
    ma, mb = a.metrics, b.metrics
    ge = (ma.throughput_fps >= mb.throughput_fps * (1 - REL_TOL)
          and ma.latency_ms <= mb.latency_ms * (1 + REL_TOL)
          and ma.energy_mj <= mb.energy_mj * (1 + REL_TOL))
    gt = (ma.throughput_fps > mb.throughput_fps * (1 + REL_TOL)
          or ma.latency_ms < mb.latency_ms * (1 - REL_TOL)
          or ma.energy_mj < mb.energy_mj * (1 - REL_TOL))
    return ge and gt


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Non-dominated candidates, fastest first (ties: lower latency, then fewer stages)."""
    front = [c for c in candidates if not any(dominates(o, c) for o in candidates if o is not c)]
    unique: dict[tuple, Candidate] = {}
    for c in front:
        m = c.metrics
        key = (round(m.throughput_fps, 9), round(m.latency_ms, 9), round(m.energy_mj, 9))
        if key not in unique or len(c.stages) < len(unique[key].stages):
            unique[key] = c
    return sorted(unique.values(), key=lambda c: (-c.metrics.throughput_fps, c.metrics.latency_ms,
                                                   len(c.stages)))
