"""Measurement cache: a configuration is measured once per refinement (and, with a file, once
across refinements of the same model on the same board).

Keyed by :attr:`Candidate.key`; a deliberate re-measurement of a close call goes through
:meth:`MeasureCache.remeasure`, which merges the new run into the cached figure (median of runs).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edgedeploy.refine.candidate import Candidate
from edgedeploy.refine.measure import Backend, Measurement, parse_layer_ms


class MeasureCache:
    """Front of a back-end: ``measure`` hits the back-end only for unseen configurations."""

    def __init__(self, backend: Backend, frames: int, warmup: int,
                 path: str | Path | None = None) -> None:
        self.backend, self.frames, self.warmup = backend, frames, warmup
        self.path = Path(path) if path else None
        self.entries: dict[str, Measurement] = {}
        self.backend_calls = 0
        if self.path and self.path.exists():
            self._load()

    def __contains__(self, cand: Candidate) -> bool:
        return cand.key in self.entries

    def get(self, cand: Candidate) -> Measurement | None:
        return self.entries.get(cand.key)

    def measure(self, cand: Candidate) -> tuple[Measurement, bool]:
        """(measurement, True when it came from the back-end now)."""
        hit = self.entries.get(cand.key)
        if hit is not None:
            return hit, False
        m = self._call(cand)
        self.entries[cand.key] = m
        self._save()
        return m, True

    def remeasure(self, cand: Candidate) -> Measurement:
        """Measure again on purpose (a close call) and merge with what is cached."""
        m = self._call(cand)
        old = self.entries.get(cand.key)
        self.entries[cand.key] = old.merged(m) if old else m
        self._save()
        return self.entries[cand.key]

    def _call(self, cand: Candidate) -> Measurement:
        self.backend_calls += 1
        return self.backend.measure(cand, self.frames, self.warmup)

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
            for key, d in raw.get("entries", {}).items():
                self.entries[key] = Measurement(d["throughput_fps"], d["latency_ms"],
                                                d["stage_ms"], 0.0, d.get("power_w"),
                                                d.get("energy_mj"), d.get("simulated", False),
                                                [d["throughput_fps"]],
                                                parse_layer_ms(d.get("layer_ms")))
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}  # a broken cache is only a cache: start over

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"frames": self.frames, "entries": {k: m.to_dict()
                                                   for k, m in self.entries.items()}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, sort_keys=True)
        os.replace(tmp, self.path)
