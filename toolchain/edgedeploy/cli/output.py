"""Rendering for people and machines: data on stdout, logs and errors on stderr.

Rich tables and progress on a terminal; plain line-per-event output when stdout is not a terminal
(Makefile and CI logs); NO_COLOR respected (rich reads it).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

log = logging.getLogger("edgedeploy")


@dataclass
class Settings:
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    debug: bool = False
    json_emitted: bool = False  # a command wrote its JSON answer (a failure adds no second one)


settings = Settings()


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def interactive() -> bool:
    """True when a person is watching stdout (progress bars, colours, prompts are allowed)."""
    return sys.stdout.isatty()


def emit_json(data: Any) -> None:
    """The machine-readable answer of a command, alone on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=_default) + "\n")
    sys.stdout.flush()
    settings.json_emitted = True


#: A stable word per exit code for ``{"error": {"code": ...}}``.
ERROR_CODES = {1: "failure", 2: "bad_input", 3: "infeasible", 4: "unreachable",
               5: "rolled_back", 6: "rollback_failed", 7: "stale_lockfile", 130: "interrupted"}


def emit_json_error(exit_code: int, message: str, hint: str | None = None,
                    kind: str | None = None) -> None:
    """A failed command's one JSON object on stdout (unless it already wrote its answer, which
    then carries the failure itself, as a deploy's per-host table does)."""
    if not settings.json_emitted:
        emit_json({"error": error_object(exit_code, message, hint, kind)})


def error_object(exit_code: int, message: str, hint: str | None = None,
                 kind: str | None = None) -> dict[str, Any]:
    """The ``error`` member every failing ``--json`` answer carries."""
    return {"code": ERROR_CODES.get(exit_code, "failure"), "kind": kind, "message": message,
            "hint": hint, "exit_code": exit_code}


def _default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def table(title: str | None, columns: list[str], rows: list[list[Any]],
          justify: dict[str, str] | None = None) -> None:
    """Print a table: rich on a terminal, tab-separated lines otherwise (easy to grep)."""
    justify = justify or {}
    if not interactive():
        if title:
            print(f"# {title}")
        print("\t".join(columns))
        for row in rows:
            print("\t".join(_cell(c) for c in row))
        return
    t = Table(title=title, show_lines=False)
    for col in columns:
        t.add_column(col, justify=justify.get(col, "left"))  # type: ignore[arg-type]
    for row in rows:
        t.add_row(*(_cell(c) for c in row))
    stdout().print(t)


def _cell(value: Any) -> str:
    """A table cell: floats to 4 significant digits, a figure not known as "-"."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def precision_line(record: dict[str, Any]) -> str:
    """A lockfile's ``precision`` block in one line: what was chosen and what the guard said."""
    head = f"precision {record['chosen']} (requested {record['requested']})"
    if record["chosen"] not in ("int8", "fp16"):
        return f"{head}: {record.get('reason') or 'the model as given'}"
    if record["chosen"] == "fp16":
        head += ", the model as given with its LiteRT stages computing fp16"
    error, bound = record.get("measured_error"), record["max_output_error"]
    held = (record.get("calibration") or {}).get("heldout_frames")
    words = f"{head}: max relative error {error:.3g} <= {bound:g}" if error is not None \
        else f"{head}: accuracy guard not run"
    if held:
        words += f" on {held} held-out frame(s)"
    if record.get("top1_agreement") is not None:
        words += f", top-1 agreement {record['top1_agreement']:.0%}"
    nodes = record.get("fp32_nodes") or []
    if nodes:
        words += f"; {len(nodes)} node(s) kept fp32 ({_some(nodes)})"
    return words


def stage_config(stage: dict[str, Any]) -> str:
    """A lockfile stage's unit and how it runs: ``cpu:2``, ``cpu:1 batch 4 inline``."""
    batch = int(stage.get("batch") or 1)
    return (f"{stage['cluster']}:{stage['cores']}" + (f" batch {batch}" if batch > 1 else "")
            + (" inline" if stage.get("inline") else ""))


#: Under a plan whose stage runs inline: what its predicted figure is.
INLINE_NOTE = ("inline: the stage runs in the caller's process, with no hop to a worker; one "
               "session is predicted without the frame's hand-over to a worker, replicas and "
               "micro-batches at the same stage's figure in worker processes")


def winograd_line(record: dict[str, Any]) -> str:
    """A lockfile's ``winograd`` block in one line: which convolutions run as Winograd F(4,3)
    and what was measured."""
    layers = record.get("layers") or []
    head = (f"winograd: {len(layers)} 3x3 convolution(s) rewritten ({_some(layers)})"
            if record.get("chosen") else "winograd: the model as given")
    return f"{head}: {record.get('reason') or 'not measured'}"


def baselines_line(summary: dict[str, Any]) -> str | None:
    """Refinement's measurements of the baselines on the board in one line (None: it measured
    none): each one's rate, the refined plan over the fastest, and those it could not run."""
    bases = summary.get("baselines") or {}
    if not bases:
        return None
    ran = [f"{name} {b['measured']['throughput_fps']:.4g} fps" for name, b in bases.items()
           if "measured" in b]
    words = "baselines on the board: " + (", ".join(ran) or "none measured")
    if summary.get("vs_best_baseline"):
        words += f"; refined plan {summary['vs_best_baseline']:.2f}x the fastest"
    skipped = [f"{name} ({b['not_measured']})" for name, b in bases.items()
               if "not_measured" in b]
    return words + (f"; not measured: {'; '.join(skipped)}" if skipped else "")


#: Nodes that :func:`precision_line` and :func:`winograd_line` name before counting the rest.
PRECISION_NODES_SHOWN = 4


def _some(names: list[str]) -> str:
    """The first :data:`PRECISION_NODES_SHOWN` names, and how many more there are."""
    more = len(names) - PRECISION_NODES_SHOWN
    return ", ".join(names[:PRECISION_NODES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def info(message: str) -> None:
    if settings.verbosity >= 0:
        stderr().print(message, soft_wrap=True)


def error(message: str) -> None:
    stderr().print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)


def setup_logging() -> None:
    level = logging.WARNING
    if settings.verbosity > 0:
        level = logging.INFO if settings.verbosity == 1 else logging.DEBUG
    elif settings.verbosity < 0:
        level = logging.ERROR
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
