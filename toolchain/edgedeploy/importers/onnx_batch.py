"""A free leading batch axis on an ONNX model, so one session runs 1..B frames per call.

Micro-batching a stage (several frames per engine call) needs its segment to accept any batch:
the inputs' and outputs' leading dimension of 1 becomes the symbolic ``batch`` and the stored
intermediate shapes are dropped (onnxruntime infers them again at load). A model whose
operators hard-code the batch still loads: a Reshape to ``[1, 200]`` fails on a batch of two,
one to ``[1, -1]`` mixes its frames. ``runtime.stages.fixes_batch`` keeps such stages from
batching, and :func:`frames_kept_apart` checks, before measure-to-decide or a push lets a model
batch, that a batch answers each frame as alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgedeploy.runtime import ir

log = logging.getLogger("edgedeploy.importers")

BATCH_AXIS = "batch"


def with_dynamic_batch(model: bytes) -> bytes:
    """``model`` with every graph input's and output's leading dimension of 1 made symbolic."""
    import onnx

    proto = onnx.load_from_string(model)
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].dim_param = BATCH_AXIS
    del proto.graph.value_info[:]
    return proto.SerializeToString()


def frames_kept_apart(graph: ir.Graph, model: Path) -> bool:
    """Whether the whole model, in onnxruntime with a free batch axis, answers a batch of two
    frames as it answers each frame alone. A batched variant is measured for speed only; an
    operator that mixes the batch (a reshape or reduction over it) would otherwise hand the
    board a faster plan that gives wrong answers. False too where the batch does not run."""
    import numpy as np
    import onnxruntime as ort

    from edgedeploy.runtime.executor import max_rel_error, random_inputs, segment_io

    ins, outs = segment_io(graph, 0, len(graph.layers))
    frames = [random_inputs(graph, seed=k) for k in (0, 1)]
    try:  # the model file itself, not a cut segment (cutting VGG-16's took 13 s of 16.6)
        free = with_dynamic_batch(Path(model).read_bytes())
        sess = ort.InferenceSession(free, providers=["CPUExecutionProvider"])
        apart = [sess.run(outs, {t: f[t] for t in ins}) for f in frames]
        together = sess.run(outs, {t: np.concatenate([f[t] for f in frames]) for t in ins})
    except Exception as exc:  # onnxruntime's own errors: a batch it cannot take
        log.info("a batch of two frames does not run: %s", exc)
        return False
    return all(np.shape(together[i])[:1] == (2,) and max_rel_error(
        {o: together[i][k:k + 1]}, {o: apart[k][i]}) <= BATCH_AGREEMENT
        for i, o in enumerate(outs) for k in (0, 1))


#: How far a frame's answer within a batch may stray from its answer alone (float rounding of
#: kernels that block differently by batch).
BATCH_AGREEMENT = 1e-4
