"""The native layers against outputs PyTorch computed: the onnx wheel's ``pytorch-converted``
and ``pytorch-operator`` backend cases (one module or operator each -- Conv2d plain, strided,
padded, dilated, grouped, depthwise, pools, pads, BatchNorm, activations, Softmax, Linear,
broadcasting adds, reductions, permutes, views ... -- exported by PyTorch with its inputs and
outputs stored beside it).

Every case with a layer the IR computes itself runs with each conv primitive that applies (other
layers native, layers the IR does not know in onnxruntime) and must give PyTorch's outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgedeploy import execute
from edgedeploy.importers import load_model
from edgedeploy.runtime import ir, primitives
from edgedeploy.runtime.errors import ModelError
from edgedeploy.runtime.executor import max_rel_error, segment_io
from edgedeploy.runtime.stages import GraphStage, StageIO

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
CASES = [DATA / "pytorch-converted", DATA / "pytorch-operator"]
TOLERANCE = 1e-3


def _computed_here() -> list[str]:
    """Float32 cases with a layer the IR computes itself. The rest are 1-D/3-D ops, embeddings
    and losses that run in onnxruntime whole, and four double-precision ones whose stored inputs
    are uninitialised memory (1e-310 next to 1e198; edgedeploy computes floats in float32)."""
    out = []
    for d in (d for d in CASES if d.is_dir()):
        for p in sorted(d.iterdir()):
            graph = load_model(p / "model.onnx")
            if (all(t.dtype == "float32" for t in graph.inputs)
                    and any(la.op != ir.OPAQUE for la in graph.layers)):
                out.append(f"{d.name}/{p.name}")
    return out


NAMES = _computed_here()


def _tensors(folder: Path, kind: str) -> list[np.ndarray]:
    return [numpy_helper.to_array(onnx.load_tensor(str(p)))
            for p in sorted(folder.glob(f"{kind}_*.pb"))]


@pytest.mark.parametrize("name", NAMES)
def test_native_layers_give_pytorchs_outputs(name: str) -> None:
    model = DATA / name / "model.onnx"
    data = DATA / name / "test_data_set_0"
    graph = load_model(model)
    convs = [layer for layer in graph.layers if layer.op == ir.CONV2D]
    options = [p.name for p in primitives.applicable(convs[0].descriptor)] if convs else ["native"]
    ins, outs = segment_io(graph, 0, len(graph.layers))
    io = StageIO(0, len(graph.layers), tuple(ins), tuple(outs))
    feeds = dict(zip([t.name for t in graph.inputs], _tensors(data, "input"), strict=True))
    want = dict(zip([t.name for t in graph.outputs], _tensors(data, "output"), strict=True))
    for option in options:
        choices = {layer.name: "onnxruntime" if layer.op == ir.OPAQUE
                   else option if layer.op == ir.CONV2D else "native" for layer in graph.layers}
        try:
            stage = GraphStage(graph, io, choices, execute.segments_for(graph, [io], choices,
                                                                        model))
        except ModelError as exc:  # onnxruntime has no kernel for this operator version
            pytest.skip(str(exc)[:120])
        got = dict(zip(io.outputs, stage([feeds[t] for t in io.inputs]), strict=True))
        stage.executor.close()
        assert max_rel_error(got, want) <= TOLERANCE, (name, option)

