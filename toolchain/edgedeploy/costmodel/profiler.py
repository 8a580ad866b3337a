"""The profiler: measure designed layer shapes x primitives x core counts within a time budget.

Measurement is behind one callable, :data:`Measure` (descriptor, primitive, configuration) ->
:class:`Measurement`, so a transport other than this process (SSH, a board twin) plugs in
without touching the scheduling. :class:`LocalMeasure` times here with the runtime's
:class:`~edgedeploy.runtime.layer_timing.LayerTimer` -- the very code a board runs when it is
profiled over SSH (``runtime.probe``): pinned to the configuration's cores with BLAS bounded to
as many threads, warm-up, then the median of the faster half of the repetitions. A measure that
also has ``run_batch`` (a board reached over SSH) gets the whole task list at once and spends
the budget on the board, where per-task round trips would eat it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np

from edgedeploy.costmodel.configs import CoreConfig, config_matrix, core_configs
from edgedeploy.costmodel.features import ONNXRUNTIME, descriptor_matrix, primitive_key
from edgedeploy.costmodel.model import candidates
from edgedeploy.costmodel.prior import prior_ms
from edgedeploy.costmodel.profile import Sample
from edgedeploy.runtime import affinity, ir
from edgedeploy.runtime.layer_timing import (  # noqa: F401 - the profiler's public constants
    MAX_REPS,
    MIN_REPS,
    NOISY_SPREAD,
    REP_TARGET_MS,
    RETRIES,
    RUNS_PER_TASK,
    SLOW_RUN_MS,
    LayerTimer,
    Measurement,
    spend_budget,
)
from edgedeploy.runtime.vocab import LITERT
from edgedeploy.schemas.target import Target

Measure = Callable[[ir.Descriptor, str, CoreConfig], Measurement]
#: progress(elapsed_s, budget_s, samples_done, eta_s, label)
Progress = Callable[[float, float, int, float, str], None]
Task = tuple[ir.Descriptor, str, CoreConfig]


class BatchMeasure(Protocol):
    """A measure that takes the whole ordered task list and spends the budget itself."""

    def run_batch(self, tasks: Sequence[Task], expect_ms: np.ndarray, budget_s: float,
                  progress: Progress | None) -> list[tuple[int, Measurement]]: ...


def conv_onnx(d: ir.Descriptor, weight: np.ndarray, bias: np.ndarray | None = None) -> bytes:
    """A one-node ONNX model of the conv ``d`` (the ``onnxruntime`` choice):
    input "x", output "y"."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(weight, np.float32), "w")]
    if bias is not None:
        inits.append(numpy_helper.from_array(np.asarray(bias, np.float32), "b"))
    node = helper.make_node(
        "Conv", ["x", "w", "b"][:len(inits) + 1], ["y"], kernel_shape=[d.kernel_h, d.kernel_w],
        strides=[d.stride_h, d.stride_w], dilations=[d.dilation_h, d.dilation_w],
        pads=[d.pad_top, d.pad_left, d.pad_bottom, d.pad_right], group=d.groups)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [d.n, d.c_in, d.h, d.w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [d.n, d.c_out, d.h_out, d.w_out])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class LocalMeasure:
    """Measures on this host; restores the process's CPU affinity when closed."""

    def __init__(self, target: Target, seed: int = 0) -> None:
        self.target = target
        self._timer = LayerTimer(seed)
        self._saved = affinity.available_cpus()

    def __call__(self, d: ir.Descriptor, primitive: str, config: CoreConfig) -> Measurement:
        return self._timer(d, primitive, config.cpus(self.target))

    def close(self) -> None:
        affinity.pin_process(self._saved)


def measurable(d: ir.Descriptor) -> list[str]:
    """Candidates the profiler can time as one layer: primitives, native ops and onnxruntime.
    LiteRT is priced by the prior beside onnxruntime (a one-op .tflite writer is not here yet)
    and calibrated by the whole-model runs of ``costmodel.segments``."""
    return [p for p in candidates(d) if p != LITERT]


