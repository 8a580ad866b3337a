"""From (graph, target, cost model) to the planner's explicit :class:`Problem`.

The only module of the planner that knows the cost model's API: options are the cost model's
candidates filtered through the engine registry (an engine must be on the board's ``engines`` list
and run segments of the model's format; primitives need ``native``), layouts and workspaces come
from the primitive registry, times from one vectorised prediction table, layout conversions from
``layout_transform_ms`` and hand-overs from ``hop_ms``.

A GPU joins the problem only when the board lists a GPU engine the runner can run (``gpu_engine``);
its stage's feeding thread needs a CPU core, so one core of the slowest CPU cluster is reserved as
the GPU's feeder (``gpu_feeder``) and CPU stages never take it.
"""

from __future__ import annotations

import numpy as np

from edgedeploy.costmodel import CoreConfig, CostModel
from edgedeploy.planner.half import half_clusters
from edgedeploy.planner.problem import (
    ClusterSpec,
    Config,
    LayerSpec,
    Problem,
    tensors_from_graph,
)
from edgedeploy.runtime import ir
from edgedeploy.runtime.engines import ENGINES, is_segment_choice
from edgedeploy.runtime.vocab import (
    GPU_CLUSTER,
    LITERT,
    NATIVE,
    NCHW,
    ONNX,
    ONNXRUNTIME,
    ONNXRUNTIME_CUDA,
    ONNXRUNTIME_TENSORRT,
)
from edgedeploy.schemas.target import Target

#: GPU engines in order of preference when a board lists several (TensorRT fuses more).
GPU_ENGINES = (ONNXRUNTIME_TENSORRT, ONNXRUNTIME_CUDA)


def gpu_engine(target: Target) -> str | None:
    """The engine a GPU stage of ``target`` runs on, None when the board has no usable GPU."""
    if target.gpu is None:
        return None
    return next((e for e in GPU_ENGINES if e in target.engines and e in ENGINES), None)


def gpu_feeder(target: Target) -> int | None:
    """The CPU core a GPU stage's feeding thread is pinned to: the last core of the cluster
    with the lowest per-core peak (a LITTLE core is enough to launch kernels)."""
    if gpu_engine(target) is None:
        return None
    cluster = min(target.clusters, key=lambda c: (target.peak_gflops(c.name, 1), -len(c.cpu_ids)))
    return max(cluster.cpu_ids)


def clusters_of(target: Target) -> list[ClusterSpec]:
    feeder = gpu_feeder(target)
    out = [ClusterSpec(c.name, tuple(i for i in c.cpu_ids if i != feeder), c.idle_power_w,
                       c.active_power_w_per_core) for c in target.clusters]
    if feeder is not None and target.gpu is not None:
        out.append(ClusterSpec(GPU_CLUSTER, (), target.gpu.idle_power_w,
                               target.gpu.active_power_w, is_gpu=True))
    return [c for c in out if c.is_gpu or c.cpu_ids]


def plan_cpus(target: Target) -> list[int]:
    """Every CPU a plan's stages may run on: the target's cores, less a GPU stage's feeder."""
    return sorted(i for c in clusters_of(target) if not c.is_gpu for i in c.cpu_ids)


def allowed(name: str, target: Target, fmt: str) -> bool:
    """Whether choice ``name`` can run on ``target`` for a model of format ``fmt``."""
    if is_segment_choice(name):
        return name in target.engines and fmt in ENGINES[name].formats
    return NATIVE in target.engines


def _layouts(name: str, d: ir.Descriptor) -> tuple[str, str, int]:
    if is_segment_choice(name):  # its segments convert at their edges (runtime.layouts)
        return ENGINES[name].layout, ENGINES[name].layout, 0
    if name == NATIVE:
        return NCHW, NCHW, 0
    from edgedeploy.runtime import primitives

    p = primitives.get(name)
    return p.layout_in, p.layout_out, int(p.workspace_bytes(d))


