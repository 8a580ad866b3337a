"""The bundle runner: what ``main.py`` on the board calls (device side: numpy + edgedeploy.runtime).

Commands (run from the bundle directory; ``python3 main.py CMD --help``)::

    serve   [--frames N] [--duration-s S] [--state-dir DIR] [--source KIND]
                                                              run the active plan, write status
    health  [--json]                                          smoke inference vs the host reference
    measure (--plan NAME | --config-json JSON) --frames N [--warmup W] [--json]
    trials                                                    time contenders held open, driven
                                                              by JSON lines on stdin (trials.py)

``serve``'s status and ``measure``'s report carry board power (runtime/power.py, the tegrastats
log that Jetson bundles name: see ``runner_serve.power_log_path``): ``power_w``, ``energy_mj`` per
frame, ``power_source``, and ``power_note`` saying why ``power_w`` is null on boards without one.

``app/config.json`` (schema_version 1), written by the host's generator::

    {"schema_version": 1, "name": "demo",
     "graph": "app/graph.json", "weights": "app/weights.npz",      # IR (Graph.save format)
     "inputs": [{"name", "shape"}], "outputs": [{"name", "shape"}],
     "active": "plan0",
     "plans": {"plan0": {"stages": [{"name", "start", "stop", "inputs", "outputs",
                                     "cpus", "replicas"}],        # layers [start, stop)
                         "choices": {layer: "winograd_f4x3/nchw" | "native" | "onnxruntime" | ...},
                         "predicted": {"throughput_fps", "latency_ms"}}},
     "segments": [{"inputs", "outputs", "file": "app/segments/0.onnx"}],   # onnxruntime cuts
     "reference": {"file": "app/reference.npz", "inputs": [...], "outputs": [...]},
     "tolerance": 0.001, "state_dir": null, "source": {"kind": "random", "seed": 0},
     "io": {"source": {"kind": "client"}, "sink": {"kind": "client"}, ...},  # runner_io.py
     "targets": {"min_throughput_fps", "max_latency_ms"},           # optional, for the manager
     "manager": {"enabled": true, ...}}                              # optional, see manager.py

``serve`` takes its frames from ``io`` (runner_io.py): by default from applications through the
service on ``<state dir>/runner.sock`` (service.py; the client library is edgedeploy.client),
or from files, images or a Python callable on the board. A bundle without ``io`` (built from a
bare model) feeds itself ``source``'s seeded random frames, the benchmark feed, as does
``serve --source random``; ``measure`` always does, so refinement's timings never wait on a camera.
With the client source, ``--frames N`` ends ``serve`` after N frames served.

Several plans (a Pareto set) can be carried; ``active`` runs. ``serve`` switches plans only
between chunks with an empty pipeline (see runner_serve.py), when ``runner.control.json`` in the
state dir asks for another plan or a :data:`SwitchPolicy` does. The status file
``runner.status.json`` in the state dir (see ``RunnerConfig.state_dir``) is replaced atomically
every second: pid, state, active plan, frames, throughput, latency p50/p99, per-stage metrics,
shared-memory names, plan switches and the last error.

Exit codes: 0 ok (SIGTERM/SIGINT is a clean stop), 1 operational failure (a stage died, health
mismatch), 2 bad bundle or arguments. Errors print one line (plus a hint) on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgedeploy.runtime.errors import EdgeDeployError, ExitCode
from edgedeploy.runtime.layouts import carried_shape
from edgedeploy.runtime.runner_config import (
    STATUS_FILE,
    BundleConfigError,
    RunnerConfig,
    load_config,
    load_graph,
    parse_plan,
    resolve_stages,
    stage_options,
    stage_segments,
)


class Terminated(BaseException):
    """SIGTERM/SIGINT arrived: unwind (closing the pipeline) and exit 0."""


def _install_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not break cleanup
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py", description="edgedeploy bundle runner")
    p.add_argument("--root", default=None, help="bundle directory (default: main.py's folder)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the active plan and write the status file")
    s.add_argument("--frames", type=int, default=None)
    s.add_argument("--duration-s", type=float, default=None)
    s.add_argument("--state-dir", default=None)
    s.add_argument("--source", default=None,
                   choices=("client", "random", "npz", "npy", "images", "python"),
                   help="override the bundle's io source (random: the benchmark feed)")
    h = sub.add_parser("health", help="smoke inference compared with the host's reference")
    h.add_argument("--json", action="store_true")
    m = sub.add_parser("measure", help="run a plan or a variant for N frames and report times")
    g = m.add_mutually_exclusive_group()
    g.add_argument("--plan", default=None)
    g.add_argument("--config-json", default=None)
    m.add_argument("--frames", type=int, default=50)
    m.add_argument("--warmup", type=int, default=5)
    m.add_argument("--json", action="store_true")
    sub.add_parser("trials", help="hold contenders open and time them as stdin asks "
                                  "(measure-to-decide on the board; JSON lines)")
    return p


def main(argv: Sequence[str] | None = None, root: str | Path | None = None) -> int:
    """Entry point: parse, run one command, map errors to exit codes."""
    args = _parser().parse_args(argv)
    bundle = Path(args.root or root or Path.cwd()).resolve()
    stop = threading.Event()
    _install_signals(stop)
    try:
        cfg = load_config(bundle)
        if args.command == "serve":
            return serve(cfg, frames=args.frames, duration_s=args.duration_s,
                         state_dir=args.state_dir, stop=stop, source=args.source)
        if args.command == "health":
            report = health(cfg)
            _print(report, args.json)
            return ExitCode.OK if report["ok"] else ExitCode.FAILURE
        if args.command == "trials":
            from edgedeploy.runtime.trials import serve_trials

            claim_shared_memory(cfg)
            return serve_trials(cfg, sys.stdin, sys.stdout)
        _print(measure(cfg, args.plan, args.config_json, args.frames, args.warmup), args.json)
        return ExitCode.OK
    except Terminated:
        return ExitCode.OK
    except EdgeDeployError as exc:
        if stop.is_set():  # a stage killed by the same group signal: still a clean stop
            return ExitCode.OK
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        _stop_sidecars()


def _stop_sidecars() -> None:
    """Stop helpers run.sh started for us (Jetson's tegrastats) so none outlives the runner."""
    for pid in os.environ.get("EDGEDEPLOY_SIDECAR_PIDS", "").split():
        if pid.isdigit():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGTERM)


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, sort_keys=True))
        return
    for key, value in data.items():
        print(f"{key}: {value}")


