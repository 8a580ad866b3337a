"""Small ONNX models in the styles real exporters produce, for importer and pipeline tests.

Each builder mimics one exporter's habits (names, op patterns, opsets) with seeded random
weights, passes ``onnx.checker`` and runs in onnxruntime:

* :func:`pytorch_style_resnet_block` - Conv+BN+Relu, residual Add, the Shape/Gather/Unsqueeze/
  Concat/Reshape flatten, Gemm; PyTorch's ``/layer/Op_output_0`` names.
* :func:`tf2onnx_style_mobilenet` - NHWC input transposed to NCHW, Clip(0, 6) with min/max as
  Constant-node inputs, depthwise conv, x*sigmoid(x), ReduceMean, MatMul+Add; ``:0`` names.
* :func:`paddle_style_detector` - asymmetric pads, HardSwish, branch Concat, Resize by scales,
  Split, Sigmoid head, Reshape with an initializer shape, Transpose.
* :func:`unknown_op_model` (LRN and Einsum) and :func:`dynamic_model` (symbolic N, H, W).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "dynamic_model",
    "ort_tensor_values",
    "paddle_style_detector",
    "pytorch_style_resnet_block",
    "tf2onnx_style_mobilenet",
    "unknown_op_model",
]


class _Builder:
    """Collects nodes and initializers; weights are He-style seeded normals."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def randn(self, name: str, shape: Sequence[int], scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        std = scale if scale is not None else float(np.sqrt(2.0 / max(fan_in, 1)))
        return self.init(name, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "",
             **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))
        return outputs[0]

    def constant(self, name: str, value: np.ndarray) -> str:
        return self.node("Constant", [], [name], name=name.split(":")[0],
                         value=numpy_helper.from_array(np.asarray(value), name + "_value"))

    def bn(self, prefix: str, x: str, c: int, out: str) -> str:
        p = [self.init(f"{prefix}.weight", self.rng.uniform(0.5, 1.5, c).astype(np.float32)),
             self.init(f"{prefix}.bias", self.rng.normal(0, 0.1, c).astype(np.float32)),
             self.init(f"{prefix}.running_mean", self.rng.normal(0, 0.1, c).astype(np.float32)),
             self.init(f"{prefix}.running_var", self.rng.uniform(0.5, 1.5, c).astype(np.float32))]
        return self.node("BatchNormalization", [x, *p], [out], name=f"/{prefix}/BatchNormalization",
                         epsilon=1e-5)

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: Sequence[str],
              opset: int, producer: str) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, name, inputs, outs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name=producer)
        model.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(model)  # exporters declare output shapes
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        onnx.checker.check_model(model, full_check=True)
        return model


