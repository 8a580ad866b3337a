"""The profiler's measuring side on a board: a request in, JSON lines out.

``edgedeploy profile --target ALIAS`` for a board reached over SSH uploads the runtime package
and runs ``python -m edgedeploy.runtime.probe --request FILE`` there with the board's own
interpreter. The host decides what to measure (layer shapes x primitives x cores, with the
prior's expected times, and the calibration models)::

    {"protocol": 1,
     "layers": {"budget_s": 60, "seed": 0, "shapes": [{descriptor}, ...],
                "tasks": [{"shape": 0, "primitive": "onnxruntime", "cpus": [0], "expect_ms": 1.3}]},
     "models": {"configs": [{"key": "cpu:2", "cluster": "cpu", "cores": 2, "cpus": [0, 1]}],
                "models": [{"name": ..., "size": ..., "onnx": KEY, "graph": KEY, "weights": KEY,
                            "native": true, "opaque": [{"names": [...], "segment": KEY,
                                                        "inputs": [{"name", "shape", "dtype"}]}],
                            "batch": {"onnx": KEY, "sizes": [2, 4], "reps": 3, "gain_min": 1.05,
                                      "every_short": true},
                            "replica_windows": 3}]},
     "sessions": {"budget_s": 10, "reps": 5, "sessions": [{"key": ..., "onnx": KEY,
                                                           "against": KEY, "cpus": [0],
                                                           "inputs": [{"name", "shape"}]}]},
     "files": {KEY: "/path/on/the/board", ...}}

The board measures the layer tasks in order within the budget (its own clock), then the models
(a model with ``"native": false``, the one a profile is taken for, through onnxruntime only: a
large model run natively would take minutes on a small board; its ``opaque`` layers, cut alone
by the host, timed alone too; its ``batch`` file, with a free batch axis, timed at each batch
size, and its replicas at each size that one core ran ``gain_min`` faster per frame, or at every
size where their windows are short, with ``every_short`` (``model_timing.gained_batches``); its
replica runs the median of ``replica_windows``), and answers one JSON object per line, flushed
as it goes so the host can show progress::

    {"event": "start", "probe": ".../probe.py", "python": ..., "runtime": {...}, "cpus": [...]}
    {"event": "sample", "index": 3, "ms": 1.2, "reps": 9, "spread": 0.04, "elapsed_s": ...}
    {"event": "info", "message": "segments: squeezenet1_1 on cpu:1"}
    {"event": "run", "model": ..., "config": "cpu:1", "onnxruntime": ms, "native": ms,
     "opaque": {layer name: ms}, "batch": {"2": per-frame ms, "4": ...}}
    {"event": "replicas", "model": ..., "cluster": "cpu", "cores": 2, "fps": ...}
    {"event": "replica_batch", "model": ..., "cluster": "cpu", "cores": 2, "batch": 4,
     "fps": ..., "unbatched_fps": ...}
    {"event": "session", "key": ..., "ms": 3.4, "against_ms": 3.1}
                        (ONNX models timed alone, in order, while the budget lasts: the Winograd
                         trial's; one with an ``against`` model is timed in alternation with it,
                         ``reps`` pairs, and answers its time too)
    {"event": "done", "measured": 41, "elapsed_s": 9.8}

A failure is one ``{"event": "error", "kind": ..., "message": ...}`` line and a non-zero exit:
``missing`` (3: numpy or onnxruntime is not installed), ``request`` (2: a request this probe
cannot honour, such as cores the board does not have), ``crash`` (1: anything else).

Only the standard library (and the runtime's stdlib-only ``vocab`` and ``affinity``) is imported
before the dependency check, so a board without numpy gets that answer rather than a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgedeploy.runtime.affinity import available_cpus, pin_process  # stdlib only
from edgedeploy.runtime.vocab import INT8, NATIVE, ONNXRUNTIME  # stdlib only

PROTOCOL = 1
#: A model spec's opaque layers cut alone, and a run's times of them.
OPAQUE = "opaque"
#: A model spec's file with a free batch axis and the batches to time it at (``{"onnx": KEY,
#: "sizes": [2, 4], "reps": 3, "gain_min": 1.05}``), and a run's per-frame ms at each.
BATCH = "batch"
#: The event of replicas timed at a batch, beside their unbatched run's throughput.
REPLICA_BATCH_EVENT = "replica_batch"
EXIT_CRASH, EXIT_REQUEST, EXIT_MISSING = 1, 2, 3

Emit = Callable[[dict[str, Any]], None]


class ProbeFailure(Exception):
    """A failure the host maps to a clear error (``kind``, exit code)."""

    def __init__(self, kind: str, message: str, code: int, **extra: Any) -> None:
        super().__init__(message)
        self.kind, self.code, self.extra = kind, code, extra


def emit(event: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed (stdout to an SSH channel is a pipe: block-buffered)."""
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def needed_packages(request: dict[str, Any]) -> list[str]:
    """numpy always; onnxruntime when a layer task or a calibration model needs it."""
    tasks = (request.get("layers") or {}).get("tasks") or []
    ort = (bool(request.get("models")) or bool(request.get("sessions"))
           or any(t.get("primitive") == ONNXRUNTIME for t in tasks))
    return ["numpy"] + ([ONNXRUNTIME] if ort else [])