# --- serve ------------------------------------------------------------------------------------
def serve(cfg: RunnerConfig, *, frames: int | None = None, duration_s: float | None = None,
          state_dir: str | None = None, stop: threading.Event | None = None,
          source: str | None = None) -> int:
    """Run the active plan until ``frames``/``duration_s`` or a signal; keep the status fresh."""
    from edgedeploy.runtime.manager import policy_from_config
    from edgedeploy.runtime.runner_serve import CHUNK_S, Server, StatusWriter

    if frames is not None and frames < 1:
        raise BundleConfigError("--frames must be >= 1")
    reclaimed = claim_shared_memory(cfg)
    policy = policy_from_config(cfg)  # None unless enabled (manager.py): serving is unchanged
    path = cfg.state_dir(state_dir) / STATUS_FILE
    base = {"pid": os.getpid(), "name": cfg.name, "active": cfg.active, "state": "starting",
            "frames": 0, "started": time.time(), "plans": sorted(cfg.plans), "last_error": None,
            "switches": [], "simulated": False, "manager": {"enabled": policy is not None},
            "reclaimed_shm": reclaimed}
    try:
        status = StatusWriter(path, base)
    except OSError as exc:
        raise BundleConfigError(f"cannot write the status file in {path.parent}: {exc}",
                                hint="set EDGEDEPLOY_STATE_DIR or --state-dir") from None
    with status:
        try:
            Server(cfg, status, policy=policy, stop=stop, source=source,
                   chunk_s=policy.chunk_s if policy else CHUNK_S).serve(frames, duration_s)
        except Terminated:
            status.update(state="stopped")
            raise
        except EdgeDeployError as exc:
            stopping = stop is not None and stop.is_set()
            status.update(state="stopped" if stopping else "failed",
                          last_error=None if stopping else str(exc))
            raise
        status.update(state="stopped" if stop is not None and stop.is_set() else "finished")
    return ExitCode.OK


