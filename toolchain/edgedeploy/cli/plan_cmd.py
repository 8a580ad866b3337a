"""`edgedeploy plan`: manifest -> plan lockfile per target, with a table beside the baselines."""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy.cli import complete, output
from edgedeploy.errors import ExitCode


def register(app: typer.Typer) -> None:
    @app.command()
    def plan(
        manifest: Path = typer.Argument(..., help="The manifest (edgedeploy.yaml)."),
        target: str = typer.Option(None, "--target", "-t", autocompletion=complete.targets,
                                   help="Plan only this target alias."),
        out: Path = typer.Option(None, "--output", "-o",
                                 help="Lockfile path (default: <plans_dir>/<name>.<alias>"
                                      ".plan.json)."),
        as_json: bool = typer.Option(False, "--json", help="Print the plans as JSON."),
        report: Path = typer.Option(None, "--report",
                                    help="Also write charts and an HTML summary here."),
        check: bool = typer.Option(False, "--check",
                                   help="Write nothing; exit 7 if a committed lockfile is stale."),
        measure: bool = typer.Option(True, "--measure/--no-measure",
                                     help="Measure the shortlist on a reachable target (this "
                                          "host, a sim: twin, an SSH board not serving) "
                                          "and keep the winner; "
                                          "--no-measure plans from the cost model alone."),
        budget_s: float = typer.Option(None, "--measure-budget-s", min=1.0,
                                       help="Seconds of measurement (default: the manifest's "
                                            "measure.budget_s)."),
    ) -> None:
        """Plan stages, cores and primitives for every target of a manifest; write lockfiles.

        On a target that can be reached (this host, a sim: twin, a board over SSH whose runner
        is not serving: the contenders run there in a bundle that is never installed) the plan,
        its next best predicted plans and the baselines (the whole model through one engine,
        threaded or replicated) are measured there and the winner is written, measured beside
        predicted (measure to decide).
        Without measurement the lockfile is deterministic: the same model, manifest, target and
        cost-model profile give a byte-identical file. With --check nothing is written and the
        exit code is 7 when a lockfile is missing, its recorded input hashes differ from the
        current inputs, or (for a lockfile not measured) its content differs from what the
        planner computes now (for CI). An infeasible constraint
        exits with code 3 and names the constraint and the best value reachable.

        Example: edgedeploy plan plans/demo.yaml --target local --report out/
        """
        from edgedeploy import api

        if check:
            results = api.plan_check(manifest, target, output=out)
            stale = [r for r in results if r.stale]
            if as_json:
                output.emit_json({"stale": bool(stale), "plans": [
                    {"alias": r.alias, "plan_file": str(r.plan_file), "stale": r.stale}
                    for r in results]})
            else:
                for r in results:
                    state = "stale: " + "; ".join(r.stale) if r.stale else "up to date"
                    print(f"{r.plan_file}: {state}")
            if stale:
                raise typer.Exit(ExitCode.STALE)
            return
        results = api.plan(manifest, target, output=out, measure=None if measure else False,
                           budget_s=budget_s, progress=output.info)
        if report is not None:
            for r in results:
                files = api.plan_report(r, report)
                output.info(f"report for {r.alias}: {', '.join(str(f) for f in files)}")
        if as_json:
            data = [r.summary() for r in results]
            output.emit_json(data[0] if len(data) == 1 else {"plans": data})
            return
        for r in results:
            _render(r)


def _render(r) -> None:
    d = r.doc
    rows = [[s["name"], f"{s['start']}..{s['stop'] - 1}",
             output.stage_config(s),
             ",".join(map(str, s["cpus"])) or "-", s["replicas"],
             ", ".join(f"{k} x{v}" for k, v in s["primitive_mix"].items()), s["predicted_ms"]]
            for s in d["stages"]]
    output.table(f"{d['name']} on {d['target']['alias']} ({d['target']['board']}), "
                 f"objective {d['objective']}",
                 ["stage", "layers", "config", "cpus", "replicas", "primitive mix",
                  "predicted ms"], rows, justify={"predicted ms": "right"})
    for s in d["stages"]:
        if not s.get("verified", True):
            output.info(f"{s['name']} runs on {s['engine']} (device {s['device_id']}, feeding "
                        f"core {','.join(map(str, s['cpus'])) or '-'}; needs "
                        f"{', '.join(s['providers'])}): unverified until measured on the board")
    if any(s.get("inline") for s in d["stages"]):
        output.info(output.INLINE_NOTE)
    if d.get("precision"):
        output.info(output.precision_line(d["precision"]))
    _render_decision(d.get("decision") or {})
    if d.get("winograd"):
        output.info(output.winograd_line(d["winograd"]))
    p = d["predicted"]
    rows = [["edgedeploy plan", p["throughput_fps"], p["latency_ms"], p["energy_mj"]]]
    rows += [[name, b["predicted"]["throughput_fps"], b["predicted"]["latency_ms"],
              b["predicted"]["energy_mj"]] for name, b in d["baselines"].items()]
    output.table("predicted", ["system", "fps", "latency ms", "energy mJ"], rows,
                 justify={"fps": "right", "latency ms": "right", "energy mJ": "right"})
    state = "written" if r.written else "unchanged"
    print(f"{r.plan_file} ({state})")


def _render_decision(decision: dict) -> None:
    """The measured shortlist (measure to decide), or why the plan was not measured."""
    if not decision.get("measured"):
        if decision.get("reason"):
            output.info(f"not measured: {decision['reason']}")
        return
    label = " [simulated]" if decision.get("simulated") else ""
    contenders = decision.get("contenders", [])
    # the winner of the shortlist's rounds and the best baseline, timed again against each other
    again = any(c.get("confirm_fps") for c in contenders)
    rows = [[c["name"] + (" *" if c["name"] == decision.get("winner") else ""),
             c["predicted"]["throughput_fps"], c["measured_fps"],
             f"{min(c['rounds_fps']):.4g}..{max(c['rounds_fps']):.4g}" if c["rounds_fps"]
             else "-",
             *([sum(c["confirm_fps"]) / len(c["confirm_fps"]) if c.get("confirm_fps") else "-"]
               if again else [])] for c in contenders]
    output.table(f"measured on {decision['target']}{label} in {decision.get('seconds')} s "
                 "(* = the plan written)", ["contender", "predicted fps", "measured fps",
                                            "rounds fps", *(["timed again fps"] if again
                                                            else [])], rows,
                 justify={"predicted fps": "right", "measured fps": "right",
                          "timed again fps": "right"})
    if decision.get("reason"):
        output.info(decision["reason"])
