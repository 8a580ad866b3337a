"""Engines: the registry, the onnxruntime segment engine (threads, pinning, spinning, defaults)
and the LiteRT engine, against real onnxruntime and LiteRT."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.runtime import affinity
from edgedeploy.runtime.engines import ENGINES, Engine, available_engines, engine_class
from edgedeploy.runtime.engines.onnxruntime import (
    AFFINITY_KEY,
    SPINNING_KEY,
    OrtSegment,
    ort_default_session,
)
from edgedeploy.runtime.errors import ExecutionError, ModelError


@pytest.fixture(autouse=True)
def restore_affinity():
    """OrtSegment(cpus=...) pins this very process: give the other tests their cores back."""
    before = affinity.available_cpus()
    yield
    affinity.pin_process(before)


def conv_model() -> bytes:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        initializer=[numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


X = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)


def test_registry_holds_every_engine_with_its_declarations():
    assert set(ENGINES) >= {"native", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt",
                            "litert"}
    assert {"native", "onnxruntime", "litert"} <= set(available_engines())
    assert ENGINES["onnxruntime"].is_segment and ENGINES["litert"].is_segment
    assert not ENGINES["native"].is_segment
    assert ENGINES["litert"].formats == ("tflite",) and ENGINES["onnxruntime"].formats == ("onnx",)
    assert ENGINES["onnxruntime-cuda"].on_gpu and ENGINES["onnxruntime-cuda"].providers == (
        "CUDAExecutionProvider",)
    assert "provider:TensorrtExecutionProvider" in ENGINES["onnxruntime-tensorrt"].requires
    assert engine_class("onnxruntime") is OrtSegment


def test_an_unknown_engine_is_an_execution_error_listing_the_known_ones():
    with pytest.raises(ExecutionError) as err:
        engine_class("tensorrt")
    assert "tensorrt" in str(err.value) and "onnxruntime" in str(err.value)


def test_ort_segment_pinned_to_one_cpu_equals_the_default_session():
    cpu = affinity.available_cpus()[0]
    pinned = OrtSegment(conv_model(), cpus=[cpu])
    assert isinstance(pinned, Engine)
    assert os.sched_getaffinity(0) == {cpu}
    assert pinned.intra_op_threads == 1
    assert pinned.config_entry(AFFINITY_KEY) in (None, "")
    default = ort_default_session(conv_model())
    np.testing.assert_array_equal(pinned.run({"x": X})["y"], default.run({"x": X})["y"])


def test_ort_default_session_leaves_every_thread_setting_to_onnxruntime():
    opts = ort_default_session(conv_model()).session.get_session_options()
    assert opts.intra_op_num_threads == 0 and opts.inter_op_num_threads == 0


@pytest.mark.skipif(len(affinity.available_cpus()) < 2, reason="needs two CPUs")
def test_two_thread_segment_pins_the_second_thread_by_1_based_id_and_runs():
    cpus = affinity.available_cpus()[:2]
    seg = OrtSegment(conv_model(), cpus=cpus, allow_spinning=False)
    assert seg.intra_op_threads == 2
    opts = seg.session.get_session_options()
    assert opts.inter_op_num_threads == 1
    assert seg.config_entry(AFFINITY_KEY) == str(cpus[1] + 1)
    assert seg.config_entry(SPINNING_KEY) == "0"
    assert os.sched_getaffinity(0) == set(cpus)
    ref = ort_default_session(conv_model()).run({"x": X})["y"]
    np.testing.assert_allclose(seg.run({"x": X})["y"], ref, rtol=1e-5, atol=1e-5)


def test_every_session_keeps_onnxruntimes_warnings_about_the_model_off_stderr(capfd):
    # a Caffe2 export carries initializers no node reads: onnxruntime warns of each one it
    # removes, once per session, and a plan opens sessions of the model again and again
    import onnxruntime as ort

    proto = onnx.load_from_string(conv_model())
    proto.graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.float32), "unused"))
    model = proto.SerializeToString()
    x = {"x": np.zeros((1, 3, 16, 16), np.float32)}
    ort.set_default_logger_severity(2)  # onnxruntime's own default: warnings shown
    try:
        OrtSegment(model, cpus=affinity.available_cpus()[:1]).run(x)
        assert "unused" not in capfd.readouterr().err
        # the default session too, what a user runs instead: a warning each run would be
        # time only the baseline spends (and lines that bury bench's table)
        ort_default_session(model).run(x)
        assert "unused" not in capfd.readouterr().err
        ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, x)
        assert "Removing initializer 'unused'" in capfd.readouterr().err  # the premise
    finally:  # as the suite runs: test_ops and test_ops_resize set it when imported
        ort.set_default_logger_severity(3)


def test_ort_thread_affinities_gives_one_1_based_group_per_extra_thread():
    assert affinity.ort_thread_affinities([0]) == ""
    assert affinity.ort_thread_affinities([0, 1]) == "2"
    assert affinity.ort_thread_affinities([4, 5, 6, 7]) == "6;7;8"


def test_a_thread_count_without_cpus_sets_threads_but_pins_nothing():
    before = os.sched_getaffinity(0)
    seg = OrtSegment(conv_model(), threads=1)
    assert seg.intra_op_threads == 1 and os.sched_getaffinity(0) == before


def test_ort_segment_names_missing_inputs_and_casts_float64():
    seg = OrtSegment(conv_model(), threads=1)
    with pytest.raises(ExecutionError, match="missing input"):
        seg.run({"input": X})
    out = seg.run({"x": X.astype(np.float64)})["y"]
    assert out.dtype == np.float32 and out.shape == (1, 8, 16, 16)


def test_a_corrupt_model_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"bad\.onnx"):
        OrtSegment(bad)


def tiny_tflite(path):
    """conv(3x3 SAME, relu) -> mean over H, W -> dense, NHWC; returns a numpy reference of it."""
    tb = pytest.importorskip("edgedeploy.testing.tflite_builder",
                             reason="the TFLite test builder is not in this tree")
    rng = np.random.default_rng(2)
    b = tb.TFLiteBuilder("tiny")
    x = b.input("image", (1, 8, 8, 3))
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # OHWI
    fc = rng.standard_normal((2, 4)).astype(np.float32)
    y = b.conv2d(x, w, np.zeros(4, np.float32), padding="SAME", activation="relu")
    b.output(b.fully_connected(b.mean(y, (1, 2)), fc))
    b.save(path)

    def reference(img: np.ndarray) -> np.ndarray:
        p = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)))
        conv = sum(np.einsum("nhwi,oi->nhwo", p[:, i:i + 8, j:j + 8, :], w[:, i, j, :])
                   for i in range(3) for j in range(3))
        return np.maximum(conv, 0).mean(axis=(1, 2)) @ fc.T

    return reference


def test_litert_runs_a_tiny_tflite_model_by_tensor_name(tmp_path):
    path = tmp_path / "tiny.tflite"
    reference = tiny_tflite(path)
    from edgedeploy.runtime.engines.litert import LiteRTModel

    cpu = affinity.available_cpus()[0]
    model = LiteRTModel(path, cpus=[cpu])
    assert isinstance(model, Engine) and model.num_threads == 1
    assert model.input_names == ["image"] and model.input_shape("image") == (1, 8, 8, 3)
    x = np.random.default_rng(3).standard_normal((1, 8, 8, 3)).astype(np.float32)
    (name,) = model.output_names
    out = model.run({"image": x})[name]
    assert out.shape == (1, 2)
    np.testing.assert_allclose(out, reference(x), rtol=1e-4, atol=1e-5)
    again = LiteRTModel(path, num_threads=2).run({"image": x})[name]
    np.testing.assert_allclose(out, again, rtol=1e-5, atol=1e-6)
    batched = LiteRTModel(path, input_shapes={"image": (2, 8, 8, 3)})
    assert batched.input_shape("image") == (2, 8, 8, 3)
    two = batched.run({"image": np.concatenate([x, x])})[name]
    np.testing.assert_allclose(two[1], out[0], rtol=1e-5, atol=1e-6)


def test_litert_names_a_missing_input(tmp_path):
    path = tmp_path / "tiny.tflite"
    tiny_tflite(path)
    from edgedeploy.runtime.engines.litert import LiteRTModel

    with pytest.raises(ExecutionError, match="image"):
        LiteRTModel(path).run({"x": np.zeros((1, 8, 8, 3), np.float32)})


def test_ops_and_engines_import_on_a_device_without_host_packages_or_backends():
    code = (
        "import sys\n"
        "for m in ('onnx', 'onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'pydantic',"
        " 'typer', 'jinja2', 'fabric'):\n"
        "    sys.modules[m] = None\n"
        "from edgedeploy.runtime.ops import OPS\n"
        "from edgedeploy.runtime.engines import available_engines, engine_class\n"
        "from edgedeploy.runtime.errors import ExecutionError\n"
        "assert available_engines() == ['native'], available_engines()\n"
        "try:\n"
        "    engine_class('onnxruntime')(b'')\n"
        "except ExecutionError as e:\n"
        "    assert 'pip install onnxruntime' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
        "print(len(OPS))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "17"


def test_an_fp16_model_takes_the_float32_frames_everything_else_makes():
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(onnx.load_from_string(conv_model())).SerializeToString()
    segment = ort_default_session(half)
    assert segment.session.get_inputs()[0].type == "tensor(float16)"  # the premise
    got = segment.run({"x": X})["y"]  # float32 frames, as a camera pipeline makes them
    want = segment.run({"x": X.astype(np.float16)})["y"]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)
