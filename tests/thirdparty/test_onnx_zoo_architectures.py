"""The ONNX model zoo's classic CNNs (``edgedeploy.testing.onnx_zoo``: the graphs the onnx wheel
ships, Caffe2 exports at IR 3 / opset 7-9, given seeded weights) plan and match onnxruntime.

Each goes through ``edgedeploy plan --no-measure`` and the plan's stages run beside onnxruntime,
as the corpus's models do. VGG-19 and ZFNet-512 are left out to keep ``make test`` short: VGG-19's
20 GFLOP frame through the numpy primitives a Raspberry Pi plan picks takes over a minute on a
2-vCPU CI host, and AlexNet carries the operators of both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from corpus_plans import manifest_for, run_plan

from edgedeploy.cli.main import main
from edgedeploy.importers import load_model
from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import max_rel_error
from edgedeploy.testing import onnx_zoo

MODELS = [n for n in onnx_zoo.NAMES if n not in ("vgg19", "zfnet512")]
TOLERANCE = 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_zoo_architecture_plans_and_its_stages_match_onnxruntime(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        path = onnx_zoo.seeded(name, tmp_path)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    graph = load_model(path)
    # every operator of these files but LRN is one the IR knows (LRN runs in onnxruntime)
    left = {layer.attrs.get("onnx_op_type") for layer in graph.layers if layer.op == ir.OPAQUE}
    assert left <= {"LRN"}, (name, left)
    assert sum(layer.op == ir.CONV2D for layer in graph.layers) >= 5
    manifest = manifest_for(tmp_path, path)
    assert main(["plan", str(manifest), "--no-measure", "--json"]) == 0, capsys.readouterr().err
    plan_file = Path(json.loads(capsys.readouterr().out)["plan_file"])
    got, want, runtime = run_plan(plan_file, path, graph=graph)
    assert runtime == "onnxruntime"
    assert all(np.ptp(v) > 0 for v in want.values()), "the seeded weights give distinct outputs"
    assert max_rel_error(got, want) <= TOLERANCE, name
