"""What ``edgedeploy inspect`` reports, as plain data: per-layer facts and model totals.

Kept apart from the CLI so the API, the planner's reports and tests read the same numbers.
MACs and FLOPs come from the descriptor (2 FLOPs per MAC for conv/dense, one per output element
otherwise); params and weight bytes from the weights a layer actually holds (after BN folding).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from edgedeploy.runtime.ir import Graph, Layer
from edgedeploy.runtime.layouts import carried_shape

__all__ = ["describe", "layer_row", "op_counts"]


def describe(graph: Graph) -> dict[str, Any]:
    """The whole report: ``model``, ``inputs``, ``outputs``, ``layers``, ``totals``."""
    layers = [layer_row(graph, layer) for layer in graph.layers]
    totals = graph.totals()
    totals["op_counts"] = op_counts(graph)
    return {
        "model": {"name": graph.name, **graph.source},
        # ``own_shape``: as the runner takes and gives it, in the model's own layout
        "inputs": [{**t.to_dict(), "own_shape": list(carried_shape(graph, t.name))}
                   for t in graph.inputs],
        "outputs": [{**t.to_dict(), "own_shape": list(carried_shape(graph, t.name))}
                    for t in graph.outputs],
        "layers": layers,
        "totals": totals,
    }


def layer_row(graph: Graph, layer: Layer) -> dict[str, Any]:
    """One layer's facts; shapes of its tensors included so a table needs nothing else."""
    d = layer.descriptor
    params = graph.param_count(layer)
    row: dict[str, Any] = {
        "name": layer.name,
        "op": layer.op,
        "descriptor": d.to_dict(),
        "macs": int(d.macs),
        "flops": int(d.flops),
        "params": params,
        "bytes_in": int(d.bytes_in),
        "bytes_out": int(d.bytes_out),
        "bytes_weights": int(sum(graph.weights[k].nbytes for k in layer.weights.values()
                                 if k in graph.weights)),
        "activation": d.activation,
        "inputs": list(layer.inputs),
        "outputs": list(layer.outputs),
        "input_shapes": [_shape_of(graph, t) for t in layer.inputs],
        "output_shapes": [_shape_of(graph, t) for t in layer.outputs],
    }
    if "onnx_op_type" in layer.attrs and layer.op == "opaque":
        row["source_op"] = layer.attrs["onnx_op_type"]
    elif "tflite_op" in layer.attrs and layer.op == "opaque":
        row["source_op"] = layer.attrs["tflite_op"]
    return row


def _shape_of(graph: Graph, name: str) -> list[int] | None:
    info = graph.tensors.get(name)
    return list(info.shape) if info else None


def op_counts(graph: Graph) -> dict[str, int]:
    """Layers per IR op, most frequent first (ties by name, so the order is stable)."""
    counts = Counter(layer.op for layer in graph.layers)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
