"""`edgedeploy refine` and `edgedeploy refine score`: parse, call edgedeploy.api, render."""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy.cli import complete, output

refine_app = typer.Typer(no_args_is_help=False, invoke_without_command=True,
                         help="Refine a plan by measurement on the device (or a board twin).")


def _progress(total: int):
    """A rich bar on a terminal, plain lines otherwise (logs, CI)."""
    if output.interactive():
        from rich.progress import Progress

        bar = Progress(console=output.stderr())
        bar.start()
        task = bar.add_task("refining", total=total or None)

        def on_eval(rec) -> None:
            bar.update(task, advance=1, description=f"best {rec.best_value:.4g}")
        return on_eval, bar.stop

    def plain(rec) -> None:
        output.info(f"eval {rec.index}/{total or '?'}: {rec.meas.throughput_fps:.4g} fps "
                    f"({rec.origin}), best {rec.best_value:.4g}")
    return plain, lambda: None


@refine_app.callback()
def refine_cmd(
    ctx: typer.Context,
    manifest: Path = typer.Option(Path("edgedeploy.yaml"), "--manifest", "-m",
                                  help="Manifest file."),
    target: str = typer.Option("local", "--target", "-t", autocompletion=complete.targets,
                               help="Alias, or sim:<board>."),
    max_evals: int | None = typer.Option(None, "--max-evals", help="Measured evaluations."),
    budget_s: float | None = typer.Option(None, "--budget-s", help="Seconds of measurement."),
    seed: int = typer.Option(0, "--seed", help="Search (and twin) seed."),
    out: Path | None = typer.Option(None, "-o", "--output", help="Refined plan file."),
    no_feedback: bool = typer.Option(False, "--no-feedback",
                                     help="Do not append measured samples to the profile."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Measure candidates from the plan (guided evolutionary search) and write the refined plan.

    Example: edgedeploy refine -m plans/tx2.yaml --target sim:jetson-tx2 --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from edgedeploy import api

    on_eval, stop = _progress(max_evals or 0)
    try:
        res = api.refine(manifest, target, max_evals=max_evals, budget_s=budget_s, seed=seed,
                     output=out, feedback=not no_feedback, on_eval=on_eval)
    finally:
        stop()
    s = res.summary()
    if as_json:
        output.emit_json(s)
        return
    label = " [simulated]" if res.simulated else ""
    rows = [[st["index"], f"{st['start']}..{st['stop'] - 1}", output.stage_config(st),
             st["replicas"], st["predicted_ms"], st.get("measured_ms")] for st in s["stages"]]
    output.table(f"refined plan{label}", ["stage", "layers", "unit", "replicas", "pred ms",
                                          "measured ms"], rows)
    b, p = s["best"], s["plan_before"]["measured"]
    print(f"started from {s['plan_before']['file'] or 'the plan made from the cost model'}: "
          f"{s['plan_before']['configuration']}")
    if s["configuration"] != s["plan_before"]["configuration"]:
        print(f"refined to: {s['configuration']}")
    print(f"plan {p['throughput_fps']:.4g} fps -> refined {b['throughput_fps']:.4g} fps "
          f"(x{s['improvement']:.3f}) in {s['evaluations']} evaluations{label}")
    if (line := output.baselines_line(s)) is not None:
        print(line)
    print(f"wrote {s['plan_file']}")


@refine_app.command("score")
def score_cmd(
    boards: str = typer.Option("all", "--boards", help="all, or b1,b2."),
    models: str = typer.Option("zoo", "--models",
                               help="zoo, held_out (not tuned on), or m1,m2."),
    budget: int = typer.Option(30, "--budget", help="Evaluations per method."),
    size: int = typer.Option(96, "--size", help="Zoo input size."),
    seed: int | None = typer.Option(None, "--seed", help="One seed (overrides --seeds)."),
    seeds: str = typer.Option("0,1,2", "--seeds",
                              help="Seeds (twin, profile, search), comma-separated."),
    profile_s: float = typer.Option(60.0, "--profile-s",
                                    help="Simulated profile before planning (0: prior only)."),
    plot: Path | None = typer.Option(None, "--plot", help="Convergence plot (PNG)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score refinement on board twins against the exhaustive optimum (simulated).

    Example: edgedeploy refine score --boards rpi4 --models mobilenet_v2 --budget 30 --json
    """
    from edgedeploy import api

    seed_list = [seed] if seed is not None else [int(x) for x in seeds.split(",") if x.strip()]
    res = api.refine_score(boards, models, size=size, budget=budget, seeds=seed_list,
                           profile_s=profile_s, plot=plot,
                           on_row=lambda r: output.info(f"[simulated] {r['board']} x "
                                                        f"{r['model']} seed {r['seed']} done"))
    if as_json:
        output.emit_json(res)
        return
    methods = api.refine_methods()
    rows = []
    for r in res["rows"]:
        for name in methods:
            m = r["methods"][name]
            rows.append([r["board"], r["model"] + (" (held out)" if r["held_out"] else ""),
                         r["seed"], r["plan_prior_vs_optimum"],
                         r["plan_vs_optimum"], name, m["near_optimal_fraction"],
                         m["evals_to_95pct"] if m["evals_to_95pct"] is not None else f">{budget}",
                         m["final_vs_plan"], m["final_vs_optimum"]])
    output.table("refinement score [simulated twins]",
                 ["board", "model", "seed", "plan(prior)/opt", "plan(calibrated)/opt", "method",
                  "near_opt", "evals_95", "final/plan", "final/opt"],
                 rows)
    print(f"mean (sd) over seeds {res['seeds']} [simulated]:")
    for name in ("plan", *methods):
        s = res["summary"][name]
        print(f"{name}: " + ", ".join(
            f"{k} {s[k]['mean']:.3f} ({s[k]['sd']:.3f})"
            for k in ("near_optimal_fraction", "evals_to_95pct_median", "final_vs_plan",
                      "final_vs_optimum")))
    print(f"targets: {res['summary']['targets']}")


def register(app: typer.Typer) -> None:
    app.add_typer(refine_app, name="refine")
