"""`edgedeploy bench layers MODEL`: every conv layer x every applicable primitive vs onnxruntime's
own kernel, on the same inputs, candidates alternated round by round (Mulder et al. motivate
per-layer selection: the best primitive depends on the layer)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgedeploy.runtime import ir, primitives
from edgedeploy.runtime.affinity import limit_blas_threads
from edgedeploy.runtime.primitives import NHWC, NO_ACTIVATION
from edgedeploy.runtime.vocab import ORT_ERRORS_ONLY

MEMORY_CAP = 768 * 2**20  # skip a primitive whose packed weights + workspace exceed this


def _ort_conv(d: ir.Descriptor, weights: dict[str, np.ndarray], threads: int) -> Callable:
    import onnxruntime as ort

    from edgedeploy.costmodel.profiler import conv_onnx

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = ORT_ERRORS_ONLY
    sess = ort.InferenceSession(conv_onnx(d, weights["weight"], weights["bias"]), opts,
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def candidates(d: ir.Descriptor, threads: int, seed: int = 0) -> dict[str, Callable[[], object]]:
    """Zero-argument callables, one per applicable primitive and onnxruntime, shared inputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((d.n, d.c_in, d.h, d.w)).astype(np.float32)
    weights = {
        "weight": (rng.standard_normal((d.c_out, d.c_in // d.groups, d.kernel_h, d.kernel_w))
                   * np.sqrt(2.0 / max(1, d.c_in // d.groups * d.kernel_h * d.kernel_w))
                   ).astype(np.float32),
        "bias": rng.standard_normal(d.c_out).astype(np.float32),
    }
    ort_fn = _ort_conv(d, weights, threads)
    out: dict[str, Callable[[], object]] = {"onnxruntime": lambda: ort_fn(x)}
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for p in primitives.applicable(d):
        packed = p.transform_weights(d, weights)
        if p.workspace_bytes(d) + sum(a.nbytes for a in packed.values()) > MEMORY_CAP:
            continue
        xin = x_nhwc if p.layout_in == NHWC else x
        out[p.name] = lambda p=p, packed=packed, xin=xin: p.run(d, packed, xin, NO_ACTIVATION)
    return out


def time_candidates(cands: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median milliseconds of each candidate; round 0 warms up, rounds alternate candidates."""
    samples: dict[str, list[float]] = {k: [] for k in cands}
    for r in range(runs + 1):
        for name, fn in cands.items():
            t0 = time.perf_counter()
            fn()
            if r:
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def bench_layers(graph: ir.Graph, *, threads: int = 1, runs: int | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time each distinct conv layer of ``graph``; JSON-ready, with ratios vs onnxruntime."""
    seen: dict[tuple, str] = {}
    layers = []
    for layer in graph.layers:
        if layer.op != ir.CONV2D:
            continue
        d = layer.descriptor.with_(activation="none")
        key = tuple(d.to_dict().items())
        if key in seen:
            continue
        seen[key] = layer.name
        layers.append((layer.name, d))
    rows = []
    with limit_blas_threads(threads):
        for k, (name, d) in enumerate(layers):
            if progress:
                progress(f"[{k + 1}/{len(layers)}] {name}")
            n = runs or (3 if d.macs > 1e9 else 5 if d.macs > 2e8 else 9)
            times = time_candidates(candidates(d, threads), n)
            ratios = {p: times["onnxruntime"] / t for p, t in times.items() if p != "onnxruntime"}
            best = min(times, key=times.__getitem__)
            rows.append({"name": name, "descriptor": d.to_dict(), "times_ms": times,
                         "ratio_vs_ort": ratios, "best": best})
    return {"model": graph.name, "threads": threads,
            "ratio": "ort_ms / primitive_ms (above 1: faster than onnxruntime)", "layers": rows}
