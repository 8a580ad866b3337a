"""``--report DIR``: stage-balance and pipeline Gantt charts (PNG + SVG) and an HTML summary.

matplotlib is imported lazily (only this module needs it); a missing package becomes an install
hint. The HTML is a Jinja2 template kept here: layout only, the numbers come from the lockfile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedeploy.errors import InputError

TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgedeploy plan {{ d.name }} / {{ d.target.alias }}</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:left}
table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}</style></head><body>
<h1>{{ d.name }} on {{ d.target.alias }} ({{ d.target.board }})</h1>
<p>Objective: {{ d.objective }}. Lockfile: <code>{{ plan_file }}</code>.</p>
<h2>Stages</h2>
<table><tr><th>stage</th><th>layers</th><th>config</th><th>cpus</th><th>replicas</th>
<th>primitive mix</th><th>predicted ms</th></tr>
{% for s in d.stages %}<tr><td>{{ s.name }}</td><td>{{ s.start }}..{{ s.stop - 1 }}</td>
<td>{{ s.cluster }}:{{ s.cores }}</td><td>{{ s.cpus|join(",") }}</td><td>{{ s.replicas }}</td>
<td>{% for k, v in s.primitive_mix.items() %}{{ k }} x{{ v }} {% endfor %}</td>
<td>{{ s.predicted_ms|num("%.3f") }}</td></tr>{% endfor %}</table>
<h2>Predicted, beside the baselines</h2>
<table><tr><th>system</th><th>fps</th><th>latency ms</th><th>energy mJ</th></tr>
<tr><td><b>edgedeploy plan</b></td><td>{{ d.predicted.throughput_fps|num("%.2f") }}</td>
<td>{{ d.predicted.latency_ms|num("%.2f") }}</td>
<td>{{ d.predicted.energy_mj|num("%.1f") }}</td></tr>
{% for name, b in d.baselines.items() %}<tr><td>{{ name }}</td>
<td>{{ b.predicted.throughput_fps|num("%.2f") }}</td>
<td>{{ b.predicted.latency_ms|num("%.2f") }}</td>
<td>{{ b.predicted.energy_mj|num("%.1f") }}</td></tr>{% endfor %}</table>
<h2>Charts</h2>{% if balance %}<img src="{{ balance }}" alt="stage balance">
<img src="{{ gantt }}" alt="gantt">{% else %}<p>None: the lockfile does not price its
stages one by one.</p>{% endif %}
<h2>Pareto set ({{ d.pareto|length }} points)</h2>
<table><tr><th>fps</th><th>latency ms</th><th>energy mJ</th><th>stages</th></tr>
{% for p in d.pareto %}<tr><td>{{ p.predicted.throughput_fps|num("%.2f") }}</td>
<td>{{ p.predicted.latency_ms|num("%.2f") }}</td>
<td>{{ p.predicted.energy_mj|num("%.1f") }}</td>
<td>{% for s in p.stages %}[{{ s.start }}..{{ s.stop - 1 }} {{ s.cluster }}:{{ s.cores }}
x{{ s.replicas }}] {% endfor %}</td></tr>{% endfor %}</table>
</body></html>
"""


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--report needs matplotlib", hint="pip install matplotlib") from None
    return plt


def _balance(plt, d: dict[str, Any], stem: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [f"{s['name']}\n{s['cluster']}:{s['cores']} x{s['replicas']}" for s in d["stages"]]
    per = [s["predicted_ms"] / s["replicas"] for s in d["stages"]]
    ax.bar(names, per, color="#4c72b0")
    ax.axhline(d["predicted"]["period_ms"], color="#c44e52", linestyle="--", label="period")
    ax.set_ylabel("ms per frame (stage time / replicas)")
    ax.set_title("stage balance")
    ax.legend()
    fig.tight_layout()
    return _save(plt, fig, stem)


def schedule(stages: list[dict[str, Any]], period_ms: float, frames: int
             ) -> list[tuple[int, int, int, float, float]]:
    """(stage, replica, frame, start ms, duration ms) of ``frames`` frames in steady state.

    Frame f arrives at f x period; replicas of a stage take frames round-robin, each frame
    taking the stage's whole per-replica time on its replica (a replica is not faster, there
    are more of them), and a frame enters a replica when both are free.
    """
    bars = []
    done = [f * period_ms for f in range(frames)]
    for k, s in enumerate(stages):
        replicas = max(1, int(s.get("replicas", 1)))
        free = [0.0] * replicas
        for f in range(frames):
            r = f % replicas
            start = max(done[f], free[r])
            bars.append((k, r, f, start, float(s["predicted_ms"])))
            done[f] = free[r] = start + float(s["predicted_ms"])
    return bars


def _gantt(plt, d: dict[str, Any], stem: Path, frames: int = 6) -> list[Path]:
    """Steady-state schedule of a few frames, one row per replica (see :func:`schedule`)."""
    stages = d["stages"]
    rows = [(k, r) for k, s in enumerate(stages) for r in range(max(1, int(s["replicas"])))]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    colors = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd"]
    for k, r, f, start, dur in schedule(stages, d["predicted"]["period_ms"], frames):
        ax.broken_barh([(start, dur)], (rows.index((k, r)) - 0.4, 0.8),
                       color=colors[f % len(colors)], alpha=0.85)
    labels = [stages[k]["name"] + (f" r{r}" if stages[k]["replicas"] > 1 else "")
              for k, r in rows]
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.set_title(f"pipeline Gantt ({frames} frames, colour = frame, one row per replica)")
    fig.tight_layout()
    return _save(plt, fig, stem)


def _save(plt, fig, stem: Path) -> list[Path]:
    out = []
    for ext in ("png", "svg"):
        path = stem.parent / f"{stem.name}.{ext}"
        fig.savefig(path, **({"metadata": {"Date": None}} if ext == "svg" else {}))
        out.append(path)
    plt.close(fig)
    return out


def _num(value: float | None, fmt: str) -> str:
    """A figure in the page, "-" where the plan holds none."""
    return "-" if value is None else fmt % value


def write_report(result, directory: str | Path) -> list[Path]:
    """Charts and ``<name>.<alias>.html`` for one PlanResult; returns the files written."""
    import jinja2

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    d = result.doc
    stem = f"{d['name']}.{d['target']['alias']}"
    plt = _pyplot()
    # charts need every stage's time: a measured winner that is a pipeline of the Pareto set
    # has its stages' times only together
    charted = all(s["predicted_ms"] is not None for s in d["stages"])
    files = []
    if charted:
        files += _balance(plt, d, directory / f"{stem}.balance")
        files += _gantt(plt, d, directory / f"{stem}.gantt")
    env = jinja2.Environment(autoescape=True)
    env.filters["num"] = _num
    html = env.from_string(TEMPLATE).render(
        d=d, plan_file=str(result.plan_file), balance=f"{stem}.balance.svg" if charted else None,
        gantt=f"{stem}.gantt.svg")
    page = directory / f"{stem}.html"
    page.write_text(html)
    return [*files, page]