def _input(name: str, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def pytorch_style_resnet_block(seed: int = 0, size: int = 16, classes: int = 10) -> onnx.ModelProto:
    """A ResNet basic block with a stem, as ``torch.onnx.export`` writes it (opset 17)."""
    b = _Builder(seed)
    x = "input.1"
    t = b.node("Conv", [x, b.randn("conv1.weight", [8, 3, 3, 3])], ["/conv1/Conv_output_0"],
               "/conv1/Conv", pads=[1, 1, 1, 1], strides=[1, 1], kernel_shape=[3, 3])
    t = b.bn("bn1", t, 8, "/bn1/BatchNormalization_output_0")
    stem = b.node("Relu", [t], ["/relu/Relu_output_0"], "/relu/Relu")
    t = b.node("Conv", [stem, b.randn("layer1.conv1.weight", [8, 8, 3, 3])],
               ["/layer1/conv1/Conv_output_0"], "/layer1/conv1/Conv", pads=[1, 1, 1, 1])
    t = b.bn("layer1.bn1", t, 8, "/layer1/bn1/BatchNormalization_output_0")
    t = b.node("Relu", [t], ["/layer1/relu/Relu_output_0"], "/layer1/relu/Relu")
    t = b.node("Conv", [t, b.randn("layer1.conv2.weight", [8, 8, 3, 3]),
                        b.randn("layer1.conv2.bias", [8], 0.1)],
               ["/layer1/conv2/Conv_output_0"], "/layer1/conv2/Conv", pads=[1, 1, 1, 1])
    t = b.bn("layer1.bn2", t, 8, "/layer1/bn2/BatchNormalization_output_0")
    t = b.node("Add", [t, stem], ["/layer1/Add_output_0"], "/layer1/Add")
    t = b.node("Relu", [t], ["/layer1/relu_1/Relu_output_0"], "/layer1/relu_1/Relu")
    t = b.node("MaxPool", [t], ["/maxpool/MaxPool_output_0"], "/maxpool/MaxPool",
               kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    t = b.node("GlobalAveragePool", [t], ["/avgpool/GlobalAveragePool_output_0"],
               "/avgpool/GlobalAveragePool")
    shape = b.node("Shape", [t], ["/Shape_output_0"], "/Shape")
    b.constant("/Constant_output_0", np.array(0, dtype=np.int64))
    n = b.node("Gather", [shape, "/Constant_output_0"], ["/Gather_output_0"], "/Gather", axis=0)
    b.constant("/Constant_1_output_0", np.array([0], dtype=np.int64))
    n = b.node("Unsqueeze", [n, "/Constant_1_output_0"], ["/Unsqueeze_output_0"], "/Unsqueeze")
    b.constant("/Constant_2_output_0", np.array([-1], dtype=np.int64))
    s = b.node("Concat", [n, "/Constant_2_output_0"], ["/Concat_output_0"], "/Concat", axis=0)
    t = b.node("Reshape", [t, s], ["/Reshape_output_0"], "/Reshape")
    b.node("Gemm", [t, b.randn("fc.weight", [classes, 8]), b.randn("fc.bias", [classes], 0.1)],
           ["output"], "/fc/Gemm", alpha=1.0, beta=1.0, transB=1)
    return b.model("main_graph", [_input(x, [1, 3, size, size])], ["output"], 17, "pytorch")


def tf2onnx_style_mobilenet(seed: int = 0, size: int = 16, classes: int = 10) -> onnx.ModelProto:
    """A MobileNet-ish net as tf2onnx converts a Keras model: NHWC input, Constant nodes."""
    b = _Builder(seed)
    x = "input_1:0"
    t = b.node("Transpose", [x], ["model/conv1/Conv2D__6:0"], "model/conv1/Conv2D__6",
               perm=[0, 3, 1, 2])
    b.constant("const_fold_opt__20:0", np.array(0.0, dtype=np.float32))
    b.constant("const_fold_opt__21:0", np.array(6.0, dtype=np.float32))
    lo, hi = "const_fold_opt__20:0", "const_fold_opt__21:0"
    t = b.node("Conv", [t, b.randn("model/conv1/Conv2D/ReadVariableOp:0", [8, 3, 3, 3]),
                        b.randn("model/conv1/BiasAdd/ReadVariableOp:0", [8], 0.1)],
               ["model/conv1/BiasAdd:0"], "model/conv1/Conv2D", strides=[2, 2],
               kernel_shape=[3, 3], pads=[0, 0, 1, 1])
    t = b.node("Clip", [t, lo, hi], ["model/conv1_relu/Relu6:0"], "model/conv1_relu/Relu6")
    t = b.node("Conv", [t, b.randn("model/dw1/depthwise/ReadVariableOp:0", [8, 1, 3, 3]),
                        b.randn("model/dw1/BiasAdd/ReadVariableOp:0", [8], 0.1)],
               ["model/dw1/BiasAdd:0"], "model/dw1/depthwise", group=8, kernel_shape=[3, 3],
               pads=[1, 1, 1, 1])
    t = b.node("Clip", [t, lo, hi], ["model/dw1_relu/Relu6:0"], "model/dw1_relu/Relu6")
    t = b.node("Conv", [t, b.randn("model/pw1/Conv2D/ReadVariableOp:0", [16, 8, 1, 1]),
                        b.randn("model/pw1/BiasAdd/ReadVariableOp:0", [16], 0.1)],
               ["model/pw1/BiasAdd:0"], "model/pw1/Conv2D", kernel_shape=[1, 1])
    s = b.node("Sigmoid", [t], ["model/pw1_swish/Sigmoid:0"], "model/pw1_swish/Sigmoid")
    t = b.node("Mul", [t, s], ["model/pw1_swish/mul:0"], "model/pw1_swish/mul")
    t = b.node("ReduceMean", [t], ["model/gap/Mean:0"], "model/gap/Mean", axes=[2, 3],
               keepdims=0)
    rng = b.rng
    b.constant("model/dense/MatMul/ReadVariableOp:0",
               (rng.standard_normal((16, classes)) * 0.25).astype(np.float32))
    t = b.node("MatMul", [t, "model/dense/MatMul/ReadVariableOp:0"], ["model/dense/MatMul:0"],
               "model/dense/MatMul")
    b.constant("model/dense/BiasAdd/ReadVariableOp:0",
               rng.normal(0, 0.1, classes).astype(np.float32))
    t = b.node("Add", [t, "model/dense/BiasAdd/ReadVariableOp:0"], ["model/dense/BiasAdd:0"],
               "model/dense/BiasAdd")
    b.node("Softmax", [t], ["dense"], "model/dense/Softmax", axis=-1)
    return b.model("tf2onnx", [_input(x, [1, size, size, 3])], ["dense"], 13, "tf2onnx")


def paddle_style_detector(seed: int = 0, size: int = 32, anchors: int = 3) -> onnx.ModelProto:
    """A PP-YOLO-ish head as paddle2onnx writes it (opset 14): branches, upsample, split."""
    b = _Builder(seed)
    x = "image"
    t = b.node("Conv", [x, b.randn("conv2d_0.w_0", [8, 3, 3, 3]),
                        b.randn("conv2d_0.b_0", [8], 0.1)],
               ["conv2d_0.tmp_1"], "p2o.Conv.0", strides=[2, 2], pads=[0, 0, 1, 1])
    t = b.node("HardSwish", [t], ["hardswish_0.tmp_0"], "p2o.HardSwish.0")
    a = b.node("Conv", [t, b.randn("conv2d_1.w_0", [8, 8, 1, 1])], ["conv2d_1.tmp_0"],
               "p2o.Conv.1")
    a = b.node("PRelu", [a, b.randn("prelu_0.w_0", [8, 1, 1], 0.1)], ["prelu_0.tmp_0"],
               "p2o.PRelu.0")
    c = b.node("Conv", [t, b.randn("conv2d_2.w_0", [8, 8, 3, 3])], ["conv2d_2.tmp_0"],
               "p2o.Conv.2", pads=[1, 1, 1, 1], dilations=[1, 1])
    c = b.node("LeakyRelu", [c], ["leaky_relu_0.tmp_0"], "p2o.LeakyRelu.0", alpha=0.1)
    t = b.node("Concat", [a, c], ["concat_0.tmp_0"], "p2o.Concat.0", axis=1)
    b.init("p2o.Resize.0.roi", np.array([], dtype=np.float32))
    b.init("p2o.Resize.0.scales", np.array([1, 1, 2, 2], dtype=np.float32))
    t = b.node("Resize", [t, "p2o.Resize.0.roi", "p2o.Resize.0.scales"], ["nearest_interp_0.tmp_0"],
               "p2o.Resize.0", mode="nearest", coordinate_transformation_mode="asymmetric",
               nearest_mode="floor")
    s0, s1 = "split_0.tmp_0", "split_0.tmp_1"
    b.init("p2o.Split.0.split", np.array([6, 10], dtype=np.int64))
    b.node("Split", [t, "p2o.Split.0.split"], [s0, s1], "p2o.Split.0", axis=1)
    box = b.node("Conv", [s0, b.randn("conv2d_3.w_0", [anchors * 4, 6, 1, 1])],
                 ["conv2d_3.tmp_0"], "p2o.Conv.3")
    cls = b.node("Conv", [s1, b.randn("conv2d_4.w_0", [anchors * 2, 10, 1, 1]),
                          b.randn("conv2d_4.b_0", [anchors * 2], 0.1)],
                 ["conv2d_4.tmp_1"], "p2o.Conv.4")
    cls = b.node("Sigmoid", [cls], ["sigmoid_0.tmp_0"], "p2o.Sigmoid.0")
    b.init("p2o.Reshape.0.shape", np.array([1, anchors * 4, -1], dtype=np.int64))
    box = b.node("Reshape", [box, "p2o.Reshape.0.shape"], ["reshape2_0.tmp_0"], "p2o.Reshape.0")
    b.node("Transpose", [box], ["boxes"], "p2o.Transpose.0", perm=[0, 2, 1])
    b.init("p2o.Reshape.1.shape", np.array([1, anchors * 2, -1], dtype=np.int64))
    cls = b.node("Reshape", [cls, "p2o.Reshape.1.shape"], ["reshape2_1.tmp_0"], "p2o.Reshape.1")
    b.node("Transpose", [cls], ["scores"], "p2o.Transpose.1", perm=[0, 2, 1])
    return b.model("paddle", [_input(x, [1, 3, size, size])], ["boxes", "scores"], 14,
                   "PaddlePaddle")


def unknown_op_model(seed: int = 0, size: int = 8) -> onnx.ModelProto:
    """Ops outside the IR (LRN, Einsum) between known ones: they must import as opaque."""
    b = _Builder(seed)
    t = b.node("Conv", ["x", b.randn("w0", [4, 3, 3, 3])], ["c0"], "conv0", pads=[1, 1, 1, 1])
    t = b.node("Relu", [t], ["r0"], "relu0")
    t = b.node("LRN", [t], ["lrn0"], "lrn0", size=3, alpha=1e-4, beta=0.75, bias=1.0)
    t = b.node("GlobalAveragePool", [t], ["gap"], "gap")
    t = b.node("Flatten", [t], ["flat"], "flatten", axis=1)
    b.node("Einsum", [t, b.randn("proj", [4, 5])], ["y"], "einsum", equation="bc,cd->bd")
    return b.model("unknown_ops", [_input("x", [1, 3, size, size])], ["y"], 13, "handmade")


def dynamic_model(seed: int = 0) -> onnx.ModelProto:
    """Symbolic batch and spatial dims, as ``dynamic_axes`` exports have them."""
    b = _Builder(seed)
    t = b.node("Conv", ["x", b.randn("w0", [4, 3, 3, 3])], ["c0"], "conv0", pads=[1, 1, 1, 1])
    t = b.node("Relu", [t], ["r0"], "relu0")
    t = b.node("GlobalAveragePool", [t], ["gap"], "gap")
    t = b.node("Flatten", [t], ["flat"], "flatten", axis=1)
    b.node("Gemm", [t, b.randn("fc.w", [2, 4]), b.randn("fc.b", [2], 0.1)], ["y"], "fc",
           transB=1)
    return b.model("dynamic", [_input("x", ["batch", 3, "height", "width"])], ["y"], 13,
                   "pytorch")


def ort_tensor_values(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                      names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` in onnxruntime with every node output (or ``names``) exposed as an output."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared = {o.name for o in probe.graph.output}
    wanted = list(names) if names is not None else [o for n in probe.graph.node
                                                      for o in n.output if o]
    for name in wanted:
        if name not in declared:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
            declared.add(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    return dict(zip(out_names, sess.run(out_names, dict(feeds)), strict=True))
