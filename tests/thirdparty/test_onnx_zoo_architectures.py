"""The ONNX model zoo's classic CNNs, as the onnx wheel ships them for its backend tests.

``onnx/backend/test/data/light`` holds the graphs of AlexNet, DenseNet-121, Inception v1/v2,
ResNet-50, ShuffleNet, SqueezeNet, VGG-19 and ZFNet-512 as the zoo published them (VGG-19 and
ZFNet-512 are left out here to keep ``make test`` short: VGG-19's 20 GFLOP frame through the
numpy primitives a Raspberry Pi plan picks takes over a minute on a 2-vCPU CI host, and AlexNet
carries the operators of both): Caffe2
exports at opset 7-9 with what such files carry (an n-ary ``Sum`` joining residuals, ``LRN``,
batch norms written as ``Mul``/``Add`` by ``Unsqueeze``d constants, ``Dropout``), their weights
replaced by ``ConstantOfShape`` nodes of one value. Constant weights make every output equal
(nothing to compare), so each is given seeded weights of the same shapes first; then it goes
through ``edgedeploy plan --no-measure`` and the plan's stages run beside onnxruntime, as the
corpus's models do. Nothing is downloaded: the files come with the pinned onnx.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus_plans import manifest_for, run_plan
from onnx import numpy_helper

from edgedeploy.cli.main import main
from edgedeploy.importers import load_model
from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import max_rel_error

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
          "shufflenet", "squeezenet"]
TOLERANCE = 1e-3


def _seeded(name: str, folder: Path) -> Path:
    """The zoo graph with each ``ConstantOfShape`` weight made a seeded initializer: fan-in
    scaled normals for kernels, values in [0.5, 1.5) for vectors (biases, batch-norm scales,
    means and variances, which must stay positive)."""
    src = LIGHT / f"light_{name}.onnx"
    if not src.is_file():
        pytest.skip(f"{src} is not in this onnx wheel")
    model = onnx.load(src)
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    kept, inits = [], []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            kept.append(node)
            continue
        shape = tuple(int(v) for v in shapes[node.input[0]])
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        else:
            value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        inits.append(numpy_helper.from_array(value, node.output[0]))
    used = {i for n in kept for i in n.input}
    survivors = [t for t in model.graph.initializer if t.name in used]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.initializer[:]
    model.graph.initializer.extend(survivors + inits)
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_zoo_architecture_plans_and_its_stages_match_onnxruntime(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _seeded(name, tmp_path)
    graph = load_model(path)
    # every operator of these files but LRN is one the IR knows (LRN runs in onnxruntime)
    left = {layer.attrs.get("onnx_op_type") for layer in graph.layers if layer.op == ir.OPAQUE}
    assert left <= {"LRN"}, (name, left)
    assert sum(layer.op == ir.CONV2D for layer in graph.layers) >= 5
    manifest = manifest_for(tmp_path, path)
    assert main(["plan", str(manifest), "--no-measure", "--json"]) == 0, capsys.readouterr().err
    plan_file = Path(json.loads(capsys.readouterr().out)["plan_file"])
    got, want, runtime = run_plan(plan_file, path)
    assert runtime == "onnxruntime"
    assert all(np.ptp(v) > 0 for v in want.values()), "the seeded weights give distinct outputs"
    assert max_rel_error(got, want) <= TOLERANCE, name
