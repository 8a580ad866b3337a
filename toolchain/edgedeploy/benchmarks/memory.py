"""What a runner's memory should be, to compare with what it is (issue 3: peak RSS <= 1.5 x
(weights + largest live activations + workspaces)).

The estimate walks the executor's steps with the same tensor lifetimes the executor uses: at
each step the live activations (inputs not yet released, outputs produced) plus that step's
primitive workspace; the peak of that walk plus all (packed) weights is the budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgedeploy.runtime.executor import GraphExecutor


def memory_budget(ex: GraphExecutor) -> dict[str, int]:
    """Bytes of weights, the largest live activation set + workspace, and their sum."""
    sizes = {name: int(np.prod(t.shape)) * 4 for name, t in ex.graph.tensors.items()}
    for t in ex.graph.inputs:
        sizes[t.name] = int(np.prod(t.shape)) * 4
    live = {t: sizes[t] for t in ex.inputs}
    peak = 0
    for k, step in enumerate(ex.steps):
        work = (step.primitive.workspace_bytes(step.layers[0].descriptor)
                if step.primitive is not None else 0)
        produced = {t: sizes.get(t, 0) for t in step.outputs}
        peak = max(peak, sum(live.values()) + sum(produced.values()) + work)
        live.update(produced)
        for t in step.inputs:
            if ex._last_use.get(t, -1) <= k and t not in ex.outputs:
                live.pop(t, None)
    weights = ex.weight_bytes()
    return {"weights": weights, "activations_and_workspace": peak, "budget": weights + peak}


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (or VmHWM: its peak) from /proc, in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def measure_runner_memory(graph: Any, choices: dict[str, str], segment_provider: Any = None,
                          frames: int = 3) -> dict[str, Any]:
    """Run ``frames`` frames in this process; RSS growth over the baseline vs the budget.

    Call it in a fresh process (the peak is per process): the baseline is the RSS after the
    interpreter, numpy and the runtime are loaded, before the model's weights are.
    """
    from edgedeploy.runtime.executor import random_inputs

    baseline = rss_bytes()
    ex = GraphExecutor(graph, choices, segment_provider=segment_provider)
    feeds = random_inputs(graph)
    for _ in range(frames):
        ex.run(feeds)
    peak = rss_bytes("VmHWM")
    budget = memory_budget(ex)
    grown = peak - baseline
    return {**budget, "baseline_rss": baseline, "peak_rss": peak, "peak_growth": grown,
            "ratio": grown / budget["budget"] if budget["budget"] else None}
