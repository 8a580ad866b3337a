"""From (graph, target, cost model) to the planner's explicit :class:`Problem`.

The only module of the planner that knows the cost model's API: options are the cost model's
candidates (minus ``ort`` where onnxruntime cannot run: a TFLite source or a board without it),
layouts and workspaces come from the primitive registry, times from one vectorised prediction
table, layout conversions from ``layout_transform_ms`` and hand-overs from ``transfer_ms``.
"""

from __future__ import annotations

import numpy as np

from edgedeploy.costmodel import CoreConfig, CostModel
from edgedeploy.planner.problem import (
    NCHW,
    ClusterSpec,
    Config,
    LayerSpec,
    Problem,
    tensors_from_graph,
)
from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import NATIVE, ORT
from edgedeploy.schemas.target import GPU_CLUSTER, Target


def clusters_of(target: Target) -> list[ClusterSpec]:
    out = [ClusterSpec(c.name, tuple(c.cpu_ids), c.idle_power_w, c.active_power_w_per_core)
           for c in target.clusters]
    if target.gpu is not None:
        out.append(ClusterSpec(GPU_CLUSTER, (), target.gpu.idle_power_w,
                               target.gpu.active_power_w, is_gpu=True))
    return out


def _layouts(name: str, d: ir.Descriptor) -> tuple[str, str, int]:
    if name in (ORT, NATIVE):
        return NCHW, NCHW, 0
    from edgedeploy.runtime import primitives

    p = primitives.get(name)
    return p.layout_in, p.layout_out, int(p.workspace_bytes(d))


def build_problem(graph: ir.Graph, target: Target, model: CostModel) -> Problem:
    """The planning problem of ``graph`` on ``target`` priced by ``model``."""
    table = model.predict_table(graph)
    configs = [Config(c.cluster, c.cores) for c in table.configs]
    # per-layer predictions come from layers timed alone; scale them to a whole run of each
    # engine (onnxruntime fuses across a segment, native layers pay dispatch): costmodel.segments
    scale = {engine: np.array([model.segment_factor(engine, c) for c in table.configs])
             for engine in (ORT, NATIVE)}
    ort_ok = graph.source.get("format", "onnx") == "onnx" and "onnxruntime" in target.engines
    layers = []
    for i, layer in enumerate(graph.layers):
        names = [p for p in table.candidates(i) if ort_ok or p != ORT]
        if not names:  # e.g. an opaque op of a TFLite model: keep ort so the error is clear
            names = [ORT]
        idx = [table.primitives.index(p) for p in names]
        facts = [_layouts(p, layer.descriptor) for p in names]
        ms = np.array(table.ms[i, idx, :], dtype=np.float64)
        ms *= np.stack([scale[ORT] if p == ORT else scale[NATIVE] for p in names])
        layers.append(LayerSpec(layer.name, tuple(names), tuple(f[0] for f in facts),
                                tuple(f[1] for f in facts), tuple(f[2] for f in facts),
                                ms, op=layer.op))
    tensors = tensors_from_graph(graph)
    layout = np.array([[model.layout_transform_ms(t.nbytes // ir.BYTES_PER_ELEMENT,
                                                  CoreConfig(c.cluster, c.cores))
                        for c in configs] for t in tensors]).reshape(len(tensors), len(configs))

    def transfer(nbytes: int, a: str, b: str) -> float:
        return model.transfer_ms(nbytes, CoreConfig(a, 1), CoreConfig(b, 1))

    from edgedeploy.costmodel.segments import replica_scaling

    return Problem(layers, tensors, clusters_of(target), configs, layout, transfer,
                   replica_scaling=replica_scaling(model.segment_factors))
