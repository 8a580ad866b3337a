"""Quantized ONNX models (QDQ, QOperator, dynamic) import, cut and run like float ones.

The models are real quantizations of a zoo network (SqueezeNet 1.1: Fire modules with Concat,
made small) made here with onnxruntime.quantization:
static QDQ with per-channel weights (QuantizeLinear/DequantizeLinear around float ops), static
QOperator (QLinearConv, QLinearAdd, QGemm) and dynamic (DynamicQuantizeLinear, ConvInteger,
MatMulInteger). Every claim is checked against onnxruntime running the whole model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy import execute, zoo
from edgedeploy.importers import load_model
from edgedeploy.importers.onnx_cut import SegmentCutter
from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import GraphExecutor, max_rel_error, random_inputs
from edgedeploy.runtime.stages import plan_stage_io

SIZE = 32


def _calibration(n: int = 2):
    from onnxruntime.quantization import CalibrationDataReader

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.k = 0

        def get_next(self) -> dict | None:
            self.k += 1
            if self.k > n:
                return None
            rng = np.random.default_rng(self.k)
            return {"input": rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)}

    return Frames()


def _with_matmul_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """A MatMul after the logits, so QLinearMatMul / MatMulInteger appear too."""
    g = model.graph
    logits = g.output[0].name
    w = np.random.default_rng(0).standard_normal((1000, 10)).astype(np.float32) * 0.05
    g.initializer.append(onnx.numpy_helper.from_array(w, "head.weight"))
    g.node.append(onnx.helper.make_node("MatMul", [logits, "head.weight"], ["head"],
                                        name="head"))
    del g.output[:]
    g.output.append(onnx.helper.make_tensor_value_info("head", onnx.TensorProto.FLOAT, [1, 10]))
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SqueezeNet 1.1 in three quantized forms, static weights in 7 bits where this host's
    int8 kernels saturate (as the planner quantizes there): with full-range weights a cut
    model's answer there depends on how onnxruntime fused each side, not on the cut."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    from edgedeploy.boards.detect import saturates_u8s8

    tmp = tmp_path_factory.mktemp("quantized")
    fp32 = str(tmp / "fp32.onnx")
    onnx.save(_with_matmul_head(zoo.build("squeezenet1_1", size=SIZE)), fp32)
    out = {"qdq": tmp / "qdq.onnx", "qoperator": tmp / "qop.onnx", "dynamic": tmp / "dyn.onnx"}
    quantize_static(fp32, str(out["qdq"]), _calibration(), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=saturates_u8s8())
    quantize_static(fp32, str(out["qoperator"]), _calibration(),
                    quant_format=QuantFormat.QOperator, per_channel=True,
                    reduce_range=saturates_u8s8())
    quantize_dynamic(fp32, str(out["dynamic"]), op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    return out


@pytest.fixture(scope="module")
def imported(models) -> dict[str, tuple[ir.Graph, object]]:
    """Each model's graph and one segment provider (the cutter loads the model once)."""
    from edgedeploy.importers.segments import segment_provider

    out = {}
    for kind, path in models.items():
        graph = load_model(path)
        out[kind] = (graph, segment_provider(graph, path))
    return out


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_the_quantized_models_are_what_they_claim(models) -> None:
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _ops(models["qdq"])
    assert {"QLinearConv", "QLinearConcat", "QLinearMatMul"} <= _ops(models["qoperator"])
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= _ops(models["dynamic"])


@pytest.mark.parametrize("kind, dtypes", [("qdq", {"int8"}), ("qoperator", {"int8"}),
                                          ("dynamic", {"uint8", "int32"})])
def test_integer_tensors_keep_their_element_types_and_layers_say_int8(models, kind, dtypes):
    graph = load_model(models[kind])
    assert dtypes <= {t.dtype for t in graph.tensors.values()}
    precisions = {layer.descriptor.precision for layer in graph.layers}
    assert "int8" in precisions
    for layer in graph.layers:  # a layer touching an 8-bit tensor computes in int8
        if {graph.tensors[t].dtype for t in layer.outputs} & {"int8", "uint8"}:
            assert layer.descriptor.precision == "int8", layer.name
    assert graph.inputs[0].dtype == "float32"


def test_qdq_convs_import_as_convs_marked_int8(models) -> None:
    graph = load_model(models["qdq"])
    convs = [layer for layer in graph.layers if layer.op == ir.CONV2D]
    assert len(convs) >= 10
    assert {c.descriptor.precision for c in convs} == {"int8"}
    again = ir.Descriptor.from_dict(convs[0].descriptor.to_dict())
    assert again.precision == "int8"


def test_a_cut_at_an_integer_tensor_declares_its_real_type(models) -> None:
    """The regression: a segment starting at DynamicQuantizeLinear's uint8 output was declared
    float and onnxruntime refused to load it."""
    graph = load_model(models["dynamic"])
    cut = SegmentCutter.for_graph(graph)
    layer = next(x for x in graph.layers if x.attrs.get("onnx_op_type") == "ConvInteger")
    seg = cut(list(layer.inputs), list(layer.outputs))
    sess = ort.InferenceSession(seg, providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in sess.get_inputs()}
    assert {types[t] for t in layer.inputs} == {"tensor(uint8)"}
    assert sess.get_outputs()[0].type == "tensor(int32)"


