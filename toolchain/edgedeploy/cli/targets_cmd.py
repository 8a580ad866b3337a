"""``edgedeploy targets list|show``: the board catalogue and this host's detected descriptor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from edgedeploy import api
from edgedeploy.cli import complete, output

if TYPE_CHECKING:
    from edgedeploy.schemas.target import Target

targets_app = typer.Typer(help="Board descriptors: the shipped catalogue and this host.",
                          no_args_is_help=True)


def _row(target: Target) -> dict[str, Any]:
    gpu = target.gpu
    return {
        "name": target.name,
        "arch": target.arch,
        "clusters": target.summary(),
        "gpu": None if gpu is None else f"{gpu.cuda_cores}-core {gpu.name}@{gpu.max_freq_mhz:g}",
        "engines": list(target.engines),
        "simulated": target.simulated,
    }


@targets_app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """List every known board: name, architecture, clusters, GPU, engines.

    Example: edgedeploy targets list --json
    """
    rows = [_row(api.load_target(name)) for name in api.list_targets()]
    if as_json:
        output.emit_json({"targets": rows})
        return
    output.table("targets", ["name", "arch", "clusters", "gpu", "engines"],
                 [[r["name"], r["arch"], r["clusters"], r["gpu"] or "-", ",".join(r["engines"])]
                  for r in rows])


@targets_app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Board name ('local' for this host) or a YAML path.",
                               autocompletion=complete.boards),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Show a board's full descriptor (for 'local' also its fingerprint).

    Example: edgedeploy targets show jetson-tx2 --json
    """
    if as_json:
        output.emit_json(api.target_json(name))
        return
    _render(api.load_target(name))


def _render(target: Target) -> None:
    print(f"{target.name}: {target.description}".rstrip(": "))
    print(f"  arch {target.arch}, family {target.family}, {target.dram_mib} MiB DRAM at "
          f"{target.memory_bw_gbps:g} GB/s, engines {', '.join(target.engines)}")
    if target.fingerprint:
        print(f"  fingerprint {target.fingerprint}")
    rows = [[c.name, c.core_type, ",".join(map(str, c.cpu_ids)), c.max_freq_mhz,
             c.flops_per_cycle, round(c.peak_gflops(), 1), c.l1d_kib, c.l2_kib, c.l3_kib,
             c.idle_power_w, c.active_power_w_per_core] for c in target.clusters]
    if target.gpu is not None:
        g = target.gpu
        rows.append(["gpu", g.name, f"{g.cuda_cores} cores/{g.sms} SMs", g.max_freq_mhz, "-",
                     g.fp32_gflops, "-", "-", "-", g.idle_power_w, g.active_power_w])
    output.table("clusters", ["cluster", "core", "cpus", "MHz", "flops/cycle", "peak GFLOPS",
                              "L1d KiB", "L2 KiB", "L3 KiB", "idle W", "active W/core"], rows)
    for c in target.clusters:
        if c.simd:
            print(f"  {c.name} SIMD: {' '.join(c.simd)}")
    ic = target.inter_cluster
    print(f"  inter-cluster hand-over {ic.latency_us:g} us + {ic.bandwidth_gbps:g} GB/s")


def register(app: typer.Typer) -> None:
    app.add_typer(targets_app, name="targets")
