"""Reading and rendering a runner's status file (``runner.status.json``), host side.

The runner (runtime/runner.py) rewrites the file every second; ``edgedeploy status`` fetches it
(local directory or SSH) and shows it. Both functions here are pure so every transport can use
them: :func:`read_status` parses and checks, :func:`render_status` turns the dict into
``[field, value]`` rows for ``cli.output.table``, the runtime manager's switch timeline included
(:func:`timeline_rows` gives the timeline alone as a table). Board power (``power_w``,
``energy_mj`` per frame) shows with its source, or ``-`` and the runner's note saying why.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgedeploy.errors import EdgeDeployError

TIMELINE_COLUMNS = ["#", "time", "+s", "from", "to", "frame", "trigger", "reason", "before"]


class StatusError(EdgeDeployError):
    """A status file that is missing, unreadable or not a runner's status (exit code 1: an
    operational problem, the runner's state, not the user's input)."""


def read_status(path_or_text: str | Path | bytes) -> dict[str, Any]:
    """A status dict from a path or the file's text (JSON starting with ``{``).

    Checks the fields every renderer relies on; older runners' files lacking the timeline or the
    manager block get empty defaults.
    """
    if isinstance(path_or_text, bytes):
        path_or_text = path_or_text.decode("utf-8", "replace")
    text, where = _text(path_or_text)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StatusError(f"{where}: not a runner status file (invalid JSON: {exc})",
                          hint="is the runner from this edgedeploy version?") from None
    if not isinstance(data, dict) or "state" not in data or "active" not in data:
        raise StatusError(f"{where}: not a runner status file (no state/active fields)")
    data.setdefault("switches", [])
    data.setdefault("manager", {"enabled": False})
    data.setdefault("frames", 0)
    if not isinstance(data["switches"], list):
        raise StatusError(f"{where}: switches must be a list")
    return data


def _text(src: str | Path) -> tuple[str, str]:
    if isinstance(src, str) and src.lstrip().startswith("{"):
        return src, "status text"
    path = Path(src)
    try:
        return path.read_text(), str(path)
    except FileNotFoundError:
        raise StatusError(f"{path}: no status file", hint="is the runner started? "
                          "(`edgedeploy push`, or `python3 main.py serve` in the bundle)") from None
    except OSError as exc:
        raise StatusError(f"{path}: unreadable: {exc}") from None


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _clock(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 10)}"


def _before(sw: Mapping[str, Any]) -> str:
    m = sw.get("measured") or {}
    parts = []
    if m.get("throughput_fps") is not None:
        parts.append(f"{m['throughput_fps']:.1f} fps")
    if m.get("latency_ms_p99") is not None:
        parts.append(f"p99 {m['latency_ms_p99']:.1f} ms")
    loads = m.get("core_foreign_load") or {}
    if loads:
        parts.append("load " + " ".join(f"c{c}={float(v):.2f}" for c, v in sorted(loads.items())))
    return ", ".join(parts) or "-"


def power_text(status: Mapping[str, Any]) -> str:
    """Board power and energy per frame with their source, or ``-`` and why it is unknown."""
    watts, note = status.get("power_w"), str(status.get("power_note") or "")
    if not isinstance(watts, (int, float)):
        return f"- ({note})" if note else "-"
    text = f"{_fmt(float(watts), ' W', 2)}, {_fmt(status.get('energy_mj'), ' mJ/frame', 1)}"
    if status.get("power_source"):
        text += f" [{status['power_source']}]"
    return f"{text} ({note})" if note else text


def timeline_rows(status: Mapping[str, Any]) -> list[list[str]]:
    """One row per plan switch (columns: :data:`TIMELINE_COLUMNS`), oldest first."""
    start = status.get("started")
    rows = []
    for k, sw in enumerate(status.get("switches") or [], 1):
        t = sw.get("t")
        rel = (f"{t - start:.1f}" if isinstance(t, (int, float))
               and isinstance(start, (int, float)) else "-")
        rows.append([str(k), _clock(t), rel, str(sw.get("from", "-")), str(sw.get("to", "-")),
                     _fmt(sw.get("at_frame")), str(sw.get("trigger", "-")),
                     str(sw.get("reason", "-")), _before(sw)])
    return rows


def render_status(status: Mapping[str, Any]) -> list[list[str]]:
    """``[field, value]`` rows: state, plan, figures, stages, manager view, then the timeline."""
    rows = [["name", str(status.get("name", "-"))], ["state", str(status.get("state", "-"))],
            ["pid", _fmt(status.get("pid"))], ["active plan", str(status.get("active", "-"))],
            ["plans", ", ".join(status.get("plans") or []) or "-"],
            ["frames", _fmt(status.get("frames"))],
            ["throughput", _fmt(status.get("throughput_fps"), " fps")],
            ["latency p50 / p99", f"{_fmt(status.get('latency_ms_p50'), ' ms')} / "
                                  f"{_fmt(status.get('latency_ms_p99'), ' ms')}"],
            ["power", power_text(status)]]
    for st in status.get("stages") or []:
        rows.append([f"stage {st.get('name', '?')}",
                     f"cpus {st.get('cpus')} x{st.get('replicas', 1)}, service p50 "
                     f"{_fmt(st.get('service_ms_p50'), ' ms', 2)}, util "
                     f"{_fmt(st.get('utilisation'), '', 2)}"])
    if isinstance(status.get("updated"), (int, float)):
        rows.append(["updated", _clock(status["updated"])])
    rows.extend(_manager_rows(status.get("manager") or {}))
    if status.get("last_error"):
        rows.append(["last error", str(status["last_error"])])
    rows.append(["switches", str(len(status.get("switches") or []))])
    for row in timeline_rows(status):
        k, clock, rel, old, new, frame, trigger, reason, before = row
        rows.append([f"switch {k}", f"{clock} (+{rel} s) {old} -> {new} at frame {frame}: "
                                    f"{reason} [{trigger}]; before: {before}"])
    return rows


def _manager_rows(mgr: Mapping[str, Any]) -> list[list[str]]:
    if not mgr.get("enabled"):
        return [["manager", "off"]]
    targets = mgr.get("targets") or {}
    wanted = ", ".join(f"{k} {v:g}" for k, v in sorted(targets.items()) if v is not None)
    loads = mgr.get("core_foreign_load") or {}
    rows = [["manager", f"on (home plan {mgr.get('home', '-')}); targets: {wanted or 'none'}"]]
    if mgr.get("learned_fps") is not None:
        rows.append(["learned rate", f"{float(mgr['learned_fps']):.1f} fps (measured; the "
                                     "default target guards a share of it)"])
    for hold in mgr.get("held") or []:
        rows.append(["held switch", f"{hold.get('from')} -> {hold.get('to')} with loaded cores "
                                    f"{hold.get('loaded_cores')}: did not help"])
    for event in mgr.get("timeline") or []:
        if event.get("kind") in ("switch", None):
            continue  # switches have their own rows below
        count = f" x{event['count']}" if event.get("count", 1) > 1 else ""
        clock = _clock(event["t"]) if isinstance(event.get("t"), (int, float)) else "-"
        move = (f"{event['from']} -> {event['to']}: " if event.get("from") and event.get("to")
                else "")
        rows.append([f"manager {event.get('kind')}{count}",
                     f"{clock} {move}{event.get('reason', '')}"])
    if loads:
        rows.append(["core load (others)",
                     " ".join(f"c{c}={float(v):.2f}" for c, v in sorted(loads.items()))
                     + f"; loaded: {mgr.get('loaded_cores') or 'none'}"])
    return rows
