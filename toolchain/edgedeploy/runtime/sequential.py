"""Single-process sequential execution: the baseline a pipeline must beat, same result shape."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .affinity import available_cpus
from .errors import InputError
from .metrics import PipelineResult, SampleBuffer, percentile_ms, stage_metrics, throughput_fps
from .pipeline_spec import KEEP, Frames, StageFn


def run_sequential(stages: Sequence[StageFn | tuple[str, StageFn]], frames: Frames,
                   n_frames: int, warmup: int = 0, keep_outputs: str = "last") -> PipelineResult:
    """Run the stages one after another in this process: the baseline a pipeline must beat.

    Same result shape as :meth:`Pipeline.run`: one "stage" per callable (named ``stage<i>``
    unless given as ``(name, callable)``), with wait 0 since nothing queues.
    """
    if keep_outputs not in KEEP:
        raise InputError(f"keep_outputs must be one of {KEEP}, got {keep_outputs!r}")
    named = [s if isinstance(s, tuple) else (f"stage{i}", s) for i, s in enumerate(stages)]
    service = [SampleBuffer() for _ in named]
    latency = SampleBuffer()
    source = None if callable(frames) else iter(frames)
    outputs: list[list[np.ndarray]] = []
    t_first = t_last = t_start = 0.0
    for k in range(warmup + n_frames):
        tensors = frames(k) if source is None else next(source, None)
        if tensors is None:
            raise InputError(f"frames ran out after {k} of {warmup + n_frames}")
        t_in = time.perf_counter()
        for (_, fn), buf in zip(named, service, strict=False):
            t0 = time.perf_counter()
            tensors = fn(list(tensors))
            if k >= warmup:
                buf.add(time.perf_counter() - t0)
        t_last = time.perf_counter()
        if k == warmup:
            t_start, t_first = t_in, t_last
        if k >= warmup:
            latency.add(t_last - t_in)
            if keep_outputs == "all" or (keep_outputs == "last" and k == warmup + n_frames - 1):
                outputs.append([np.array(t) for t in tensors])
    wall = max(t_last - t_start, 1e-9)
    cpus = available_cpus()
    stage_list = [stage_metrics(name, cpus, [cpus], buf.values(), np.zeros(0), buf.count,
                                buf.total, wall)
                  for (name, _), buf in zip(named, service, strict=True)]
    lat = latency.values()
    return PipelineResult(
        throughput_fps=throughput_fps([t_first], t_last, n_frames, wall),
        latency_ms_p50=percentile_ms(lat, 50), latency_ms_p99=percentile_ms(lat, 99),
        latency_ms_mean=float(np.mean(lat) * 1e3) if lat.size else 0.0, stages=stage_list,
        frames=n_frames, wall_s=wall, mode="sequential",
        outputs=outputs if keep_outputs != "none" else None)