def check_packages(names: Sequence[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ProbeFailure("missing", f"{sys.executable} cannot import {name} ({exc})",
                               EXIT_MISSING, package=name, python=sys.executable) from None


def check_cpus(request: dict[str, Any], available: Sequence[int]) -> None:
    """Every core the request pins to must exist here (the board descriptor may be wrong)."""
    wanted = {int(c) for t in (request.get("layers") or {}).get("tasks") or [] for c in t["cpus"]}
    wanted |= {int(c) for cfg in (request.get("models") or {}).get("configs") or []
               for c in cfg["cpus"]}
    wanted |= {int(c) for one in (request.get("sessions") or {}).get("sessions") or []
               for c in one["cpus"]}
    missing = sorted(wanted - set(available))
    if missing:
        raise ProbeFailure("request", f"cores {missing} are not available on this board "
                           f"(it has {sorted(available)})", EXIT_REQUEST,
                           cpus=sorted(available))


def versions() -> dict[str, Any]:
    """What shapes the timings here: Python, numpy and its BLAS, onnxruntime, LiteRT."""
    import numpy as np

    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = sorted(f"{i.get('internal_api')} {i.get('version')} "
                             f"{i.get('architecture', '')}".strip()
                             for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        out["blas"] = []
    from importlib.metadata import PackageNotFoundError, version

    for key, dist in ((ONNXRUNTIME, "onnxruntime"), ("litert", "ai-edge-litert")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    return out


def measure_layers(section: dict[str, Any], out: Emit) -> int:
    """Time the layer tasks in order within ``budget_s``; one ``sample`` event each."""
    from edgedeploy.runtime import ir
    from edgedeploy.runtime.layer_timing import LayerTimer, Measurement, spend_budget

    tasks = section.get("tasks") or []
    shapes = [ir.Descriptor.from_dict(d) for d in section.get("shapes") or []]
    expect = [float("inf") if t.get("expect_ms") is None else float(t["expect_ms"])
              for t in tasks]
    timer = LayerTimer(int(section.get("seed", 0)))

    def one(i: int) -> Measurement:
        return timer(shapes[int(tasks[i]["shape"])], str(tasks[i]["primitive"]),
                     tasks[i]["cpus"])

    def done(i: int, m: Measurement, elapsed: float, eta: float) -> None:
        out({"event": "sample", "index": i, "ms": m.ms, "reps": m.reps, "spread": m.spread,
             "elapsed_s": round(elapsed, 3), "eta_s": round(max(eta, 0.0), 3)})

    return len(spend_budget(expect, float(section["budget_s"]), one, on_done=done,
                            groups=[str(t["primitive"]) for t in tasks],
                            packs=[(int(t["shape"]), str(t["primitive"])) for t in tasks]))


def measure_models(section: dict[str, Any], files: dict[str, str], out: Emit,
                   unpinned: Sequence[int]) -> int:
    """Each calibration model whole, both engines (onnxruntime only where its spec says
    ``"native": false``), on every configuration, and batched where its spec has a ``batch``
    entry; then r one-core replicas of it on every configuration with r >= 2 cores (the
    feeding parent back on ``unpinned``, every core the probe started with), batched at each
    size where one core gained enough from it."""
    import numpy as np

    from edgedeploy.runtime import ir
    from edgedeploy.runtime.executor import random_inputs
    from edgedeploy.runtime.model_timing import (
        FRAME,
        WHOLE_MIN_S,
        batch_ms,
        engine_ms,
        gained_batches,
        replica_fps,
        replica_frames,
        replica_windows,
        session_ms,
        stage_frame_ms,
        time_layers,
        whole_model_spec,
    )

    configs = section.get("configs") or []
    count = 0
    for spec in section.get("models") or []:
        data = json.loads(Path(files[spec["graph"]]).read_text())
        with np.load(files[spec["weights"]]) as npz:
            graph = ir.Graph.from_dict(data, {k: npz[k] for k in npz.files})
        onnx_path = files[spec["onnx"]]
        int8_path = files.get(spec["int8"]) if spec.get("int8") else None
        native = bool(spec.get("native", True))
        batch = spec.get(BATCH) or {}
        batched_path = files[batch["onnx"]] if batch else None
        one_core_ms: dict[str, float] = {}
        one_core_batch: dict[str, dict[str, float]] = {}
        feeds = random_inputs(graph) if int8_path or batch or not native else {}
        opaque = requested_opaque_layers(spec.get(OPAQUE) or [], files)
        # the model a profile is taken for: its stage's own cost a frame, on its most cores
        framed = max(configs, key=lambda c: int(c["cores"])) if spec.get(FRAME) else None
        for cfg in configs:
            out({"event": "info", "message": f"segments: {spec['name']} on {cfg['key']}"})
            ort_ms, native_ms = (engine_ms(graph, onnx_path, cfg["cpus"]) if native
                                 else (session_ms(onnx_path, feeds, cfg["cpus"],
                                                  min_s=WHOLE_MIN_S), None))
            run = {"event": "run", "model": spec["name"], "size": spec.get("size"),
                   "config": cfg["key"], "cluster": cfg["cluster"], "cores": cfg["cores"],
                   ONNXRUNTIME: ort_ms, NATIVE: native_ms}
            if int8_path:  # its int8 variant, as a quantized plan would run it
                run[INT8] = session_ms(int8_path, feeds, cfg["cpus"], min_s=WHOLE_MIN_S)
            if opaque:
                run[OPAQUE] = time_layers(opaque, cfg["cpus"])
            if batched_path:  # per-frame ms at each batch size, one call of b frames
                run[BATCH] = batch_ms(batched_path, feeds, cfg["cpus"], batch["sizes"],
                                      int(batch["reps"]))
            if cfg is framed:
                try:
                    stage, frame = whole_model_spec(graph, onnx_path, cfg["cpus"], 1)
                    ms = stage_frame_ms(stage, frame, ort_ms)
                except Exception as exc:  # the model ran whole: its plan is priced without it
                    out({"event": "info", "message": f"no per-frame stage cost measured for "
                                                     f"{spec['name']}: {exc}"})
                    ms = None
                if ms is not None:
                    run[FRAME] = ms
            if int(cfg["cores"]) == 1:
                one_core_ms[cfg["cluster"]] = ort_ms
                one_core_batch[cfg["cluster"]] = run.get(BATCH) or {}
            out(run)
            count += 1
        pin_process(unpinned)
        windows = int(spec.get("replica_windows", 1))
        for cfg in configs:
            cores, cluster = int(cfg["cores"]), cfg["cluster"]
            if cores < 2:
                continue
            out({"event": "info",
                 "message": f"replicas: {spec['name']} x{cores} on {cluster}"})
            base = one_core_ms.get(cluster, 0.0)
            fps = replica_fps(graph, onnx_path, cfg["cpus"], cores,
                              frames=replica_frames(base, cores),
                              windows=replica_windows(windows, base, cores))
            out({"event": "replicas", "model": spec["name"], "size": spec.get("size"),
                 "cluster": cluster, "cores": cores, "fps": fps})
            count += 1
            # the batches to time its replicas at too: those one core gained enough from, or
            # every one where their windows are short
            gained = (gained_batches(one_core_batch[cluster], base, float(batch["gain_min"]),
                                     cores if batch.get("every_short") else 0)
                      if batched_path and cluster in one_core_batch else [])
            for b, ms in gained:
                out({"event": "info", "message": f"replicas: {spec['name']} x{cores} on "
                                                 f"{cluster}, {b} frames a call"})
                fps_b = replica_fps(graph, batched_path, cfg["cpus"], cores,
                                    frames=replica_frames(ms, cores), batch=b,
                                    windows=replica_windows(windows, ms, cores, b))
                out({"event": REPLICA_BATCH_EVENT, "model": spec["name"], "size": spec.get("size"),
                     "cluster": cluster, "cores": cores, "batch": b, "fps": fps_b,
                     "unbatched_fps": fps})
                count += 1
    return count


def measure_sessions(section: dict[str, Any], files: dict[str, str], out: Emit) -> int:
    """Each ONNX model alone through onnxruntime on its cores (seeded float inputs), in the
    order given, until ``budget_s`` is spent: the host sends the heaviest first."""
    import numpy as np

    from edgedeploy.runtime.model_timing import paired_ms, session_ms

    start, count = time.monotonic(), 0
    reps = int(section.get("reps", 5))
    for one in section.get("sessions") or []:
        if time.monotonic() - start > float(section.get("budget_s", float("inf"))):
            break
        rng = np.random.default_rng(1)
        feeds = {t["name"]: rng.standard_normal(t["shape"]).astype(np.float32)
                 for t in one["inputs"]}
        if one.get("against"):
            ms, against = paired_ms(files[one["onnx"]], files[one["against"]], feeds,
                                    one["cpus"], reps)
            out({"event": "session", "key": one["key"], "ms": ms, "against_ms": against})
        else:
            out({"event": "session", "key": one["key"],
                 "ms": session_ms(files[one["onnx"]], feeds, one["cpus"], reps=reps)})
        count += 1
    return count


def requested_opaque_layers(specs: Sequence[dict[str, Any]], files: dict[str, str]
                            ) -> list[Any]:
    """The model's opaque layers the host cut alone (``{"names", "segment": KEY, "inputs":
    [{"name", "shape", "dtype"}]}``), with seeded inputs made here as the host makes them."""
    import numpy as np

    from edgedeploy.runtime.executor import random_tensor
    from edgedeploy.runtime.model_timing import OpaqueLayer

    rng = np.random.default_rng(0)
    return [OpaqueLayer(tuple(s["names"]), files[s["segment"]],
                        {t["name"]: random_tensor(t["shape"], np.dtype(t["dtype"]), rng)
                         for t in s["inputs"]}) for s in specs]


def run(request: dict[str, Any], out: Emit = emit) -> int:
    """Check, then measure the request's sections; returns how many results were sent."""
    if int(request.get("protocol", PROTOCOL)) != PROTOCOL:
        raise ProbeFailure("request", f"request protocol {request.get('protocol')!r}, this "
                           f"probe speaks {PROTOCOL}", EXIT_REQUEST)
    check_packages(needed_packages(request))
    cpus = available_cpus()
    check_cpus(request, cpus)
    out({"event": "start", "probe": os.path.abspath(__file__), "python": sys.executable,
         "protocol": PROTOCOL, "runtime": versions(), "cpus": cpus})
    start = time.monotonic()
    measured = 0
    if request.get("layers"):
        measured += measure_layers(request["layers"], out)
        pin_process(cpus)
    if request.get("models"):
        measured += measure_models(request["models"], dict(request.get("files") or {}), out,
                                   cpus)
        pin_process(cpus)
    if request.get("sessions"):
        measured += measure_sessions(request["sessions"], dict(request.get("files") or {}), out)
    out({"event": "done", "measured": measured,
         "elapsed_s": round(time.monotonic() - start, 3)})
    return measured


def read_request(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        request = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ProbeFailure("request", f"cannot read the request {path}: {exc}",
                           EXIT_REQUEST) from None
    if not isinstance(request, dict):
        raise ProbeFailure("request", "the request is not a JSON object", EXIT_REQUEST)
    return request


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgedeploy.runtime.probe",
                                     description="time layers and whole models on this board")
    parser.add_argument("--request", default="-", help="request JSON file ('-': stdin)")
    args = parser.parse_args(argv)
    try:
        run(read_request(args.request))
    except ProbeFailure as exc:
        emit({"event": "error", "kind": exc.kind, "message": str(exc), **exc.extra})
        return exc.code
    except Exception as exc:  # reported to the host as one line, with the tail of the trace
        emit({"event": "error", "kind": "crash", "message": f"{type(exc).__name__}: {exc}",
              "detail": traceback.format_exc()[-2000:]})
        return EXIT_CRASH
    return 0


if __name__ == "__main__":
    sys.exit(main())
