"""``edgedeploy profile``: measure the target's layer timings into its profile; export/import."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgedeploy.cli import output

if TYPE_CHECKING:
    from edgedeploy.schemas.target import Target


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)


@contextlib.contextmanager
def progress_reporter(title: str) -> Iterator[object]:
    """A progress callback: a rich bar with ETA on a terminal, else a line every few seconds
    on stderr (logs go to stderr; stdout carries only the answer)."""
    quiet = output.settings.verbosity < 0
    if sys.stderr.isatty() and not quiet:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn(f"{title} [dim]{{task.fields[label]}}"), BarColumn(),
                       TextColumn("{task.fields[n]} samples"), TimeRemainingColumn(),
                       console=output.stderr(), transient=True)
        with bar:
            task = bar.add_task(title, total=1.0, label="", n=0)

            def cb(elapsed: float, budget: float, n: int, eta: float, label: str) -> None:
                total = elapsed + max(eta, 0.0)
                bar.update(task, completed=elapsed / total if total > 0 else 1.0,
                           label=label, n=n)
            yield cb
        return
    last = [0.0]

    def plain(elapsed: float, budget: float, n: int, eta: float, label: str) -> None:
        now = time.monotonic()
        if quiet or now - last[0] < 5.0:
            return
        last[0] = now
        print(f"{title}: {elapsed:.0f}s elapsed, {n} samples, ETA {max(eta, 0):.0f}s ({label})",
              file=sys.stderr, flush=True)
    yield plain


def profile(
    target: str = typer.Option("local", "--target", "-t", help="Board to profile (local)."),
    budget_s: float = typer.Option(60.0, "--budget-s", min=0.1, help="Measuring time budget."),
    shapes: str = typer.Option("designed", "--shapes",
                               help="designed (zoo + space-filling) or space (space-filling only)"),
    export: Path | None = typer.Option(None, "--export", help="Write the profile to FILE; no run."),
    import_: Path | None = typer.Option(None, "--import",
                                        help="Merge FILE into the profile; no run."),
    model: Path | None = typer.Option(None, "--model",
                                      help="Measure this model's own layer shapes first."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Measure layer shapes x primitives x core counts on the target; append to its profile.

    Profiles live in the user cache directory, keyed by the board's hardware fingerprint.
    A board twin (``sim:<board>``) is profiled like a real board into its own profile
    (fingerprint sim-<board>-v1); its budget counts simulated device seconds.

    Example: edgedeploy profile --target local --budget-s 60
    """
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import profile as prof_mod
    from edgedeploy.errors import InputError
    from edgedeploy.twins import SIM_PREFIX, is_sim, twin_target

    tgt = twin_target(target[len(SIM_PREFIX):]) if is_sim(target) else load_target(target)
    if export is not None and import_ is not None:
        raise InputError("--export and --import exclude each other")
    if export is not None:
        path = prof_mod.export_profile(tgt, export)
        _answer({"exported": str(path), "profile": str(prof_mod.profile_path(tgt))}, as_json)
        return
    if import_ is not None:
        prof = prof_mod.import_profile(tgt, import_)
        _answer({"imported": str(import_), "profile": str(prof.path),
                 "samples": len(prof.samples)}, as_json)
        return
    if is_sim(target):
        _answer(_run_twin(tgt, budget_s, shapes, model), as_json)
        return
    _answer(_run(tgt, budget_s, shapes), as_json)


def _run_twin(tgt: Target, budget_s: float, shapes: str, model: Path | None
              ) -> dict[str, object]:
    """Profile a board twin: simulated measurements, simulated budget, the twin's profile."""
    from edgedeploy.errors import InputError
    from edgedeploy.twins.profile import profile_twin_into_store

    if shapes not in ("designed", "space"):
        raise InputError(f"--shapes must be 'designed' or 'space', not {shapes!r}")
    graph = None
    if model is not None:
        from edgedeploy.importers import load_model

        graph = load_model(model)
    with progress_reporter("profiling [simulated]") as cb:
        return profile_twin_into_store(tgt, budget_s, shapes=shapes, progress=cb, graph=graph)


def _run(tgt: Target, budget_s: float, shapes: str) -> dict[str, object]:
    from edgedeploy.costmodel import profile as prof_mod
    from edgedeploy.costmodel import shapes as shapes_mod
    from edgedeploy.costmodel.evaluate import ensure_fit_sample
    from edgedeploy.costmodel.profiler import LocalMeasure
    from edgedeploy.errors import InputError

    if tgt.name != "local":
        raise InputError(f"target {tgt.name!r} cannot be profiled from here yet",
                         hint="profile --target local (SSH boards come with the deployer)")
    if shapes not in ("designed", "space"):
        raise InputError(f"--shapes must be 'designed' or 'space', not {shapes!r}")
    sample = (shapes_mod.designed_sample() if shapes == "designed"
              else [d for d in shapes_mod.space_filling(160) if not shapes_mod.is_heldout(d)])
    prof = prof_mod.open_profile(tgt)
    before = len(prof.samples)
    measure = LocalMeasure(tgt)
    start = time.monotonic()
    try:
        with progress_reporter("profiling") as cb:
            new = ensure_fit_sample(tgt, prof, budget_s, measure, cb, sample)
    finally:
        measure.close()
    factors = _segment_factors(tgt, Path(prof.path))
    return {"target": prof.target_name, "fingerprint": prof.fingerprint, "profile": str(prof.path),
            "new_samples": len(new), "samples": before + len(new),
            "shapes": len({shapes_mod.shape_key(s.descriptor) for s in new}),
            "segment_factors": factors, "elapsed_s": round(time.monotonic() - start, 2)}


def _segment_factors(tgt: Target, profile_file: Path) -> dict[str, dict[str, float]]:
    """Whole-model runs of both engines on every core count (see costmodel.segments)."""
    from edgedeploy.costmodel import CostModel
    from edgedeploy.costmodel.segments import measure_factors, save_factors

    model = CostModel.for_target(tgt)
    factors, runs = measure_factors(model, model.configs, lambda c: c.cpus(tgt),
                                    progress=output.info)
    save_factors(profile_file, factors, runs)
    return factors


def _answer(data: dict[str, object], as_json: bool) -> None:
    if as_json:
        output.emit_json(data)
        return
    for key, value in data.items():
        print(f"{key}: {value}")
