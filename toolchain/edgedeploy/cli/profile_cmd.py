"""``edgedeploy profile``: measure the target's layer timings into its profile; export/import."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from edgedeploy.cli import complete, output

#: What a measuring verb reports: (elapsed s, budget s, samples, eta s, label).
ProgressFn = Callable[[float, float, int, float, str], None]

def register(app: typer.Typer) -> None:
    app.command("profile")(profile)


@contextlib.contextmanager
def progress_reporter(title: str) -> Iterator[ProgressFn]:
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
    target: str = typer.Option("local", "--target", "-t", autocompletion=complete.targets,
                               help="Board to profile: local, sim:<board>, or a manifest alias "
                                    "(an SSH target is measured on the board)."),
    manifest: Path | None = typer.Option(None, "--manifest", "-m",
                                         help="Manifest whose target alias --target names "
                                              "(default: ./edgedeploy.yaml when present)."),
    accept_new: bool = typer.Option(False, "--accept-new-host-keys",
                                    help="Trust and record a board's unknown SSH host key."),
    budget_s: float = typer.Option(60.0, "--budget-s", min=0.1, help="Measuring time budget."),
    shapes: str = typer.Option("designed", "--shapes",
                               help="designed (zoo + space-filling) or space (space-filling only)"),
    export: Path | None = typer.Option(None, "--export", help="Write the profile to FILE; no run."),
    import_: Path | None = typer.Option(None, "--import",
                                        help="Merge FILE into the profile; no run."),
    model: Path | None = typer.Option(
        None, "--model", help="Measure this model's own layer shapes first; on a real board, "
                              "also run it whole (ONNX) for its own segment factors."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Measure layer shapes x primitives x core counts on the target; append to its profile.

    Profiles live in the user cache directory, keyed by the board's hardware fingerprint.
    A board twin (``sim:<board>``) is profiled like a real board into its own profile
    (fingerprint sim-<board>-v1); its budget counts simulated device seconds. A manifest's SSH
    target is measured on the board by the runtime's probe (with the target's python), into
    the profile of its board descriptor, which `plan` then uses for it.

    Example: edgedeploy profile --target local --budget-s 60

    Example: edgedeploy profile -m edgedeploy.yaml --target pi --budget-s 60
    """
    from edgedeploy import api

    if export is not None or import_ is not None:  # no measuring: no progress to show
        _answer(api.profile(target, export=export, import_=import_, manifest=manifest),
                as_json)
        return
    title = ("profiling [simulated]" if api.is_twin(target)
             else "profiling" if target == "local" else f"profiling {target}")
    with progress_reporter(title) as cb:
        data = api.profile(target, budget_s=budget_s, shapes=shapes, model=model,
                           progress=cb, info=output.info, manifest=manifest,
                           accept_new_host_keys=accept_new)
    _answer(data, as_json)


def _answer(data: dict[str, object], as_json: bool) -> None:
    if as_json:
        output.emit_json(data)
        return
    for key, value in data.items():
        print(f"{key}: {value}")