#: Configurations each shape is measured on in the first pass (see :func:`tasks_for`).
FIRST_PASS_CONFIGS = 2


def tasks_for(target: Target, shapes: Sequence[ir.Descriptor],
              configs: Sequence[CoreConfig] | None = None, gpu: bool = False
              ) -> Iterator[tuple[ir.Descriptor, str, CoreConfig]]:
    """Every (shape, applicable primitive, CPU configuration); with ``gpu`` (a back-end that
    can run onnxruntime on the GPU, e.g. a twin) also ``onnxruntime`` on it.

    In two passes: first each shape on FIRST_PASS_CONFIGS configurations, rotating so that
    every configuration is covered across shapes, then each shape on the rest. A budget that
    ends in the first pass has seen two to four times as many shapes: a 60 s profile of a board
    twin with 4-6 configurations measured 9-10 shapes on all of them, and its held-out figures
    were mape 0.65, tau 0.41, top-1 0.39 (six twin seeds); rotating, 18-36 shapes, and 0.23,
    0.65, 0.59. Shapes, not configurations, are what the correction is short of: a core count's
    effect is one trend shared by every shape."""
    cfgs = [c for c in (configs or core_configs(target)) if gpu or not c.is_gpu]
    first = min(FIRST_PASS_CONFIGS, len(cfgs))
    picks = [[cfgs[(i + k * len(cfgs) // first) % len(cfgs)] for k in range(first)]
             for i in range(len(shapes))]
    for only_first in (True, False):
        for d, picked in zip(shapes, picks, strict=True):
            for prim in measurable(d):
                for cfg in cfgs:
                    if (cfg in picked) == only_first and (not cfg.is_gpu or prim == ONNXRUNTIME):
                        yield d, prim, cfg


def label(task: Task) -> str:
    """How progress names a task."""
    d, prim, cfg = task
    return f"{prim} {cfg.key} c{d.c_in}->{d.c_out} {d.h}x{d.w} k{d.kernel_h}"


def expected_ms(target: Target, tasks: Sequence[Task]) -> np.ndarray:
    """The prior's time of each task: what the budget is planned with."""
    if not tasks:
        return np.zeros(0)
    all_cfgs = core_configs(target)
    cidx = {c: i for i, c in enumerate(all_cfgs)}
    return prior_ms(descriptor_matrix([t[0] for t in tasks]),
                    np.array([primitive_key(t[1]) for t in tasks], dtype=int),
                    config_matrix(target, all_cfgs)[[cidx[t[2]] for t in tasks]])


def run_profile(target: Target, shapes: Sequence[ir.Descriptor], budget_s: float,
                measure: Measure, tag: str = "fit", progress: Progress | None = None,
                configs: Sequence[CoreConfig] | None = None, *, gpu: bool = False,
                clock: Callable[[], float] = time.monotonic) -> list[Sample]:
    """Measure tasks in order until the budget is spent; returns the samples taken.

    A task whose expected time (the prior scaled by how the measurements so far compare with
    it) would overrun the budget is skipped, so a small budget still yields many samples
    (:func:`~edgedeploy.runtime.layer_timing.spend_budget`). ``clock`` is what the budget is
    counted in (a board twin passes its simulated clock).
    """
    tasks = list(tasks_for(target, shapes, configs, gpu))
    expect = expected_ms(target, tasks)
    batch = getattr(measure, "run_batch", None)
    if batch is not None:
        done = batch(tasks, expect, budget_s, progress)
    else:
        taken = [0]

        def on_done(i: int, m: Measurement, elapsed: float, eta: float) -> None:
            taken[0] += 1
            if progress is not None:
                progress(elapsed, budget_s, taken[0], eta, label(tasks[i]))

        done = spend_budget(expect, budget_s, lambda i: measure(*tasks[i]), clock=clock,
                            on_done=on_done, groups=[t[1] for t in tasks],
                            packs=[(t[0], t[1]) for t in tasks])
    return [Sample(tasks[i][0], tasks[i][1], tasks[i][2], m.ms, m.reps, m.spread, tag)
            for i, m in done]
