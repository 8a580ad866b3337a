"""`edgedeploy inspect` through the real CLI entry point: exit codes, JSON on stdout, errors."""

from __future__ import annotations

import json

import onnx
import pytest

from edgedeploy.cli.main import main
from edgedeploy.testing import onnx_models as zoo


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    onnx.save(zoo.pytorch_style_resnet_block(), d / "resnet_block.onnx")
    onnx.save(zoo.dynamic_model(), d / "dynamic.onnx")
    (d / "corrupt.onnx").write_bytes(b"\x08\x07" + b"\x99" * 40)
    return d


def test_inspect_json_prints_layers_and_totals_on_stdout(models, capsys):
    assert main(["inspect", str(models / "resnet_block.onnx"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"name", "op", "descriptor", "flops", "params"} <= set(report["layers"][0])
    assert {"macs", "flops", "params"} <= set(report["totals"])
    convs = [x for x in report["layers"] if x["op"] == "conv2d"]
    assert len(convs) == 3 and all("groups" in x["descriptor"] for x in convs)
    assert report["totals"]["macs"] == sum(x["macs"] for x in report["layers"])


def test_inspect_table_lists_every_layer_and_the_totals(models, capsys):
    assert main(["inspect", str(models / "resnet_block.onnx")]) == 0
    out = capsys.readouterr().out
    assert "/layer1/conv1/Conv" in out and "/fc/Gemm" in out
    assert "GMACs" in out and "ops: conv2d 3" in out


def test_inspect_dynamic_model_needs_input_shape(models, capsys):
    assert main(["inspect", str(models / "dynamic.onnx")]) == 2
    captured = capsys.readouterr()
    assert "--input-shape" in captured.err and captured.out == ""
    assert main(["inspect", str(models / "dynamic.onnx"), "--input-shape", "2,3,16,16",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"][0]["shape"] == [2, 3, 16, 16]


@pytest.mark.parametrize(("args", "message"), [
    (["missing.onnx"], "not found"),
    (["corrupt.onnx"], "not a readable ONNX model"),
    (["dynamic.onnx", "--input-shape", "1,three"], "bad shape"),
])
def test_inspect_bad_input_exits_2_with_a_message_and_no_traceback(models, capsys, args,
                                                                   message):
    argv = ["inspect", str(models / args[0]), *args[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
