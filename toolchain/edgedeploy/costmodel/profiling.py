"""Profiling this host: measure the designed layer shapes into its profile, then the whole-model
segment factors (``edgedeploy profile --target local``).

Kept out of the CLI so Python callers get exactly what the command does; progress and messages
are callbacks, so the caller decides how (or whether) they are shown. Board twins are profiled by
``edgedeploy.twins.profile``: this module measures real hardware only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedeploy.errors import InputError

if TYPE_CHECKING:
    from edgedeploy.costmodel.profiler import Progress
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


def profile_local(target: Target, budget_s: float, shapes: str = "designed",
                  progress: Progress | None = None,
                  info: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure ``shapes`` on this host for ``budget_s``, append to its profile, then refresh
    the segment factors; the ``profile --json`` answer.

    ``progress`` gets (elapsed, budget, samples, eta, label) while layers are measured;
    ``info`` gets one line per whole-model calibration run.
    """
    from edgedeploy.costmodel import profile as prof_mod
    from edgedeploy.costmodel import shapes as shapes_mod
    from edgedeploy.costmodel.evaluate import ensure_fit_sample
    from edgedeploy.costmodel.profiler import LocalMeasure

    if target.name != "local":
        raise InputError(f"target {target.name!r} cannot be profiled from here yet",
                         hint="profile --target local (SSH boards come with the deployer)")
    check_shapes(shapes)
    sample = shape_sample(shapes)
    prof = prof_mod.open_profile(target)
    before = len(prof.samples)
    measure = LocalMeasure(target)
    start = time.monotonic()
    try:
        new = ensure_fit_sample(target, prof, budget_s, measure, progress, sample)
    finally:
        measure.close()
    factors = segment_factors(target, Path(prof.path), info)
    return {"target": prof.target_name, "fingerprint": prof.fingerprint, "profile": str(prof.path),
            "new_samples": len(new), "samples": before + len(new),
            "shapes": len({shapes_mod.shape_key(s.descriptor) for s in new}),
            "segment_factors": factors, "elapsed_s": round(time.monotonic() - start, 2)}


def segment_factors(target: Target, profile_file: Path,
                    info: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """Whole-model runs of both engines on every core count, saved beside the profile: they
    correct what per-layer samples miss (see costmodel.segments)."""
    from edgedeploy.costmodel import CostModel
    from edgedeploy.costmodel.segments import measure_factors, save_factors

    model = CostModel.for_target(target)
    factors, runs = measure_factors(model, model.configs, lambda c: c.cpus(target),
                                    progress=info)
    save_factors(profile_file, factors, runs)
    return factors