def claim_shared_memory(cfg: RunnerConfig) -> list[str]:
    """Name this process's rings after the bundle and unlink what dead runners of it left in
    /dev/shm (a SIGKILLed process group leaks its rings: see shm.py); said on stderr, which is
    the runner log."""
    from edgedeploy.runtime import shm

    gone = shm.reclaim_stale(shm.set_owner_tag(cfg.name))
    if gone:
        print(f"edgedeploy: reclaimed {len(gone)} shared-memory entries of dead runners: "
              f"{' '.join(gone)}", file=sys.stderr)
    return gone


# --- health -----------------------------------------------------------------------------------
def run_in_process(cfg: RunnerConfig, plan_name: str | None,
                   feeds: dict[str, Any]) -> dict[str, Any]:
    """Run one frame through every stage of a plan sequentially in this process (no pinning),
    each stage's engines opened as its replicas open them (fp16, a GPU's device)."""
    from edgedeploy.runtime.stages import GraphStage

    plan = cfg.plan(plan_name)
    graph = load_graph(cfg)
    env = dict(feeds)
    for st in resolve_stages(graph, plan):
        stage = GraphStage(graph, st.io, plan.choices,
                           stage_segments(cfg, graph, st.io, plan.choices),
                           options=stage_options(cfg, st))
        try:
            env.update(zip(st.outputs, stage([env[t] for t in st.inputs]), strict=True))
        finally:
            stage.executor.close()
    return env


def health(cfg: RunnerConfig, plan_name: str | None = None) -> dict[str, Any]:
    """The smoke inference: the reference input through the plan, compared with the host's output.

    Every plan of the bundle shares one graph and weights, so checking the active one checks
    the artifacts; ``plan_name`` checks another.
    """
    import numpy as np

    from edgedeploy.runtime.executor import max_rel_error

    ref = cfg.raw.get("reference") or {}
    try:
        with np.load(cfg.root / ref["file"]) as npz:
            feeds = {name: npz[f"in{k}"] for k, name in enumerate(ref["inputs"])}
            want = {name: npz[f"out{k}"] for k, name in enumerate(ref["outputs"])}
    except (OSError, KeyError, ValueError) as exc:
        raise BundleConfigError(f"cannot read the reference data: {exc}") from None
    name = plan_name or cfg.active
    t0 = time.perf_counter()
    got = run_in_process(cfg, name, feeds)
    err = max_rel_error({k: got[k] for k in want}, want)
    ok = bool(np.isfinite(err) and err <= cfg.tolerance)
    return {"ok": ok, "max_rel_error": float(err), "plan": name, "tolerance": cfg.tolerance,
            "seconds": round(time.perf_counter() - t0, 3)}


