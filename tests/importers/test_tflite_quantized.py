"""int8/uint8, sparse and custom-op TFLite models: imported, cut into LiteRT segments, checked.

Models are written with the test builder (per-channel and per-tensor int8 convolutions, a uint8
pool, sparse weights behind DENSIFY as the TF converter stores pruned models) and every result is
compared with LiteRT running the original file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy import execute
from edgedeploy.errors import ExitCode, ModelError, UnsupportedModelError
from edgedeploy.importers import load_model
from edgedeploy.importers.segments import segment_provider
from edgedeploy.importers.tflite_cut import litert_boundaries
from edgedeploy.importers.tflite_sparse import densify
from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import GraphExecutor, max_rel_error, random_inputs
from edgedeploy.runtime.stages import plan_stage_io
from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights
from edgedeploy.testing.tflite_sparse import sparse_encode


def _pruned(rng: np.random.Generator, shape: tuple[int, ...], keep: float = 0.3) -> np.ndarray:
    w = he_weights(rng, shape, int(np.prod(shape[1:])))
    return np.where(rng.random(shape) < keep, w, 0.0).astype(np.float32)


def _check(path: Path, graph: ir.Graph, cuts: list[int] | None = None,
           choices: dict[str, str] | None = None, seed: int = 0) -> float:
    """max_rel_error of the graph run in stages (split at ``cuts``) against LiteRT."""
    provider = segment_provider(graph, path)
    feeds = random_inputs(graph, seed)
    env = dict(feeds)
    for io in plan_stage_io(graph, cuts or []):
        run = GraphExecutor(graph, choices, start=io.start, stop=io.stop,
                            segment_provider=provider)
        for name, value in run.run({t: env[t] for t in run.inputs}).items():
            assert value.dtype == np.dtype(graph.tensors[name].dtype), name
            env[name] = value
    runtime, ref = execute.reference_outputs(graph, feeds)
    assert runtime == "litert"
    return max_rel_error({k: env[k] for k in ref}, ref)


# --- sparse constants --------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_densify_inverts_the_sparsity_encoding(data) -> None:
    rank = data.draw(st.integers(1, 4))
    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    csr = data.draw(st.sets(st.integers(0, rank - 1), max_size=rank))
    block = None
    if data.draw(st.booleans()):
        dim = data.draw(st.integers(0, rank - 1))
        size = data.draw(st.sampled_from([d for d in (1, 2, 3) if shape[dim] % d == 0]))
        block = (dim, size)
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    dense = np.where(rng.random(shape) < 0.4, rng.standard_normal(shape), 0).astype(np.float32)
    values, sparsity = sparse_encode(dense, sorted(csr), block)
    np.testing.assert_array_equal(densify(values, shape, sparsity), dense)


def _sparse_model(path: Path, *, float16: bool, block: tuple[int, int] | None) -> Path:
    rng = np.random.default_rng(5)
    b = TFLiteBuilder("sparse")
    x = b.input("input", (1, 12, 12, 8))
    y = b.conv2d(x, _pruned(rng, (16, 1, 1, 8)), activation="relu", float16=float16,
                 sparse=[3], block=block, name="pw")
    y = b.conv2d(y, _pruned(rng, (8, 3, 3, 16)), float16=float16, sparse=[0, 3], name="conv")
    b.output(y)
    return b.save(path)


@pytest.mark.parametrize("float16, block", [(False, None), (True, None), (False, (3, 4)),
                                            (True, (0, 2))])
def test_sparse_weights_are_densified_on_import_and_match_litert(tmp_path, float16, block):
    path = _sparse_model(tmp_path / "s.tflite", float16=float16, block=block)
    graph = load_model(path)
    assert [x.op for x in graph.layers] == [ir.CONV2D, ir.CONV2D]  # DENSIFY left no layer
    weight = graph.weights[graph.layers[0].weights["weight"]]
    assert weight.dtype == np.float32 and 0 < np.count_nonzero(weight) < weight.size
    assert _check(path, graph) <= 1e-5


def test_sparsity_that_does_not_cover_its_values_is_a_clear_model_error(tmp_path) -> None:
    path = _sparse_model(tmp_path / "s.tflite", float16=False, block=None)
    from edgedeploy.importers.tflite_cut import _parse

    model = _parse(path.read_bytes())
    meta = next(t for t in model.subgraphs[0].tensors if t.sparsity is not None)
    meta.sparsity.dimMetadata[-1].arrayIndices.values = [0]  # one index for many values
    import flatbuffers

    fb = flatbuffers.Builder(1024)
    fb.Finish(model.Pack(fb), file_identifier=b"TFL3")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(fb.Output()))
    with pytest.raises(ModelError, match="sparsity"):
        load_model(bad)


# --- int8 / uint8 ------------------------------------------------------------------------------
def _int8_model(path: Path, *, per_channel: bool) -> Path:
    rng = np.random.default_rng(3)
    b = TFLiteBuilder("int8")
    x = b.input("input", (1, 10, 10, 3))
    q = b.quantize(x, 0.05, 3, name="input_int8")
    c = b.conv2d_int8(q, he_weights(rng, (8, 3, 3, 3), 27), rng.standard_normal(8) * 0.1,
                      out_scale=0.08, out_zero_point=-5, activation="relu",
                      per_channel=per_channel, name="conv1")
    c = b.conv2d_int8(c, he_weights(rng, (4, 3, 3, 8), 72), np.zeros(4), out_scale=0.1,
                      stride=2, per_channel=per_channel, name="conv2")
    b.output(b.dequantize(c, name="output"))
    return b.save(path)


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_models_run_through_litert_segments_cut_at_int8_tensors(tmp_path, per_channel):
    path = _int8_model(tmp_path / "q.tflite", per_channel=per_channel)
    graph = load_model(path)
    assert [x.attrs["tflite_op"] for x in graph.layers] == ["QUANTIZE", "CONV_2D", "CONV_2D",
                                                            "DEQUANTIZE"]
    assert {x.descriptor.precision for x in graph.layers} == {"int8"}
    assert graph.tensors["conv1"].dtype == "int8"
    assert graph.source["quantization"]["conv1"]["zero_point"] == [-5]
    assert litert_boundaries(graph) == frozenset(range(5))
    assert _check(path, graph) == 0.0  # one segment: the file itself
    for cuts in ([1], [2], [1, 3], [2, 3]):  # boundaries carry int8 tensors
        assert _check(path, graph, cuts) == 0.0, cuts


def test_uint8_model_keeps_uint8_between_segments(tmp_path) -> None:
    b = TFLiteBuilder("uint8")
    x = b.input("input", (1, 8, 8, 4))
    q = b.quantize(x, 0.02, 128, dtype="uint8", name="input_u8")
    p = b.max_pool2d_quantized(q, 2, 2, name="pool_u8")
    b.output(b.dequantize(p, name="output"))
    path = b.save(tmp_path / "u8.tflite")
    graph = load_model(path)
    assert graph.tensors["pool_u8"].dtype == "uint8"
    assert _check(path, graph, [1]) == 0.0 and _check(path, graph, [2]) == 0.0


def test_a_model_with_an_int8_input_takes_int8_frames(tmp_path) -> None:
    rng = np.random.default_rng(1)
    b = TFLiteBuilder("int8_in")
    q = b.tensor("input", (1, 6, 6, 3), "int8", scale=[0.1], zero_point=[0])
    b.inputs.append(q)
    c = b.conv2d_int8(q, he_weights(rng, (4, 1, 1, 3), 3), np.zeros(4), out_scale=0.2,
                      name="conv")
    b.output(c)
    path = b.save(tmp_path / "i8.tflite")
    graph = load_model(path)
    assert graph.inputs[0].dtype == "int8" and graph.outputs[0].dtype == "int8"
    feeds = random_inputs(graph, 0)
    assert feeds["input"].dtype == np.int8 and feeds["input"].min() < -64
    assert _check(path, graph) == 0.0


# --- custom operators and overridden shapes -----------------------------------------------------
def test_a_custom_operator_litert_lacks_is_named_at_import(tmp_path) -> None:
    b = TFLiteBuilder("custom")
    x = b.input("input", (1, 4, 4, 2))
    out = b.tensor("custom_out", (1, 4, 4, 2))
    b.op(schema.BuiltinOperator.CUSTOM, [x], [out])
    b.opcodes[-1].customCode = "EdgeDeployTestOnlyOp"
    b.output(b.relu(out))
    with pytest.raises(UnsupportedModelError) as info:
        load_model(b.save(tmp_path / "c.tflite"))
    assert "EdgeDeployTestOnlyOp" in info.value.message
    assert info.value.exit_code == ExitCode.BAD_INPUT and info.value.hint


def test_a_batch_override_reaches_litert_operators_and_their_reshapes(tmp_path) -> None:
    """An operator the IR keeps for LiteRT (ABS here) gets LiteRT's own output shape for the
    new batch, and the RESHAPE after it follows."""
    b = TFLiteBuilder("batch")
    x = b.input("input", (1, 6, 6, 4))
    y = b.unary(b.relu(x), "ABS")
    b.output(b.reshape(y, (-1, 144)))
    path = b.save(tmp_path / "b.tflite")
    graph = load_model(path, input_shape=(3, 6, 6, 4))  # the model's own layout, NHWC
    assert graph.outputs[0].shape == (3, 144)
    assert _check(path, graph) <= 1e-6 and _check(path, graph, [1, 2]) <= 1e-6
