"""The reference zoo: valid ONNX, runs in onnxruntime, matches the published MAC/param figures.

MACs and params are counted here from the ONNX graph itself (onnx shape inference), not taken
from the builder, so the published figures check the exported file.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgedeploy import zoo
from edgedeploy.errors import ExitCode, InputError

EXPECTED = ["alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v1", "mobilenet_v2",
            "squeezenet1_1", "googlenet", "yolo_tiny"]
#: Sizes for the onnxruntime run: the reference size where cheap, smaller for the heavy ones.
RUN_SIZE = {"alexnet": 64, "vgg16": 64, "resnet50": 64, "resnet18": 96, "googlenet": 96}


# --- counting from the graph ---------------------------------------------------------------------
def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with large initializers turned into shaped inputs: shape inference needs only
    their dims, and skipping their data keeps VGG-16's 550 MB out of the copy. Small constants
    (Resize scales, Clip bounds) stay, since inferred shapes depend on their values."""
    g = model.graph
    big = [t for t in g.initializer if math.prod(t.dims) > 64]
    small = [t for t in g.initializer if math.prod(t.dims) <= 64]
    inputs = list(g.input) + [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                              for t in big]
    graph = helper.make_graph(list(g.node), g.name, inputs, list(g.output), initializer=small)
    return helper.make_model(graph, opset_imports=list(model.opset_import))


def count_macs_params(model: onnx.ModelProto) -> tuple[int, int]:
    """(MACs, params) per the published convention: Conv and Gemm/MatMul multiply-accumulates;
    weights and biases of Conv/Gemm plus BN gamma/beta, but not BN running mean/var."""
    inferred = onnx.shape_inference.infer_shapes(_skeleton(model), strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    macs = params = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            macs += math.prod(shapes[node.output[0]]) * math.prod(dims[node.input[1]][1:])
            params += sum(math.prod(dims[i]) for i in node.input[1:])
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            k = dims[node.input[1]][1 if trans_b else 0]
            macs += math.prod(shapes[node.output[0]]) * k
            params += sum(math.prod(dims[i]) for i in node.input[1:])
        elif node.op_type == "MatMul":
            macs += math.prod(shapes[node.output[0]]) * dims[node.input[1]][0]
            params += math.prod(dims[node.input[1]])
        elif node.op_type == "BatchNormalization":
            params += sum(math.prod(dims[i]) for i in node.input[1:3])
    return macs, params


# --- registry ------------------------------------------------------------------------------------
def test_zoo_lists_exactly_the_reference_architectures() -> None:
    assert zoo.list_models() == EXPECTED
    for name in EXPECTED:
        info = zoo.MODELS[name]
        assert info.source and info.published_macs > 0 and info.published_params > 0


def test_unknown_model_is_bad_input_with_a_suggestion_and_the_list() -> None:
    with pytest.raises(InputError) as exc:
        zoo.build("resnet5O")
    assert exc.value.exit_code == ExitCode.BAD_INPUT
    text = str(exc.value)
    assert "did you mean 'resnet50'" in text
    assert all(name in text for name in EXPECTED)


# --- every model: checker, onnxruntime, published figures ----------------------------------------
@pytest.mark.parametrize("name", EXPECTED)
def test_model_passes_full_check_and_runs_in_onnxruntime(name: str) -> None:
    info = zoo.MODELS[name]
    size = RUN_SIZE.get(name, info.reference_size)
    model = zoo.build(name, size=size, batch=2)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["input"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, size, size), dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input": x}), strict=True))
    assert list(outputs) == list(info.outputs)
    for out in outputs.values():
        assert np.isfinite(out).all()
        assert out.std() > 0  # not a dead network
    if name == "yolo_tiny":
        head = 3 * (5 + 80)
        assert outputs["boxes_stride32"].shape == (2, head, size // 32, size // 32)
        assert outputs["boxes_stride16"].shape == (2, head, size // 16, size // 16)
    else:
        assert outputs["logits"].shape == (2, 1000)
        assert not np.allclose(outputs["logits"][0], outputs["logits"][1])


@pytest.mark.parametrize("name", EXPECTED)
def test_macs_and_params_at_reference_size_are_within_2_percent_of_published(
        name: str, zero_weights: None) -> None:
    info = zoo.MODELS[name]
    model = zoo.build(name)  # reference size (224; 416 for the detector), batch 1
    macs, params = count_macs_params(model)
    assert macs == pytest.approx(info.published_macs, rel=0.02)
    assert params == pytest.approx(info.published_params, rel=0.02)
    # The builder's own bookkeeping (used by `zoo export`'s summary) agrees with the graph.
    assert zoo.model_stats(model) == {"size": info.reference_size, "macs": macs, "params": params}


# --- determinism ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenet_v2", "squeezenet1_1"])
def test_same_seed_gives_byte_identical_models_and_another_seed_other_weights(name: str) -> None:
    a = zoo.build(name, size=64, seed=7).SerializeToString()
    b = zoo.build(name, size=64, seed=7).SerializeToString()
    assert a == b
    m7, m8 = zoo.build(name, size=64, seed=7), zoo.build(name, size=64, seed=8)
    assert [n.SerializeToString() for n in m7.graph.node] == \
        [n.SerializeToString() for n in m8.graph.node]
    for t7, t8 in zip(m7.graph.initializer, m8.graph.initializer, strict=True):
        assert t7.name == t8.name and list(t7.dims) == list(t8.dims)
        if t7.name.endswith(".weight"):
            assert t7.raw_data != t8.raw_data, t7.name


def test_export_writes_the_built_bytes_and_creates_parent_folders(tmp_path) -> None:
    path = zoo.export("squeezenet1_1", tmp_path / "a" / "b" / "sq.onnx", size=64, seed=3)
    assert path.read_bytes() == zoo.build("squeezenet1_1", size=64, seed=3).SerializeToString()
    assert [p.name for p in path.parent.iterdir()] == ["sq.onnx"]  # no temporary left behind


# --- shapes and sizes ----------------------------------------------------------------------------
@settings(max_examples=12)
@given(name=st.sampled_from(["squeezenet1_1", "googlenet", "mobilenet_v1", "resnet18",
                             "yolo_tiny"]),
       size=st.integers(15, 200))
def test_builder_shapes_match_onnx_shape_inference_at_any_valid_size(name: str, size: int) -> None:
    info = zoo.MODELS[name]
    size = max(size - size % info.size_multiple, info.min_size)
    model = zoo.build(name, size=size, num_classes=10)
    inferred = onnx.shape_inference.infer_shapes(_skeleton(model), strict_mode=True)
    declared = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim]
                for o in model.graph.output}
    for out in inferred.graph.output:
        assert [d.dim_value for d in out.type.tensor_type.shape.dim] == declared[out.name]


@pytest.mark.parametrize("name", EXPECTED)
def test_minimum_size_builds_and_anything_smaller_is_rejected(name: str) -> None:
    info = zoo.MODELS[name]
    model = zoo.build(name, size=info.min_size, num_classes=10)
    onnx.checker.check_model(model)
    if info.min_size > 1:
        with pytest.raises(InputError, match="too small"):
            zoo.build(name, size=info.min_size - 1)


def test_detector_size_must_be_a_multiple_of_32() -> None:
    with pytest.raises(InputError, match="multiple of 32"):
        zoo.build("yolo_tiny", size=400)


def test_symbolic_batch_runs_at_any_batch_size() -> None:
    model = zoo.build("resnet18", size=32, batch="N", num_classes=10)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.zeros((n, 3, 32, 32), np.float32)
        assert session.run(None, {"input": x})[0].shape == (n, 10)


def test_num_classes_sets_the_head_width() -> None:
    model = zoo.build("mobilenet_v2", size=32, num_classes=7)
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 7]
    with pytest.raises(InputError):
        zoo.build("mobilenet_v2", num_classes=0)