# --- measure ----------------------------------------------------------------------------------
def measure(cfg: RunnerConfig, plan_name: str | None, config_json: str | None, frames: int,
            warmup: int, layer_frames: int = 3) -> dict[str, Any]:
    """Run a plan (or a variant given as a plan object in JSON) for ``frames`` frames (rounded
    up to whole periods of its completions, at least three: ``metrics.timed_frames``), pinned
    and kept fed behind them (``Pipeline.tail``); then ``layer_frames`` in-process runs per
    stage for per-layer times (``layer_ms``).

    Board power is the meter's reading right after the pipeline run (before the per-layer runs),
    and ``energy_mj`` is that power over one frame period (1000 / throughput_fps ms)."""
    from edgedeploy.runtime.inline_pipeline import open_pipeline
    from edgedeploy.runtime.metrics import timed_frames
    from edgedeploy.runtime.runner_config import stage_specs
    from edgedeploy.runtime.runner_serve import frame_ms, make_source, power_meter

    if frames < 1 or warmup < 0:
        raise BundleConfigError("--frames must be >= 1 and --warmup >= 0")
    claim_shared_memory(cfg)
    if config_json is not None:
        try:
            plan = parse_plan("variant", json.loads(config_json))
        except ValueError as exc:
            raise BundleConfigError(f"--config-json is not JSON: {exc}") from None
    else:
        plan = cfg.plan(plan_name)
    graph = load_graph(cfg, 0, 0)
    source = make_source(cfg, [(t.name, carried_shape(graph, t.name)) for t in graph.inputs])
    meter = power_meter(cfg, cfg.state_dir())
    with open_pipeline(stage_specs(cfg, graph, plan)) as pipe:
        result = pipe.run(source, timed_frames(frames, pipe.period), warmup=warmup,
                          keep_outputs="none", tail=pipe.tail)
    data = result.to_dict()
    data.update(meter.sample().fields(frame_ms(result.throughput_fps)))
    data.update(plan=plan.name, warmup=warmup, predicted=dict(plan.predicted),
                stage_ms=[s["service_ms_mean"] for s in data["stages"]])
    if layer_frames > 0:
        from functools import partial

        from edgedeploy.runtime.runner_config import CONFIG_PATH, build_stage, resolve_stages

        stages = resolve_stages(graph, plan)
        makers = [partial(build_stage, str(cfg.root), CONFIG_PATH, st, dict(plan.choices))
                  for st in stages]
        feeds = dict(zip([t.name for t in graph.inputs], source(0), strict=True))
        data["layer_ms"] = chain_layer_ms(
            [lambda mk=mk: mk().executor for mk in makers],
            [_replica_cpus(st.cpus, st.replicas) for st in stages], feeds, layer_frames)
        data["layer_ms_source"] = LAYER_MS_SOURCE
    return data


#: How the per-layer figures of ``measure`` are taken (reported beside them).
LAYER_MS_SOURCE = ("in-process, one stage at a time on one replica's cores; median step ms over "
                   "the layer frames; [start, stop, ms] per executor step (an onnxruntime "
                   "segment covers several layers)")


def _replica_cpus(cpus: Sequence[int], replicas: int) -> list[int]:
    """One replica's share of a stage's cores (every allowed core when none are named)."""
    ids = list(cpus) or (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                         else [])
    return ids[:max(1, len(ids) // max(1, replicas))]


def chain_layer_ms(makers: Sequence[Any], cpus: Sequence[Sequence[int]],
                   feeds: dict[str, Any], frames: int) -> list[list[list[float]]]:
    """Per-step milliseconds of each stage's executor, run in order in this process.

    Why in-process and alone: a pipeline's per-stage figure cannot say which layer is slow; a
    stage run by itself on its own cores (``GraphExecutor.run(timings=...)``) can. ``makers``
    build each stage's GraphExecutor once pinned, so its engines take the stage's cores. Each
    stage is fed the previous stages' outputs; one warm-up run, then the median of ``frames``.
    Entries are ``[start, stop, ms]`` with global layer indices (``stop - start > 1`` for an
    onnxruntime segment)."""
    import numpy as np

    from edgedeploy.runtime.affinity import limit_blas_threads, pin_process

    env = dict(feeds)
    old = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    out: list[list[list[float]]] = []
    try:
        for make, ids in zip(makers, cpus, strict=True):
            pin_process(ids)
            ex = make()
            runs = []
            with limit_blas_threads(max(1, len(ids))):
                for k in range(frames + 1):
                    t: list[float] = []
                    got = ex.run({n: env[n] for n in ex.inputs}, timings=t)
                    if k:
                        runs.append(t)
            env.update(got)
            med = np.median(np.array(runs), axis=0) * 1e3
            entries, i = [], ex.start
            for step, ms in zip(ex.steps, med, strict=True):
                entries.append([i, i + len(step.layers), float(ms)])
                i += len(step.layers)
            out.append(entries)
    finally:
        pin_process(old)
    return out

