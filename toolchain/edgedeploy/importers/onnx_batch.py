"""A free leading batch axis on an ONNX model, so one session runs 1..B frames per call.

Micro-batching a stage (several frames per engine call) needs its segment to accept any batch:
the inputs' and outputs' leading dimension of 1 becomes the symbolic ``batch`` and the stored
intermediate shapes are dropped (onnxruntime infers them again at load). A model whose
operators hard-code the batch still loads: a Reshape to ``[1, 200]`` fails on a batch of two,
one to ``[1, -1]`` mixes its frames. ``runtime.stages.fixes_batch`` keeps such stages from
batching, and measure-to-decide first checks that a batch answers each frame as alone.
"""

from __future__ import annotations

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
