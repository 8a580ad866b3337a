"""Static int8 TFLite models with the AI Edge Quantizer, checked by running them in LiteRT.

The networks are built with the project's TFLite builder (the encodings the TF converter emits:
float16 weights behind DEQUANTIZE, sparse ones behind DENSIFY); every figure is LiteRT's.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.importers.test_tflite_quantized import _check

from edgedeploy.errors import ModelError
from edgedeploy.importers import load_model
from edgedeploy.importers.tflite import _op_kind
from edgedeploy.importers.tflite_cut import litert_boundaries
from edgedeploy.importers.tflite_quantize import SIGNATURE, float_model, quantize_tflite
from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights

SIDE = 12


def _net(*, channels: int = 8, float16: bool = False, sparse: bool = False,
         seed: int = 0) -> bytes:
    """conv 3x3 (relu) -> depthwise 3x3, added to its input, then a RELU operator of its own (as
    MediaPipe's models have them) -> two conv 1x1 heads, the outputs. (No MEAN: LiteRT's
    int8 MEAN after the quantizer read far off on such a net, and an output that another
    operator also reads makes a model LiteRT refuses, both seen while writing this; the
    planner's accuracy guard and load check are what catch those on a real model.)"""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder("net")
    x = b.input("image", (1, SIDE, SIDE, 3))
    y = b.conv2d(x, he_weights(rng, (channels, 3, 3, 3), 27), rng.normal(size=channels)
                 .astype(np.float32), activation="relu", float16=float16)
    y = b.relu(b.add(y, b.depthwise_conv2d(y, he_weights(rng, (1, 3, 3, channels), 9),
                                           float16=float16)))
    w = he_weights(rng, (channels, 1, 1, channels), channels)
    if sparse:
        w[rng.random(w.shape) < 0.6] = 0.0
    z = b.conv2d(y, w, np.zeros(channels, np.float32), sparse=[0] if sparse else None)
    head = b.conv2d(y, he_weights(rng, (2, 1, 1, channels), channels), np.zeros(2, np.float32))
    b.output(z, head)
    return b.to_bytes()


def _frames(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"image": rng.uniform(0, 1, (1, SIDE, SIDE, 3)).astype(np.float32)}
            for _ in range(n)]


def _run(data: bytes, frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], frame[d["name"]])
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}


def _kinds(data: bytes) -> list[str]:
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    return [_op_kind(model, op) for op in model.subgraphs[0].operators]


