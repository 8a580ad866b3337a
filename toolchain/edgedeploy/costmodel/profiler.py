"""The profiler: measure designed layer shapes x primitives x core counts within a time budget.

Measurement is behind one callable, :data:`Measure` (descriptor, primitive, configuration) ->
:class:`Measurement`, so a transport other than this process (SSH, a board twin) plugs in
without touching the scheduling. :class:`LocalMeasure` runs the runtime's own primitives (and a
one-node session for ``onnxruntime``) here, pinned to the configuration's cores with BLAS
bounded to as many threads: warm-up, then the median of repetitions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edgedeploy.costmodel.configs import CoreConfig, config_matrix, core_configs
from edgedeploy.costmodel.features import ONNXRUNTIME, descriptor_matrix, primitive_key
from edgedeploy.costmodel.model import candidates
from edgedeploy.costmodel.prior import prior_ms
from edgedeploy.costmodel.profile import Sample
from edgedeploy.runtime import affinity, ir
from edgedeploy.runtime.vocab import LITERT
from edgedeploy.schemas.target import Target

#: Target wall time of the timed repetitions of one measurement, and their bounds.
REP_TARGET_MS = 40.0
MIN_REPS, MAX_REPS = 3, 15
#: A run slower than this is timed twice after the warm-up (huge layers, slow primitives).
SLOW_RUN_MS = 400.0
#: Relative interquartile spread above which a measurement is taken again, and how often.
NOISY_SPREAD = 0.25
RETRIES = 2


@dataclass(frozen=True)
class Measurement:
    ms: float
    reps: int
    spread: float


Measure = Callable[[ir.Descriptor, str, CoreConfig], Measurement]
#: progress(elapsed_s, budget_s, samples_done, eta_s, label)
Progress = Callable[[float, float, int, float, str], None]


def _time_runs(fn: Callable[[], object]) -> Measurement:
    t0 = time.perf_counter()
    fn()  # warm-up: caches, page faults, BLAS thread start
    first = (time.perf_counter() - t0) * 1000.0
    if first > SLOW_RUN_MS:  # two timed runs; their disagreement is the spread
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - t0) * 1000.0)
        return Measurement(min(runs), 2, abs(runs[0] - runs[1]) / min(runs))
    reps = int(np.clip(REP_TARGET_MS / max(first, 1e-3), MIN_REPS, MAX_REPS))
    times = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - t0) * 1000.0
    # Interference from other processes only ever adds time (a preempted BLAS thread stalls
    # its barrier for a whole time slice), so the layer's own cost is the median of the
    # faster half of the repetitions, not of all of them.
    fast = np.sort(times)[: max(1, (reps + 1) // 2)]
    med = float(np.median(fast))
    q1, q3 = np.percentile(times, [25, 75])
    return Measurement(med, reps, float((q3 - q1) / med) if med > 0 else 0.0)


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
    """Measures on this host; restores the process's CPU affinity when closed.

    Each measurement: warm-up, then repetitions for about REP_TARGET_MS (3 to 15); the result is
    the median of the faster half of them (see :func:`_time_runs`).
    """

    def __init__(self, target: Target, seed: int = 0) -> None:
        self.target = target
        self._rng = np.random.default_rng(seed)
        self._saved = affinity.available_cpus()

    def __call__(self, d: ir.Descriptor, primitive: str, config: CoreConfig) -> Measurement:
        """One measurement, repeated (up to RETRIES times) while its repetitions disagree by more
        than NOISY_SPREAD: a burst of load from another process; the quietest attempt wins."""
        best = self._once(d, primitive, config)
        for _ in range(RETRIES):
            if best.spread <= NOISY_SPREAD:
                break
            again = self._once(d, primitive, config)
            best = again if again.ms < best.ms else best
        return best

    def _once(self, d: ir.Descriptor, primitive: str, config: CoreConfig) -> Measurement:
        cpus = config.cpus(self.target)
        affinity.pin_process(cpus)
        x = self._rng.standard_normal((d.n, d.c_in, d.h, d.w), dtype=np.float32)
        w = self._rng.standard_normal((d.c_out, d.c_in // d.groups, d.kernel_h, d.kernel_w),
                                      dtype=np.float32) * 0.1
        b = np.zeros(d.c_out, dtype=np.float32)
        if primitive == ONNXRUNTIME:
            from edgedeploy.runtime.engines.onnxruntime import OrtSegment

            seg = OrtSegment(conv_onnx(d, w, b), cpus=cpus)
            feeds = {"x": x}
            return _time_runs(lambda: seg.run(feeds))
        from edgedeploy.runtime import primitives
        from edgedeploy.runtime.primitives.registry import Activation

        prim = primitives.get(primitive)
        packed = prim.transform_weights(d, {"weight": w, "bias": b})
        if prim.layout_in == "nhwc":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        act = Activation()
        with affinity.limit_blas_threads(len(cpus)):
            return _time_runs(lambda: prim.run(d, packed, x, act))

    def close(self) -> None:
        affinity.pin_process(self._saved)


def measurable(d: ir.Descriptor) -> list[str]:
    """Candidates the profiler can time as one layer: primitives, native ops and onnxruntime.
    LiteRT is priced by the prior beside onnxruntime (a one-op .tflite writer is not here yet)
    and calibrated by the whole-model runs of ``costmodel.segments``."""
    return [p for p in candidates(d) if p != LITERT]


def tasks_for(target: Target, shapes: Sequence[ir.Descriptor],
              configs: Sequence[CoreConfig] | None = None, gpu: bool = False
              ) -> Iterator[tuple[ir.Descriptor, str, CoreConfig]]:
    """Every (shape, applicable primitive, CPU configuration), shape by shape; with ``gpu``
    (a back-end that can run onnxruntime on the GPU, e.g. a twin) also ``onnxruntime`` on it."""
    cfgs = [c for c in (configs or core_configs(target)) if gpu or not c.is_gpu]
    for d in shapes:
        for prim in measurable(d):
            for cfg in cfgs:
                if not cfg.is_gpu or prim == ONNXRUNTIME:
                    yield d, prim, cfg


def run_profile(target: Target, shapes: Sequence[ir.Descriptor], budget_s: float,
                measure: Measure, tag: str = "fit", progress: Progress | None = None,
                configs: Sequence[CoreConfig] | None = None, *, gpu: bool = False,
                clock: Callable[[], float] = time.monotonic) -> list[Sample]:
    """Measure tasks in order until the budget is spent; returns the samples taken.

    A task whose expected time (the prior scaled by how the measurements so far compare with
    it) would overrun the budget is skipped, so a small budget still yields many samples.
    ``clock`` is what the budget is counted in (a board twin passes its simulated clock).
    """
    tasks = list(tasks_for(target, shapes, configs, gpu))
    all_cfgs = core_configs(target)
    cidx = {c: i for i, c in enumerate(all_cfgs)}
    expect = prior_ms(descriptor_matrix([t[0] for t in tasks]),
                      np.array([primitive_key(t[1]) for t in tasks], dtype=int),
                      config_matrix(target, all_cfgs)[[cidx[t[2]] for t in tasks]]) \
        if tasks else np.zeros(0)
    start = clock()
    samples: list[Sample] = []
    ratios: list[float] = []
    for i, (d, prim, cfg) in enumerate(tasks):
        elapsed = clock() - start
        scale = float(np.median(ratios)) if ratios else 1.0
        # warm-up + reps + setup, about 6 runs of an ordinary layer
        cost_s = expect[i] * scale * 6 / 1000.0
        if elapsed + cost_s > budget_s:
            if elapsed >= budget_s:
                break
            continue
        m = measure(d, prim, cfg)
        samples.append(Sample(d, prim, cfg, m.ms, m.reps, m.spread, tag))
        if np.isfinite(expect[i]) and expect[i] > 0:
            ratios.append(m.ms / expect[i])
        if progress is not None:
            elapsed = clock() - start
            left = float(np.sum(expect[i + 1:])) * scale * 6 / 1000.0
            progress(elapsed, budget_s, len(samples), min(budget_s - elapsed, left),
                     f"{prim} {cfg.key} c{d.c_in}->{d.c_out} {d.h}x{d.w} k{d.kernel_h}")
    return samples
