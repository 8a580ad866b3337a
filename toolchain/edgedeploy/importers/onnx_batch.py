"""A free leading batch axis on an ONNX model, so one session runs 1..B frames per call.

Micro-batching a stage (several frames per engine call) needs its segment to accept any batch:
the inputs' and outputs' leading dimension of 1 becomes the symbolic ``batch`` and the stored
intermediate shapes are dropped (onnxruntime infers them again at load). A Reshape to a constant
shape that spells the batch out as a leading 1, of a tensor whose leading axis is 1 -- the
classifier heads of Caffe2 and Paddle exports, ``[1, 9216]``, ``[1, 200]`` -- gets 0 there
(copy the leading axis): each frame keeps its own row. A model whose operators hard-code the
batch otherwise still loads: a Reshape to ``[2, -1]`` of a batch of one would mix its frames.
``runtime.stages.fixes_batch`` keeps such stages from batching, and :func:`frames_kept_apart`
checks, before measure-to-decide or a push lets a model batch, that a batch answers each frame
as alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgedeploy.runtime.vocab import ORT_FATAL_ONLY

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    import onnx

    from edgedeploy.runtime import ir

log = logging.getLogger("edgedeploy.importers")

BATCH_AXIS = "batch"


def with_dynamic_batch(model: bytes, folded: Mapping[str, np.ndarray] | None = None) -> bytes:
    """``model`` with every graph input's and output's leading dimension of 1 made symbolic;
    ``folded``: constants (name -> value) that take the place of the nodes computing them
    first (:func:`_fold_into`), in the one parse of the model."""
    import onnx

    proto = onnx.load_from_string(model)
    if folded:
        _fold_into(proto, folded)
    _copy_batch_in_reshapes(proto)
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].dim_param = BATCH_AXIS
    del proto.graph.value_info[:]
    return proto.SerializeToString()


def _copy_batch_in_reshapes(proto: onnx.ModelProto) -> None:
    """A constant Reshape target ``[1, ...]`` of a tensor that leads with 1 becomes ``[0, ...]``
    (see the module docstring); the leading 1 of the data is read from shape inference."""
    import numpy as np
    from onnx import numpy_helper

    from edgedeploy.importers.onnx_const import _skeleton
    from edgedeploy.importers.onnx_prep import infer

    inits = {t.name: t for t in proto.graph.initializer}
    reshapes = [n for n in proto.graph.node if n.op_type == "Reshape" and n.input[1] in inits
                and not any(a.name == "allowzero" and a.i for a in n.attribute)]
    if not reshapes:
        return
    typed = _skeleton(proto)  # the weights' dims without their data: no copy of the weights
    typed.ir_version = max(typed.ir_version, 4)  # IR 3 types initializers only as graph inputs
    del typed.graph.value_info[:]  # a cut's stored types may disagree with inference's
    for value in typed.graph.input:  # a segment runs one frame: a free leading axis reads 1
        dims = value.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            dims[0].Clear()
            dims[0].dim_value = 1
    try:
        inferred = infer(typed)
    except Exception as exc:  # no shapes, no rewrite: frames_kept_apart has the last word
        log.info("no shape inference for the batch axis of reshapes: %s", exc)
        return
    lead = {v.name: v.type.tensor_type.shape.dim[0]
            for v in [*inferred.graph.value_info, *inferred.graph.input]
            if v.type.tensor_type.shape.dim}
    for node in reshapes:
        target = numpy_helper.to_array(inits[node.input[1]])
        dim = lead.get(node.input[0])
        if (target.ndim != 1 or not target.size or target[0] != 1 or dim is None
                or not dim.HasField("dim_value") or dim.dim_value != 1):
            continue
        copied = target.astype(np.int64)
        copied[0] = 0
        name = f"{node.input[1]}__batch_copied"
        if name not in inits:
            inits[name] = numpy_helper.from_array(copied, name)
            proto.graph.initializer.append(inits[name])
        node.input[1] = name


def frames_kept_apart(graph: ir.Graph, model: Path) -> bool:
    """Whether the whole model, in onnxruntime with a free batch axis, answers a batch of two
    frames as it answers each frame alone. A batched variant is measured for speed only; an
    operator that mixes the batch (a reshape or reduction over it) would otherwise hand the
    board a faster plan that gives wrong answers. False too where the batch does not run."""
    return batched_model(graph, model) is not None


def batched_model(graph: ir.Graph, model: Path) -> bytes | None:
    """The model with a free batch axis (:func:`with_dynamic_batch`) where its frames stay
    apart (:func:`frames_kept_apart`), else None."""
    import numpy as np
    import onnxruntime as ort

    from edgedeploy.runtime.executor import max_rel_error, random_inputs, segment_io

    ins, outs = segment_io(graph, 0, len(graph.layers))
    frames = [random_inputs(graph, seed=k) for k in (0, 1)]
    try:  # the model file itself, not a cut segment (cutting VGG-16's took 13 s of 16.6)
        folded = {name: graph.weights[name] for name in graph.source.get("onnx_folded", [])
                  if name in graph.weights}
        free = with_dynamic_batch(Path(model).read_bytes(), folded)
        opts = ort.SessionOptions()
        opts.log_severity_level = ORT_FATAL_ONLY  # a batch it cannot take is an answer here
        sess = ort.InferenceSession(free, opts, providers=["CPUExecutionProvider"])
        apart = [sess.run(outs, {t: f[t] for t in ins}) for f in frames]
        together = sess.run(outs, {t: np.concatenate([f[t] for f in frames]) for t in ins})
    except Exception as exc:  # onnxruntime's own errors: a batch it cannot take
        log.info("a batch of two frames does not run: %s", exc)
        return None
    agree = all(np.shape(together[i])[:1] == (2,) and max_rel_error(
        {o: together[i][k:k + 1]}, {o: apart[k][i]}) <= BATCH_AGREEMENT
        for i, o in enumerate(outs) for k in (0, 1))
    return free if agree else None


def _fold_into(proto: onnx.ModelProto, folded: Mapping[str, np.ndarray]) -> None:
    """The constants the importer folded (at batch 1) in place of the nodes that computed them,
    as every segment cut from the model has them: a Shape of the input folded into an LSTM's
    initial state or a Reshape's target holds the batch of one (PP-OCRv2's recognizer), and the
    model file alone would batch where its segments cannot (in place)."""
    import numpy as np
    from onnx import numpy_helper

    keep = [n for n in proto.graph.node if not (n.output and all(o in folded or not o
                                                                  for o in n.output))]
    made = {o for n in keep for o in n.output}
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    known = {t.name for t in proto.graph.initializer}
    proto.graph.initializer.extend(numpy_helper.from_array(np.asarray(value), name)
                                   for name, value in sorted(folded.items())
                                   if name not in made and name not in known)


#: How far a frame's answer within a batch may stray from its answer alone (float rounding of
#: kernels that block differently by batch).
BATCH_AGREEMENT = 1e-4
