"""Runs a contiguous range of an IR graph with a per-layer choice of primitive or engine.

A *choice* names, for each layer, how it runs (``runtime.vocab``):

* a conv primitive from :mod:`edgedeploy.runtime.primitives` (``"winograd_f4x3/nchw"`` ...);
* ``"native"`` for a non-conv op run by :mod:`edgedeploy.runtime.ops`;
* a segment engine (``"onnxruntime"``, ``"litert"``, ``"onnxruntime-cuda"`` ...): maximal runs of
  consecutive layers with the same engine become one session of that engine over the sub-graph.
  Its model comes from a *segment provider* (the host cuts it from the source model, a bundle
  ships it as a file) and it is opened through the engine registry with the stage's resources.

Tensors carry a layout (NCHW or NHWC); where a primitive's or an engine's layout differs from the
tensor's, a layout-transform primitive is inserted, exactly as the planner costs it. The range's
own inputs and outputs are in the IR's layout unless ``edges`` says otherwise (a model's edges in
its own layout: ``runtime.layouts``). Tensors are freed after
their last reader so peak memory follows the live set, not the graph size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.engines import (
    EngineOptions,
    engine_spec,
    is_segment_choice,
    open_segment,
)
from edgedeploy.runtime.errors import ExecutionError
from edgedeploy.runtime.stage_weights import weight_nbytes
from edgedeploy.runtime.vocab import LITERT, NATIVE, NCHW, ONNX, ONNXRUNTIME, TFLITE

#: (engine, segment input names, segment output names) -> the segment's model bytes (or a path).
SegmentProvider = Callable[[str, list[str], list[str]], "bytes | str"]


@dataclass
class _Step:
    """One executable unit: a single layer, or an onnxruntime segment of several layers."""

    kind: str  # "primitive" | "op" | "onnxruntime"
    layers: list[ir.Layer]
    inputs: list[str]
    outputs: list[str]
    layout_in: str = NCHW
    layout_out: str = NCHW
    primitive: object | None = None
    packed: Mapping[str, np.ndarray] = field(default_factory=dict)
    activation: object | None = None
    session: object | None = None
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)
    weight_nbytes: int = 0  # the layers' weights a segment engine holds (for the budget)
    engine: str = ""


def segment_io(graph: ir.Graph, start: int, stop: int) -> tuple[list[str], list[str]]:
    """Tensors crossing the boundary of ``graph.layers[start:stop]`` (deterministic order).

    Inputs: read inside but produced before ``start`` (or graph inputs). Outputs: produced inside
    and read at or after ``stop``, or graph outputs.
    """
    produced_inside: list[str] = []
    inputs: list[str] = []
    for layer in graph.layers[start:stop]:
        for t in layer.inputs:
            if t not in produced_inside and t not in inputs:
                inputs.append(t)
        produced_inside.extend(layer.outputs)
    later = {t for layer in graph.layers[stop:] for t in layer.inputs}
    graph_outputs = {t.name for t in graph.outputs}
    outputs = [t for t in produced_inside if t in later or t in graph_outputs]
    return inputs, outputs


def default_choice(layer: ir.Layer, fmt: str = ONNX) -> str:
    """A choice that needs no cost model (the planner's choices replace it); an opaque layer
    goes to the CPU segment engine of the model's format (``fmt``)."""
    if layer.op == ir.OPAQUE:
        return LITERT if fmt == TFLITE else ONNXRUNTIME
    if layer.op != ir.CONV2D:
        return NATIVE
    from edgedeploy.runtime import primitives

    d = layer.descriptor
    preferred = ["depthwise/nchw", "gemm_1x1/nchw", "winograd_f4x3/nchw", "im2col_gemm/nchw"]
    names = {p.name for p in primitives.applicable(d)}
    for name in preferred:
        if name in names and not (name.startswith("winograd") and min(d.c_in, d.c_out) < 96):
            return name
    return "im2col_gemm/nchw"


class GraphExecutor:
    """Executes ``graph.layers[start:stop]`` with the given choices, in one process.

    Offline work (weight transforms, onnxruntime session creation) happens in ``__init__`` so
    ``run`` is the hot path only.

    What stays resident: packed weights of primitive layers, the raw weights of native ops, and
    the onnxruntime sessions. Raw weights of primitive and onnxruntime layers are read from
    ``graph.weights`` only while compiling and never kept, so when that mapping loads on access
    (a bundle's :class:`~edgedeploy.runtime.runner_config.NpzWeights`) they leave the process
    once packed. A plain dict is the caller's (several executors may share one graph): it is
    never mutated here.
    """

    def __init__(
        self,
        graph: ir.Graph,
        choices: Mapping[str, str] | None = None,
        *,
        start: int = 0,
        stop: int | None = None,
        segment_provider: SegmentProvider | None = None,
        cpus: Sequence[int] | None = None,
        packed_weights: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        options: EngineOptions | None = None,
        edges: Mapping[str, str] | None = None,
    ) -> None:
        self.graph = graph
        #: The layout of each input fed and output returned where it is not NCHW.
        self.edges = dict(edges or {})
        self.start = start
        self.stop = len(graph.layers) if stop is None else stop
        self.inputs, self.outputs = segment_io(graph, self.start, self.stop)
        fmt = str(graph.source.get("format") or ONNX)
        self.choices = {
            layer.name: (choices or {}).get(layer.name) or default_choice(layer, fmt)
            for layer in graph.layers[self.start:self.stop]
        }
        self._cpus = list(cpus) if cpus else None
        base = options or EngineOptions()
        self._options = EngineOptions(
            cpus=tuple(cpus) if cpus else base.cpus, threads=base.threads,
            device_id=base.device_id, fp16=base.fp16, cache_dir=base.cache_dir,
            allow_spinning=base.allow_spinning and self._one_segment())
        self._segment_provider = segment_provider
        self._packed_given = packed_weights or {}
        self.steps = self._compile()
        self._last_use = self._last_uses()
        # Start-up inputs are spent: keep no reference to segment models or given packings.
        self._segment_provider = None
        self._packed_given = {}

    def _one_segment(self) -> bool:
        """Every layer runs in one engine segment, the stage's only step. Only then may the
        engine's idle threads spin: between a segment's runs the stage's other steps (native
        layers on numpy's threads, other segments with thread pools of their own) need the
        cores the spinners hold. ZFNet-512 on 2 cores as four onnxruntime segments around
        native pooling and dense layers took 157 ms a frame spinning, 75 ms not."""
        picked = set(self.choices.values())
        return len(picked) == 1 and is_segment_choice(next(iter(picked)))

    # --- compilation ---------------------------------------------------------------------------
    def _compile(self) -> list[_Step]:
        steps: list[_Step] = []
        layers = self.graph.layers[self.start:self.stop]
        i = 0
        while i < len(layers):
            layer = layers[i]
            choice = self.choices[layer.name]
            if is_segment_choice(choice):
                j = i
                while j < len(layers) and self.choices[layers[j].name] == choice:
                    j += 1
                steps.append(self._segment_step(choice, self.start + i, self.start + j))
                i = j
                continue
            if layer.op == ir.CONV2D:
                steps.append(self._primitive_step(layer, choice))
            elif layer.op == ir.OPAQUE:
                op_type = layer.attrs.get("onnx_op_type") or layer.attrs.get("tflite_op", "opaque")
                raise ExecutionError(
                    f"layer {layer.name!r} ({op_type}) has no native implementation",
                    hint="run it inside a segment engine (choice 'onnxruntime' or 'litert')")
            else:
                if choice != NATIVE:
                    raise ExecutionError(f"layer {layer.name!r} ({layer.op}): choice {choice!r} is "
                                         "not a primitive of this op",
                                         hint="use 'native' or a segment engine")
                weights = {role: self.graph.weights[key] for role, key in layer.weights.items()}
                steps.append(_Step("op", [layer], list(layer.inputs), list(layer.outputs),
                                   weights=weights))
            i += 1
        return steps

    def _primitive_step(self, layer: ir.Layer, name: str) -> _Step:
        from edgedeploy.runtime import primitives
        from edgedeploy.runtime.primitives.registry import Activation

        prim = primitives.get(name)
        if prim.op != ir.CONV2D or not prim.applies(layer.descriptor):
            raise ExecutionError(f"primitive {name!r} does not apply to layer {layer.name!r}",
                                 hint="choose one of: " + ", ".join(
                                     p.name for p in primitives.applicable(layer.descriptor)))
        if layer.name in self._packed_given:
            packed = dict(self._packed_given[layer.name])
        else:
            raw = {role: self.graph.weights[key] for role, key in layer.weights.items()}
            packed = prim.transform_weights(layer.descriptor, raw)
        act = Activation(layer.attrs.get("activation", "none") or "none",
                         dict(layer.attrs.get("activation_params") or {}))
        return _Step("primitive", [layer], list(layer.inputs), list(layer.outputs),
                     layout_in=prim.layout_in, layout_out=prim.layout_out, primitive=prim,
                     packed=packed, activation=act)

    def _segment_step(self, engine: str, start: int, stop: int) -> _Step:
        if self._segment_provider is None:
            raise ExecutionError(f"layers need the {engine} engine but no segment model is "
                                 "available",
                                 hint="run from the source model or a bundle that ships segments")
        inputs, outputs = segment_io(self.graph, start, stop)
        model = self._segment_provider(engine, inputs, outputs)
        session = open_segment(engine, model, self._options)
        del model  # the session holds its own copy of the segment's weights
        layers = list(self.graph.layers[start:stop])
        held = sum(weight_nbytes(self.graph.weights, k) for layer in layers
                   for k in layer.weights.values() if k in self.graph.weights)
        layout = engine_spec(engine).layout  # the engine speaks its own layout
        return _Step("segment", layers, inputs, outputs, layout_in=layout, layout_out=layout,
                     session=session, weight_nbytes=held, engine=engine)

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for k, step in enumerate(self.steps):
            for t in step.inputs:
                last[t] = k
        for t in self.outputs:
            last[t] = len(self.steps)
        return last

    # --- execution -----------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray],
            timings: list[float] | None = None) -> dict[str, np.ndarray]:
        """Run once. ``feeds`` holds every input of the range (NCHW, or as ``edges`` says);
        returns its outputs likewise.

        With ``timings`` given, appends each step's seconds to it (for profiling).
        """
        env: dict[str, np.ndarray] = {}
        layouts: dict[str, str] = {}
        for name in self.inputs:
            if name not in feeds:
                raise ExecutionError(f"missing input tensor {name!r}",
                                     hint=f"this segment reads: {', '.join(self.inputs)}")
            env[name] = np.ascontiguousarray(feeds[name], dtype=tensor_dtype(self.graph, name))
            layouts[name] = self.edges.get(name, NCHW)
        for k, step in enumerate(self.steps):
            t0 = time.perf_counter() if timings is not None else 0.0
            self._run_step(step, env, layouts)
            if timings is not None:
                timings.append(time.perf_counter() - t0)
            for t in step.inputs:
                if self._last_use.get(t, -1) <= k and t not in self.outputs:
                    env.pop(t, None)
        return {name: _to_layout(env[name], layouts[name], self.edges.get(name, NCHW))
                for name in self.outputs}

    def _run_step(self, step: _Step, env: dict[str, np.ndarray], layouts: dict[str, str]) -> None:
        layer = step.layers[0]
        try:
            if step.kind == "primitive":
                x = _to_layout(env[step.inputs[0]], layouts[step.inputs[0]], step.layout_in)
                y = step.primitive.run(layer.descriptor, step.packed, x, step.activation)
                env[step.outputs[0]] = y
                layouts[step.outputs[0]] = step.layout_out
            elif step.kind == "op":
                from edgedeploy.runtime.ops import run_op

                xs = [_to_layout(env[t], layouts[t], NCHW) for t in step.inputs]
                for name, y in zip(step.outputs, run_op(layer, xs, step.weights), strict=True):
                    env[name] = y
                    layouts[name] = NCHW
            else:
                feeds = {t: _to_layout(env[t], layouts[t], step.layout_in) for t in step.inputs}
                result = step.session.run(feeds)
                for name in step.outputs:
                    env[name] = result[name]
                    layouts[name] = step.layout_out
        except ExecutionError:
            raise
        except Exception as exc:  # name the layer: a bare numpy error says nothing useful
            raise ExecutionError(f"layer {layer.name!r} ({layer.op}, {self.choices[layer.name]}) "
                                 f"failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        for step in self.steps:
            if step.session is not None and hasattr(step.session, "close"):
                step.session.close()

    # --- facts for the planner and the memory report -------------------------------------------
    def weight_bytes(self) -> int:
        """Bytes of weights this executor holds: packed for primitives, raw for native ops,
        and the layers' weights inside segment engines (which keep their own copy)."""
        total = 0
        for step in self.steps:
            if step.kind == "primitive":
                total += sum(a.nbytes for a in step.packed.values())
            elif step.kind == "segment":
                total += step.weight_nbytes
            else:
                total += sum(a.nbytes for a in step.weights.values())
        return total


def _to_layout(x: np.ndarray, have: str, want: str) -> np.ndarray:
    """Convert through the registry's layout primitive, the same one the planner prices."""
    if have == want or x.ndim != 4:
        return x
    from edgedeploy.runtime.primitives import NO_ACTIVATION
    from edgedeploy.runtime.primitives.layout import layout_primitive

    prim = layout_primitive(have, want)
    return prim.run(_LAYOUT_DESCRIPTOR, {}, x, NO_ACTIVATION)


_LAYOUT_DESCRIPTOR = ir.Descriptor(op="layout")


def tensor_dtype(graph: ir.Graph, name: str) -> np.dtype:
    """The element type a segment input is fed in: the IR's integer types (uint8, int8, int32
    in quantized graphs; int64 and bool inputs), float32 for every float tensor as before."""
    info = graph.tensors.get(name)
    try:
        dtype = np.dtype(info.dtype) if info is not None else np.dtype(np.float32)
    except TypeError:
        return np.dtype(np.float32)
    return np.dtype(np.float32) if dtype.kind == "f" else dtype


def random_inputs(graph: ir.Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input (NCHW): standard-normal float32 for float inputs,
    the whole range for 8-bit ones (quantized images), 0/1 for wider integers and booleans
    (masks, token ids and indices stay in range)."""
    rng = np.random.default_rng(seed)
    return {t.name: random_tensor(t.shape, np.dtype(t.dtype) if t.dtype else np.dtype(np.float32),
                                  rng) for t in graph.inputs}


def random_tensor(shape: Sequence[int], dtype: np.dtype, rng: np.random.Generator
                  ) -> np.ndarray:
    """One seeded tensor by :func:`random_inputs`' rule for its element type."""
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(np.float32)
    if dtype.kind in "iu" and dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
    return rng.integers(0, 2, size=shape).astype(dtype)


def max_rel_error(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> float:
    """max |got - want| / max |want| over all outputs (the project's one error measure)."""
    worst = 0.0
    for name, ref in want.items():
        ref = np.asarray(ref, dtype=np.float64)
        diff = np.max(np.abs(np.asarray(got[name], dtype=np.float64) - ref)) if ref.size else 0.0
        worst = max(worst, float(diff / max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-6)))
    return worst
