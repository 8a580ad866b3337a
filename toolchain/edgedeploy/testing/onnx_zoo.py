"""The ONNX model zoo's classic CNNs as the onnx wheel ships them for its backend tests.

``onnx/backend/test/data/light`` holds the graphs of AlexNet, DenseNet-121, Inception v1/v2,
ResNet-50, ShuffleNet, SqueezeNet, VGG-19 and ZFNet-512 as the zoo published them -- Caffe2
exports at IR 3 / opset 7-9, with what such files carry (an n-ary ``Sum`` joining residuals,
``LRN``, batch norms written as ``Mul``/``Add`` by ``Unsqueeze``d constants, ``Dropout``) --
their weights replaced by ``ConstantOfShape`` nodes of one value. Constant weights make every
output equal, so :func:`seeded` gives each weight seeded values of its shape: real architectures
from real exporters, nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
NAMES = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
         "squeezenet", "vgg19", "zfnet512")


def source(name: str) -> Path:
    """The wheel's file for ``name``; FileNotFoundError when this onnx does not ship it."""
    path = LIGHT / f"light_{name}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in this onnx wheel")
    return path


def seeded(name: str, folder: Path, seed: int = 0) -> Path:
    """``folder/<name>.onnx``: the zoo graph with each ``ConstantOfShape`` weight made a seeded
    initializer -- fan-in scaled normals for kernels, values in [0.5, 1.5) for vectors (biases,
    batch-norm scales, means and variances, which must stay positive)."""
    model = onnx.load(source(name))
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    kept, inits = [], []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            kept.append(node)
            continue
        shape = tuple(int(v) for v in shapes[node.input[0]])
        if len(shape) >= 2:
            scale = np.float32(np.sqrt(2.0 / int(np.prod(shape[1:]))))
            value = rng.standard_normal(shape, dtype=np.float32) * scale
        else:
            value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        inits.append(numpy_helper.from_array(value, node.output[0]))
    used = {i for n in kept for i in n.input}
    survivors = [t for t in model.graph.initializer if t.name in used]
    gone = {t.name for t in model.graph.initializer} - used
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.initializer[:]
    model.graph.initializer.extend(survivors + inits)
    # IR 3 lists every initializer as a graph input too, as the zoo's files with their real
    # weights do: the weights' entries come, the shapes' go
    inputs = [i for i in model.graph.input if i.name not in gone]
    listed = {i.name for i in inputs}
    inputs += [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
               for t in inits if t.name not in listed]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return path
