"""Composing stage times into a pipeline's throughput and latency.

A pipeline of stages s = 1..S, stage s taking ``t_s`` ms per frame on its configuration and
replicated ``r_s`` times, with ``x_s`` ms to hand its input over from the previous stage:

* each replica of a stage serves every r_s-th frame, so the stage's period is
  ``(t_s + x_s) / r_s`` (the receiving stage pays the copy of its input out of the queue);
* the slowest period bounds the pipeline (the bounded queues between stages make the others
  wait): ``throughput_fps = 1000 / max_s((t_s + x_s) / r_s)``;
* one frame goes through every stage once: ``latency_ms = sum_s (t_s + x_s)`` (queueing delay
  at steady state is not modelled: the bottleneck stage's queue stays short with backpressure).

This is Pipe-it's model (Wang et al. 2019, section 4) with replication added.
"""

from __future__ import annotations

from collections.abc import Sequence


def predict_pipeline(stage_times_ms: Sequence[float], replicas: Sequence[int] | None = None,
                     transfers_ms: Sequence[float] | None = None) -> dict[str, float]:
    """Throughput (frames/s) and latency (ms) of a pipeline; see the module docstring.

    ``transfers_ms[s]`` is the hand-over into stage ``s`` (0 for the first stage, whose input
    arrives from the caller); both optional lists default to 1 replica and no transfer.
    """
    n = len(stage_times_ms)
    if n == 0:
        raise ValueError("a pipeline needs at least one stage")
    reps = list(replicas) if replicas is not None else [1] * n
    xfer = list(transfers_ms) if transfers_ms is not None else [0.0] * n
    if len(reps) != n or len(xfer) != n:
        raise ValueError("stage_times_ms, replicas and transfers_ms must have the same length")
    if any(r < 1 for r in reps) or any(t < 0 for t in stage_times_ms) or any(x < 0 for x in xfer):
        raise ValueError("replicas must be >= 1 and times >= 0")
    periods = [(t + x) / r for t, x, r in zip(stage_times_ms, xfer, reps, strict=False)]
    bottleneck = max(periods)
    return {
        "throughput_fps": 1000.0 / bottleneck if bottleneck > 0 else float("inf"),
        "latency_ms": float(sum(stage_times_ms) + sum(xfer)),
        "bottleneck_stage": int(periods.index(bottleneck)),
        "stage_period_ms": [float(p) for p in periods],
    }
