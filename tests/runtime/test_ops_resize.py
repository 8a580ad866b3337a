"""Native resize equals onnxruntime's Resize for every supported mode: nearest with each
coordinate transformation and rounding mode, linear (bilinear) with each coordinate transformation,
from scales and from sizes, up and down."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.runtime.errors import ExecutionError
from edgedeploy.runtime.ir import Descriptor, Layer
from edgedeploy.runtime.ops import run_op
from edgedeploy.runtime.ops.resize import original_coords

NEAREST_CTMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                "asymmetric", "tf_half_pixel_for_nn"]
LINEAR_CTMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
               "asymmetric"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]

ort.set_default_logger_severity(3)  # tf_half_pixel_for_nn: deprecated, warns per session


def ort_resize(x: np.ndarray, attrs: dict, scales=None, sizes=None) -> np.ndarray:
    inits = {"roi": np.zeros(0, np.float32)}
    names = ["x", "roi"]
    if scales is not None:
        inits["scales"] = np.asarray(scales, np.float32)
        names.append("scales")
    else:
        inits["sizes"] = np.asarray(sizes, np.int64)
        names += ["", "sizes"]
    node = helper.make_node("Resize", names, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def native_resize(x: np.ndarray, attrs: dict, scales=None, sizes=None) -> np.ndarray:
    a = dict(attrs)
    if scales is not None:
        a["scales"] = list(scales)
    else:
        a["sizes"] = list(sizes)
    return run_op(Layer("r", "resize", ["x"], ["y"], Descriptor("resize"), a), [x], {})[0]


@st.composite
def resize_cases(draw):
    mode = draw(st.sampled_from(["nearest", "linear"]))
    ctm = draw(st.sampled_from(NEAREST_CTMS if mode == "nearest" else LINEAR_CTMS))
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "nearest":
        attrs["nearest_mode"] = draw(st.sampled_from(NEAREST_MODES))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    if draw(st.booleans()):
        factors = st.sampled_from([0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
        fh, fw = draw(factors), draw(factors)
        if int(fh * h) < 1 or int(fw * w) < 1:
            fh = fw = 2.0
        return attrs, (h, w), {"scales": [1.0, 1.0, fh, fw]}
    return attrs, (h, w), {"sizes": [1, 2, draw(st.integers(1, 17)), draw(st.integers(1, 17))]}


def assert_same_or_tie(got_idx: np.ndarray, want_idx: np.ndarray, attrs: dict, n_in: int,
                       scale: float) -> None:
    """Nearest indices must be equal, except where the exact source coordinate sits on a rounding
    boundary: there onnxruntime's float rounding (one ulp either way) decides, not the spec."""
    diff = np.flatnonzero(got_idx != want_idx)
    if diff.size == 0:
        return
    coords = original_coords(attrs["coordinate_transformation_mode"], got_idx.size, n_in,
                             np.float32(scale)).astype(np.float64)
    boundary = 0.0 if attrs["nearest_mode"] in ("floor", "ceil") else 0.5
    off = np.abs((coords[diff] - boundary) - np.round(coords[diff] - boundary))
    assert (off < 1e-5).all() and (np.abs(got_idx - want_idx)[diff] == 1).all(), (
        f"indices differ away from a tie at outputs {diff.tolist()}: {got_idx} vs {want_idx}")


@given(resize_cases())
def test_resize_matches_onnxruntime_for_every_mode(case):
    attrs, (h, w), size = case
    if attrs["mode"] == "nearest":  # encode (row, col) in the values to read back the indices
        x = (np.arange(h)[:, None] * 100 + np.arange(w)[None, :]).astype(np.float32)
        x = np.broadcast_to(x, (1, 2, h, w)).copy()
    else:
        x = np.random.default_rng(h * 31 + w).standard_normal((1, 2, h, w)).astype(np.float32)
    want = ort_resize(x, attrs, **size)
    got = native_resize(x, attrs, **size)
    assert got.shape == want.shape
    if attrs["mode"] == "linear":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        return
    if got.shape[2:] == (h, w):
        np.testing.assert_array_equal(got, want)
        return
    scales = size.get("scales") or [o / i for o, i in zip(size["sizes"], x.shape, strict=True)]
    assert_same_or_tie(got[0, 0, :, 0] // 100, want[0, 0, :, 0] // 100, attrs, h, scales[2])
    assert_same_or_tie(got[0, 0, 0, :] % 100, want[0, 0, 0, :] % 100, attrs, w, scales[3])


@pytest.mark.parametrize("ctm", NEAREST_CTMS)
@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
def test_nearest_by_integer_factors_equals_onnxruntime_exactly(ctm, nearest_mode):
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(1, 2, 3, 5)
    attrs = {"mode": "nearest", "coordinate_transformation_mode": ctm,
             "nearest_mode": nearest_mode}
    for sizes in ([1, 2, 6, 10], [1, 2, 9, 15], [1, 2, 12, 20], [1, 2, 1, 1]):
        np.testing.assert_array_equal(native_resize(x, attrs, sizes=sizes),
                                      ort_resize(x, attrs, sizes=sizes))


def test_resize_without_scales_or_sizes_uses_the_descriptor_output_size():
    x = np.ones((1, 1, 2, 3), np.float32)
    layer = Layer("r", "resize", ["x"], ["y"], Descriptor("resize", h_out=4, w_out=6),
                  {"mode": "nearest"})
    assert run_op(layer, [x], {})[0].shape == (1, 1, 4, 6)


def test_unsupported_resize_modes_raise_an_execution_error_naming_the_layer():
    x = np.ones((1, 1, 2, 2), np.float32)
    layer = Layer("up3", "resize", ["x"], ["y"], Descriptor("resize"),
                  {"mode": "cubic", "scales": [1, 1, 2, 2]})
    with pytest.raises(ExecutionError, match=r"up3.*cubic"):
        run_op(layer, [x], {})
