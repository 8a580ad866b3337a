"""The board's side of measure-to-decide: contenders held open and timed on request.

``main.py trials`` reads JSON lines on stdin and answers JSON lines on stdout (the host drives
the rounds; see ``benchmarks.board_trials``). Why a session and not one ``measure`` a window:
each ``measure`` imports its engines and starts its stage processes again, seconds on a small
board, and an alternated round of five contenders would spend most of its time starting them.
Here each contender starts once, as on the host, and every window is timed by the host's own
estimator (``runtime.window``): the same function for every contender, here and there.

Protocol (one JSON object a line)::

    host  {"plans": {NAME: plan object (as config.json's plans)}, "order": [NAME, ...],
           "optional": [NAME, ...], "start_bytes": {NAME: bytes}, "memory_share": 0.5}
    board {"opened": {NAME: null | "why it did not start"}}
    host  {"measure": NAME, "frames": N, "warmup": W, "latency_samples": K}
    board {"plan": NAME, "frames", "wall_s", "throughput_fps", "latency_ms_p50", "energy_mj", ...}
          | {"plan": NAME, "error": "..."}
    host  {"close": true}   (or end of input)

An optional contender whose start-up memory does not fit the board's share of the memory still
available once the ones before it started is not started (a 4 GB board holding six VGG-16 workers
would swap), and says so; the host drops it as it drops one that fails on this host.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from collections.abc import Iterable
from typing import IO, Any

from edgedeploy.runtime.layouts import carried_shape
from edgedeploy.runtime.runner_config import RunnerConfig, load_graph, parse_plan


def serve_trials(cfg: RunnerConfig, lines: Iterable[str], out: IO[str]) -> int:
    """Answer one trials session (see the module doc); returns the exit code."""
    from edgedeploy.runtime.inline_pipeline import open_pipeline
    from edgedeploy.runtime.process_memory import available_bytes
    from edgedeploy.runtime.runner_config import stage_specs
    from edgedeploy.runtime.runner_serve import make_source, power_meter

    def say(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, sort_keys=True) + "\n")
        out.flush()

    lines = iter(lines)
    request = _next_request(lines)
    if request is None:
        return 0
    raw = dict(request.get("plans") or {})
    order = [str(n) for n in request.get("order") or raw]
    optional = set(request.get("optional") or ())
    need = {str(k): float(v) for k, v in dict(request.get("start_bytes") or {}).items()}
    share = float(request.get("memory_share", 0.5))
    graph = load_graph(cfg, 0, 0)
    source = make_source(cfg, [(t.name, carried_shape(graph, t.name)) for t in graph.inputs])
    meter = power_meter(cfg, cfg.state_dir())
    pipes: dict[str, Any] = {}
    opened: dict[str, str | None] = {}
    with contextlib.ExitStack() as stack:
        for name in order:
            try:
                plan = parse_plan(name, raw[name])
                # read after the ones before it started: what they hold is no longer available
                spare = share * (available_bytes() or float("inf"))
                if name in optional and need.get(name, 0.0) > spare:
                    raise MemoryError(f"{need.get(name, 0.0) / 2**30:.1f} GiB to start beside "
                                      f"the others, {spare / 2**30:.1f} GiB to spare")
                pipes[name] = stack.enter_context(open_pipeline(stage_specs(cfg, graph, plan)))
                opened[name] = None
            except Exception as exc:  # the host decides what a contender that failed means
                opened[name] = f"{type(exc).__name__}: {exc}"
        say({"opened": opened})
        while (request := _next_request(lines)) is not None and not request.get("close"):
            name = str(request.get("measure"))
            if name not in pipes:
                say({"plan": name, "error": opened.get(name) or f"no contender {name!r}"})
                continue
            try:
                say(_window(pipes[name], name, source, request, meter))
            except Exception as exc:
                say({"plan": name, "error": f"{type(exc).__name__}: {exc}"})
    return 0


def _next_request(lines: Iterable[str]) -> dict[str, Any] | None:
    for line in lines:
        if line.strip():
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("a trials request is a JSON object a line")
            return data
    return None


def _window(pipe: Any, name: str, source: Any, request: dict[str, Any], meter: Any
            ) -> dict[str, Any]:
    """One timed window by the host's own estimator (``runtime.window.timed_round``): ``frames``
    (rounded up to whole periods of the contender's completions; the answer says how many)
    after ``warmup``, the pipeline kept fed behind the window, as this host's benchmarks feed
    theirs; then ``latency_samples`` frames one at a time (the latency an application sees with
    nothing else in flight).

    Why not ``pipe.run``: it drains inside its run, and two VGG-16 replicas batching four frames
    finished their last, partial batches early -- 16 fps read for a 10 fps system."""
    from edgedeploy.runtime.runner_serve import frame_ms
    from edgedeploy.runtime.window import timed_round

    window = timed_round(lambda n, frame: pipe.stream(frame, n), source,
                         int(request["frames"]), int(request.get("warmup", 0)),
                         tail=pipe.tail, period=pipe.period)
    data = {"plan": name, "frames": window.frames, "wall_s": window.wall_s,
            "throughput_fps": window.throughput_fps, "latency_ms_p50": None}
    data.update(meter.sample().fields(frame_ms(window.throughput_fps)))
    samples = int(request.get("latency_samples", 0))
    if samples > 0:
        alone = [pipe.run(source, 1, warmup=0, keep_outputs="none").to_dict()["latency_ms_p50"]
                 for _ in range(samples)]
        data["latency_ms_p50"] = statistics.median(alone)
    return data