def test_qdq_segments_keep_the_weights_dequantize_for_onnxruntime(models) -> None:
    """onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into an integer kernel only
    when it sees the weight's DequantizeLinear; a float weight would be re-quantized per tensor."""
    graph = load_model(models["qdq"])
    seg = onnx.load_from_string(SegmentCutter.for_graph(graph)(
        [graph.inputs[0].name], [graph.outputs[0].name]))
    int8 = {t.name for t in seg.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    dq_of_weights = [n for n in seg.graph.node
                     if n.op_type == "DequantizeLinear" and n.input[0] in int8]
    assert len(dq_of_weights) >= 10


def _run_cut(graph: ir.Graph, provider: object, cuts: list[int], choices: dict[str, str],
             feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the stages between ``cuts`` one after the other, as a pipeline would: each stage
    gets only its boundary tensors, in the element types the graph gives them."""
    env = dict(feeds)
    for io in plan_stage_io(graph, cuts):
        run = GraphExecutor(graph, choices, start=io.start, stop=io.stop,
                            segment_provider=provider)
        for name, value in run.run({t: env[t] for t in run.inputs}).items():
            assert value.dtype == np.dtype(graph.tensors[name].dtype), name
            env[name] = value
    return {t.name: env[t.name] for t in graph.outputs}


@pytest.mark.parametrize("kind", ["qdq", "qoperator", "dynamic"])
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_any_contiguous_cut_runs_and_matches_the_whole_model(imported, kind, data) -> None:
    graph, provider = imported[kind]
    n = len(graph.layers)
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), min_size=1, max_size=2)))
    engine = data.draw(st.sampled_from(["onnxruntime", "auto"]))
    choices = execute.resolve_choices(graph, engine)
    feeds = random_inputs(graph, seed=data.draw(st.integers(0, 3)))
    got = _run_cut(graph, provider, cuts, choices, feeds)
    _, want = execute.reference_outputs(graph, feeds)
    # Exact, unless a cut separates a DequantizeLinear from its consumer: the next segment then
    # starts at a float tensor, so onnxruntime runs that consumer in float instead of fusing
    # DequantizeLinear -> Conv -> QuantizeLinear into an integer kernel, and the output moves
    # by a quantization step (1.4 % of its range in one drawn case)
    producer = {t: layer for layer in graph.layers for t in layer.outputs}
    crossing = {t for io in plan_stage_io(graph, cuts)[1:] for t in io.inputs}
    unfused = any(producer[t].attrs.get("onnx_op_type") == "DequantizeLinear"
                  for t in crossing if t in producer)
    assert max_rel_error(got, want) <= (0.05 if unfused else 1e-5), (kind, cuts, engine)


def test_pipeline_stages_hand_integer_tensors_through_rings_of_their_own_type(models) -> None:
    """Two stage processes split where uint8 / int32 tensors cross: the shared-memory ring is
    sized for their element type and the result still matches onnxruntime's whole model."""
    from edgedeploy.runtime.affinity import available_cpus

    path = models["dynamic"]
    graph = load_model(path)
    kinds = {"uint8", "int32"}
    cut = next(k for k in range(1, len(graph.layers)) if
               {graph.tensors[t].dtype for t in plan_stage_io(graph, [k])[0].outputs} & kinds)
    ios = plan_stage_io(graph, [cut])
    cpus = available_cpus()
    stages = [execute.stage_from_io(io, cpus[:1], name=f"s{k}") for k, io in enumerate(ios)]
    choices = execute.resolve_choices(graph, "onnxruntime")
    specs = execute.stage_specs(graph, stages, choices, {})
    crossing = dict(zip(ios[0].outputs, specs[0].outputs, strict=True))
    assert {spec.dtype for spec in crossing.values()} & kinds
    for name, spec in crossing.items():
        assert spec.dtype == graph.tensors[name].dtype
        assert spec.nbytes == graph.tensors[name].nbytes
    request = execute.RunRequest(frames=3, warmup=1, verify=True, pool=2)
    report = execute.run_stages(graph, stages, choices, request, model_path=path)
    assert report.reference == "onnxruntime"
    assert report.max_rel_error is not None and report.max_rel_error <= 1e-5


def test_the_board_runner_hands_integer_tensors_through_rings_of_their_own_type(
        models, tmp_path) -> None:
    """The same split deployed as a bundle: the runner on the board sizes its rings by the
    boundary's element type too (float32 rings refused the int32 tensor), and its health check
    matches the reference outputs."""
    import json
    import subprocess
    import sys

    from edgedeploy.generator import BuildInput, PlanConfig, StageConfig, build_bundle

    path = models["dynamic"]
    graph = load_model(path)
    cut = next(k for k in range(1, len(graph.layers)) if  # a float32 ring cannot hold int32
               "int32" in {graph.tensors[t].dtype for t in plan_stage_io(graph, [k])[0].outputs})
    n = len(graph.layers)
    choices = execute.resolve_choices(graph, "onnxruntime")
    plan = PlanConfig("plan", (StageConfig("stage0", 0, cut, cpus=(0,)),
                               StageConfig("stage1", cut, n, cpus=(0,))), choices, {})
    root = build_bundle(BuildInput("q", "local", "linux", (plan,)), graph, path,
                        tmp_path / "bundle").root
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EDGEDEPLOY_STATE_DIR": str(tmp_path)}
    for args in (["health", "--json"], ["measure", "--frames", "4", "--json"]):
        proc = subprocess.run([sys.executable, "-I", "main.py", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert report.get("ok", True) is True