def build_problem(graph: ir.Graph, target: Target, model: CostModel) -> Problem:
    """The planning problem of ``graph`` on ``target`` priced by ``model`` (by the segment
    factors measured on this very model where a profile ran it whole)."""
    model = model.for_model(graph.source.get("sha256"))
    clusters = clusters_of(target)
    caps = {c.name: c.capacity for c in clusters}
    table = model.predict_table(graph, [c for c in model.configs
                                        if c.cores <= caps.get(c.cluster, 0)])
    configs = [Config(c.cluster, c.cores) for c in table.configs]
    # per-layer predictions come from layers timed alone; scale them to a whole run of each
    # engine (segment engines fuse across a segment, native layers pay dispatch): see
    # costmodel.segments
    fmt = str(graph.source.get("format") or ONNX)
    scale = {p: np.array([model.segment_factor(p if is_segment_choice(p) else NATIVE, c)
                          for c in table.configs])
             for p in table.primitives if allowed(p, target, fmt)}
    # a quantized layer: its float prediction times the board's measured int8 / float time
    precision = {pr: np.array([model.precision_factor(pr, c) for c in table.configs])
                 for pr in {layer.descriptor.precision for layer in graph.layers}}
    half_on = half_clusters(graph, target)
    half = np.array([model.half_factor(c) if c.cluster in half_on else 1.0
                     for c in table.configs])
    layers = []
    for i, layer in enumerate(graph.layers):
        names = [p for p in table.candidates(i) if p in scale]
        if not names:
            raise _no_engine(graph, layer, target, fmt)
        idx = [table.primitives.index(p) for p in names]
        facts = [_layouts(p, layer.descriptor) for p in names]
        ms = np.array(table.ms[i, idx, :], dtype=np.float64)
        if ONNXRUNTIME in names:  # timed alone where the prior cannot price it, in the
            k = names.index(ONNXRUNTIME)  # precision it ran in (not scaled to it below)
            for c, config in enumerate(table.configs):
                timed = model.timed_ms(layer.name, config)
                if timed is not None:
                    ms[k, c] = timed / precision[layer.descriptor.precision][c]
        ms *= np.stack([scale[p] for p in names]) * precision[layer.descriptor.precision]
        if LITERT in names:  # LiteRT computing fp16 where the plan's precision is fp16
            ms[names.index(LITERT)] *= half
        layers.append(LayerSpec(layer.name, tuple(names), tuple(f[0] for f in facts),
                                tuple(f[1] for f in facts), tuple(f[2] for f in facts),
                                ms, op=layer.op))
    tensors = tensors_from_graph(graph)
    # only a rank-4 tensor changes layout (the executor and LiteRT's edges leave other ranks
    # as they are): priced on every tensor, an audio model's rank-3 input and rank-2 output
    # cost its one LiteRT layer 30 us on top of its 9 us, and the whole model ran in 23
    layout = np.array([[model.layout_transform_ms(t.nbytes // ir.BYTES_PER_ELEMENT,
                                                  CoreConfig(c.cluster, c.cores))
                        if _rank(graph, t.name) in (4, None) else 0.0
                        for c in configs] for t in tensors]).reshape(len(tensors), len(configs))

    from edgedeploy.costmodel.segments import replica_scaling
    from edgedeploy.runtime.stages import unfused_cuts

    return Problem(layers, tensors, clusters, configs, layout, model.hop_ms,
                   replica_scaling=replica_scaling(model.segment_factors),
                   no_cut=unfused_cuts(graph), frame_ms=model.frame_ms())


def _rank(graph: ir.Graph, tensor: str) -> int | None:
    """The rank of ``tensor``, None where the graph does not know its shape."""
    try:
        return len(graph.shape(tensor))
    except KeyError:
        return None


def _no_engine(graph: ir.Graph, layer: ir.Layer, target: Target, fmt: str) -> Exception:
    from edgedeploy.errors import InputError

    op = layer.attrs.get("onnx_op_type") or layer.attrs.get("tflite_op") or layer.op
    able = [n for n, s in sorted(ENGINES.items()) if s.is_segment and fmt in s.formats]
    return InputError(
        f"layer {layer.name!r} ({op}) of {graph.name} can run on no engine board "
        f"{target.name!r} offers (engines: {', '.join(target.engines)})",
        hint=f"it needs one of {', '.join(able) or 'no engine'} for a {fmt} model; add it to "
             "the board's `engines` if the board has it")