def _old_codes(data: bytes) -> bytes:
    """``data`` as an older converter wrote it: operator codes in deprecated_builtin_code only."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    for code in model.operatorCodes:
        code.builtinCode = 0
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@settings(max_examples=12, deadline=None)
@given(channels=st.integers(1, 12), float16=st.booleans(), sparse=st.booleans(),
       old_codes=st.booleans(), seed=st.integers(0, 2**16))
def test_float_model_computes_what_the_model_computes(channels: int, float16: bool,
                                                      sparse: bool, old_codes: bool,
                                                      seed: int) -> None:
    """Folding DEQUANTIZE/DENSIFY into constants, fusing a RELU into the ADD before it, filling
    operator codes and adding a signature change no output, and leave no weight operator and
    no RELU operator behind."""
    data = _net(channels=channels, float16=float16, sparse=sparse, seed=seed)
    data = _old_codes(data) if old_codes else data
    folded = float_model(data)
    assert not {"DEQUANTIZE", "DENSIFY", "RELU"} & set(_kinds(folded))  # folded, fused
    assert SIGNATURE in Interpreter(model_content=folded).get_signature_list()
    for frame in _frames(2, seed):
        want, got = _run(data, frame), _run(folded, frame)
        assert want.keys() == got.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("old_codes", [False, True])
@pytest.mark.parametrize("float16", [False, True])
def test_quantized_model_runs_int8_kernels_behind_float_inputs_and_outputs(
        float16: bool, old_codes: bool) -> None:
    data = _net(float16=float16, sparse=True)
    data = _old_codes(data) if old_codes else data
    frames = _frames(10)
    q = quantize_tflite(data, frames[:8])
    it = Interpreter(model_content=q)
    it.allocate_tensors()
    assert [d["dtype"] for d in it.get_input_details()] == [np.float32]
    want_names = {d["name"] for d in Interpreter(model_content=data).get_output_details()}
    assert {d["name"] for d in it.get_output_details()} == want_names  # names kept
    assert all(d["dtype"] == np.float32 for d in it.get_output_details())
    # the convolutions run int8: their weights int8 and symmetric (zero point 0)
    weights = [d for d in it.get_tensor_details() if d["name"].endswith("/weights")]
    assert weights and all(d["dtype"] == np.int8 for d in weights)
    assert all(not np.any(d["quantization_parameters"]["zero_points"]) for d in weights)
    assert {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D"} <= set(_kinds(q))
    for frame in frames[8:]:  # within a tenth of the outputs' range
        want, got = _run(data, frame), _run(q, frame)
        scale = max(np.abs(v).max() for v in want.values())
        for name in want:
            assert np.abs(got[name] - want[name]).max() < 0.1 * scale, name


def test_an_output_that_another_operator_reads_quantizes() -> None:
    """An output another operator reads too: that reader is kept float (the quantizer alone
    hands it the float output where it expects int8, and LiteRT refuses the model)."""
    rng = np.random.default_rng(2)
    b = TFLiteBuilder("shared")
    x = b.input("image", (1, SIDE, SIDE, 3))
    y = b.conv2d(x, he_weights(rng, (8, 3, 3, 3), 27), np.zeros(8, np.float32),
                 activation="relu", name="features")
    z = b.conv2d(y, he_weights(rng, (8, 3, 3, 8), 72), np.zeros(8, np.float32), name="head")
    b.output(y, z)
    data, frames = b.to_bytes(), _frames(10)
    q = quantize_tflite(data, frames[:8])
    kinds = {d["name"]: d["dtype"] for d in Interpreter(model_content=q).get_tensor_details()}
    assert kinds["features/weights"] == np.int8 and kinds["head/weights"] == np.float32
    for frame in frames[8:]:
        # within a fifth of the outputs' range: the quantizer's ranges are moving averages of
        # each frame's min and max, so a held-out frame's peak of the relu output is clipped
        # (1.59 read as 1.31 here)
        want, got = _run(data, frame), _run(q, frame)
        assert want.keys() == got.keys()
        scale = max(np.abs(v).max() for v in want.values())
        for name in want:
            assert np.abs(got[name] - want[name]).max() < 0.2 * scale, name


@settings(max_examples=10, deadline=None)
@given(float16=st.booleans(), sparse=st.booleans(), data=st.data())
def test_any_cut_of_the_int8_model_runs_and_matches_it_whole(float16: bool, sparse: bool,
                                                            data: st.DataObject) -> None:
    """The quantizer's int8 model imports like any int8 .tflite: cut at any operator
    boundaries, its LiteRT segments hand int8 tensors on and compute exactly what it does."""
    import tempfile
    from pathlib import Path

    q = quantize_tflite(_net(float16=float16, sparse=sparse), _frames(8))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.tflite"
        path.write_bytes(q)
        graph = load_model(path)
        inner = sorted(litert_boundaries(graph) - {0, len(graph.layers)})
        cuts = data.draw(st.lists(st.sampled_from(inner), unique=True, max_size=3).map(sorted))
        assert _check(path, graph, cuts) == 0.0, cuts
        assert any(graph.tensors[t].dtype == "int8" for t in graph.tensors)


def test_quantize_failures_are_model_errors() -> None:
    with pytest.raises(ModelError, match="not a TFLite model"):
        quantize_tflite(b"not a model at all", _frames(2))
    with pytest.raises(ModelError, match=r"lack the model input\(s\) \['image'\]"):
        quantize_tflite(_net(), [{"picture": np.zeros((1, SIDE, SIDE, 3), np.float32)}])


def test_a_model_holding_placeholders_for_dynamic_sizes_quantizes_at_the_frames_shape() -> None:
    # a converter writes 1 for each dynamic size and -1 in the signature; calibration frames
    # come at the shape the user plans for, so the int8 model is declared at that shape
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(_net(), 0))
    image = model.subgraphs[0].tensors[model.subgraphs[0].inputs[0]]
    image.shape, image.shapeSignature = [1, 1, 1, 3], [1, -1, -1, 3]
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    data = bytes(builder.Output())
    frames = _frames(10)
    q = quantize_tflite(data, frames[:8])
    it = Interpreter(model_content=q)
    assert list(it.get_input_details()[0]["shape"]) == [1, SIDE, SIDE, 3]
    want, got = _run(_net(), frames[9]), _run(q, frames[9])
    scale = max(np.abs(v).max() for v in want.values())
    assert all(np.abs(got[n] - want[n]).max() < 0.1 * scale for n in want)


def test_float_model_names_every_tensor_apart_as_the_importer_does() -> None:
    # the quantizer keys its parameters by tensor name; converters repeat names (onnx-tf's
    # ``arg0`` in both branches of an IF; here two activations of subgraph 0)
    from edgedeploy.importers.tflite import _tensor_names

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(_net(), 0))
    sg = model.subgraphs[0]
    first, second = (sg.operators[k].outputs[0] for k in (0, 1))
    sg.tensors[second].name = sg.tensors[first].name
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    data = bytes(builder.Output())
    named = schema.ModelT.InitFromObj(schema.Model.GetRootAs(float_model(data), 0))
    names = [t.name.decode() for t in named.subgraphs[0].tensors]
    assert len(set(names)) == len(names)
    assert names == _tensor_names(named.subgraphs[0])  # the importer's names, unchanged
    frames = _frames(9)
    q = quantize_tflite(data, frames[:8])
    want, got = _run(data, frames[8]), _run(q, frames[8])
    scale = max(np.abs(v).max() for v in want.values())
    assert all(np.abs(got[n] - want[n]).max() < 0.1 * scale for n in want)