# --- what the graphs look like -------------------------------------------------------------------
def test_resnet18_looks_like_a_pytorch_export() -> None:
    model = zoo.build("resnet18", size=32)
    nodes = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    conv, bn, relu = nodes["layer1.0.conv1"], nodes["layer1.0.bn1"], nodes["layer1.0.relu"]
    assert (conv.op_type, bn.op_type, relu.op_type) == ("Conv", "BatchNormalization", "Relu")
    assert bn.input[0] == conv.output[0] and relu.input[0] == bn.output[0]
    assert len(conv.input) == 2  # no conv bias before BN, as PyTorch's bias=False
    assert producer[nodes["fc"].input[0]].op_type == "Flatten"
    assert nodes["layer2.0.downsample.0"].op_type == "Conv"
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert inits["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)
    # BN statistics are non-trivial, so an importer that ignores them gets wrong answers.
    assert not np.allclose(inits["layer1.0.bn1.running_mean"], 0)
    assert not np.allclose(inits["layer1.0.bn1.running_var"], 1)
    assert np.all(inits["layer1.0.bn1.running_var"] > 0)


def test_weights_are_he_normal() -> None:
    model = zoo.build("vgg16", size=32, num_classes=10)
    w = next(numpy_helper.to_array(t) for t in model.graph.initializer
             if t.name == "features.28.weight")  # 512x512x3x3
    assert w.mean() == pytest.approx(0.0, abs=1e-3)
    assert w.std() == pytest.approx(math.sqrt(2.0 / (512 * 9)), rel=0.02)


def test_detector_has_an_upsample_and_a_concat_route() -> None:
    model = zoo.build("yolo_tiny", size=64)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Resize") == 1 and ops.count("Concat") == 1
    assert "LeakyRelu" in ops and "BatchNormalization" in ops
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    assert helper.get_attribute_value(
        next(a for a in resize.attribute if a.name == "mode")) == b"nearest"


def test_mobilenet_v2_exports_relu6_as_clip_and_depthwise_as_grouped_conv() -> None:
    model = zoo.build("mobilenet_v2", size=32)
    clips = [n for n in model.graph.node if n.op_type == "Clip"]
    assert clips and all(len(n.input) == 3 for n in clips)
    groups = [helper.get_attribute_value(a) for n in model.graph.node if n.op_type == "Conv"
              for a in n.attribute if a.name == "group"]
    assert max(groups) == 960 and groups.count(1) > 0
    assert all(t.data_type == TensorProto.FLOAT for t in model.graph.initializer)
