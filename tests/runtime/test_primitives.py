"""The primitive registry: names, lookup, applicability, layouts, weight transforms, workspace."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.runtime.errors import ExecutionError
from edgedeploy.runtime.ir import Descriptor
from edgedeploy.runtime.primitives import (
    LAYOUT_OP,
    REGISTRY,
    Activation,
    applicable,
    conv2d_reference,
    get,
    layout_primitive,
    names,
)
from edgedeploy.runtime.primitives._winograd import toom_cook
from edgedeploy.runtime.primitives.fft import next_fast_len
from edgedeploy.testing.primitive_check import conv_descriptor, random_conv_inputs

EXPECTED = {
    "direct/nchw", "direct/nhwc", "im2col_gemm/nchw", "im2col_gemm/nhwc", "gemm_1x1/nchw",
    "gemm_1x1/nhwc", "winograd_f2x3/nchw", "winograd_f2x3/nhwc", "winograd_f4x3/nchw",
    "winograd_f4x3/nhwc", "fft/nchw", "depthwise/nchw", "depthwise/nhwc",
    "layout/nchw_to_nhwc", "layout/nhwc_to_nchw",
}
CONV = sorted(n for n in EXPECTED if not n.startswith("layout/"))


def test_registry_holds_exactly_the_expected_primitives() -> None:
    assert set(names()) == EXPECTED
    assert names() == sorted(names())


def test_every_primitive_declares_family_op_and_layouts_consistent_with_its_name() -> None:
    for name, p in REGISTRY.items():
        assert p.name == name and name.startswith(p.family + "/")
        assert p.op in ("conv2d", LAYOUT_OP)
        assert {p.layout_in, p.layout_out} <= {"nchw", "nhwc"}
        if p.op == "conv2d":
            assert p.layout_in == p.layout_out == name.split("/")[1]


def test_unknown_primitive_raises_execution_error_listing_the_available_names() -> None:
    with pytest.raises(ExecutionError) as exc:
        get("winograd_f9x9/nchw")
    assert "winograd_f9x9/nchw" in str(exc.value)
    for name in EXPECTED:
        assert name in str(exc.value)


@pytest.mark.parametrize(("desc", "expected"), [
    (conv_descriptor(64, 64, 56, 56, 3, 1, 1),
     {"direct", "im2col_gemm", "winograd_f2x3", "winograd_f4x3", "fft"}),
    (conv_descriptor(64, 64, 56, 56, 3, 2, 1), {"direct", "im2col_gemm"}),
    (conv_descriptor(64, 64, 56, 56, 3, 1, 2, dilation=2), {"direct", "im2col_gemm"}),
    (conv_descriptor(64, 128, 56, 56, 1, 1, 0), {"direct", "im2col_gemm", "gemm_1x1"}),
    (conv_descriptor(64, 128, 56, 56, 1, 2, 0), {"direct", "im2col_gemm", "gemm_1x1"}),
    (conv_descriptor(64, 128, 56, 56, 1, 1, 1), {"direct", "im2col_gemm"}),
    (conv_descriptor(32, 32, 28, 28, 3, 1, 1, groups=32), {"direct", "im2col_gemm", "depthwise"}),
    (conv_descriptor(32, 64, 28, 28, 3, 2, 1, groups=32), {"direct", "im2col_gemm", "depthwise"}),
    (conv_descriptor(32, 64, 28, 28, 3, 1, 1, groups=4), {"direct", "im2col_gemm"}),
    (conv_descriptor(3, 64, 224, 224, 7, 2, 3), {"direct", "im2col_gemm"}),
    (conv_descriptor(16, 16, 32, 32, 5, 1, 2), {"direct", "im2col_gemm", "fft"}),
    (conv_descriptor(16, 16, 32, 32, (3, 5), 1, (1, 2, 1, 2)), {"direct", "im2col_gemm", "fft"}),
])
def test_applicability_predicates_select_the_right_families(desc: Descriptor,
                                                            expected: set[str]) -> None:
    assert {p.family for p in applicable(desc)} == expected
    assert all(p.layout_in == "nhwc" for p in applicable(desc, "nhwc"))
    assert {p.family for p in applicable(desc, "nchw")} == expected


def test_non_conv_descriptors_have_no_conv_primitives() -> None:
    assert applicable(Descriptor(op="maxpool", c_in=8, h=8, w=8)) == []


def test_transform_weights_returns_only_numpy_arrays_keeping_bias_and_slope() -> None:
    desc = conv_descriptor(8, 16, 12, 12, 3, 1, 1, has_bias=True)
    dw = conv_descriptor(8, 16, 12, 12, 3, 1, 1, groups=8, has_bias=True)
    one = conv_descriptor(8, 16, 12, 12, 1, 1, 0, has_bias=True)
    for name in CONV:
        d = next(x for x in (desc, dw, one) if get(name).applies(x))
        _, weights = random_conv_inputs(d, act=Activation("prelu"))
        packed = get(name).transform_weights(d, weights)
        assert packed and all(isinstance(v, np.ndarray) for v in packed.values()), name
        np.testing.assert_array_equal(packed["bias"], weights["bias"])
        np.testing.assert_array_equal(packed["slope"], weights["slope"])


def test_workspace_is_positive_where_a_primitive_needs_scratch_memory() -> None:
    d3 = conv_descriptor(32, 32, 28, 28, 3, 1, 1)
    for name in ("direct/nchw", "im2col_gemm/nchw", "im2col_gemm/nhwc", "winograd_f2x3/nchw",
                 "winograd_f4x3/nchw", "fft/nchw"):
        assert get(name).workspace_bytes(d3) > 0, name
    assert get("depthwise/nchw").workspace_bytes(
        conv_descriptor(32, 32, 28, 28, 3, 1, 1, groups=32)) > 0
    assert get("gemm_1x1/nchw").workspace_bytes(conv_descriptor(32, 64, 28, 28, 1)) == 0
    assert get("gemm_1x1/nchw").workspace_bytes(conv_descriptor(32, 64, 28, 28, 1, 2)) > 0
    assert get("layout/nchw_to_nhwc").workspace_bytes(d3) == 0
    # im2col's column buffer grows with the kernel area
    d5 = conv_descriptor(32, 32, 28, 28, 5, 1, 2)
    assert get("im2col_gemm/nchw").workspace_bytes(d5) > get("im2col_gemm/nchw").workspace_bytes(d3)


@given(n=st.integers(1, 2), c=st.integers(1, 16), h=st.integers(1, 9), w=st.integers(1, 9))
def test_layout_primitives_round_trip_and_change_layout(n: int, c: int, h: int, w: int) -> None:
    x = np.random.default_rng(c).standard_normal((n, c, h, w)).astype(np.float32)
    d = Descriptor(op=LAYOUT_OP, n=n, c_in=c, h=h, w=w, c_out=c, h_out=h, w_out=w)
    to_nhwc, to_nchw = layout_primitive("nchw", "nhwc"), layout_primitive("nhwc", "nchw")
    assert to_nhwc is not None and to_nchw is not None
    y = to_nhwc.run(d, {}, x, Activation())
    assert y.shape == (n, h, w, c) and y.flags.c_contiguous
    np.testing.assert_array_equal(y, x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(to_nchw.run(d, {}, y, Activation()), x)
    assert layout_primitive("nchw", "nchw") is None


@pytest.mark.parametrize(("m", "points"), [(2, (0, 1, -1)), (4, (0, 1, -1, 2, -2)),
                                           (4, (0, 1, -1, Fraction(1, 2), -2))])
def test_toom_cook_matrices_compute_the_1d_correlation(m: int, points: tuple) -> None:
    at, g, bt = toom_cook(m, 3, tuple(Fraction(p) for p in points))
    rng = np.random.default_rng(m)
    d, k = rng.standard_normal(m + 2), rng.standard_normal(3)
    expected = np.array([d[i:i + 3] @ k for i in range(m)])
    np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)
    assert np.all(bt == np.round(bt))  # B^T scaled to integers, as in Lavin's matrices


def test_f4x3_matrices_are_lavins_up_to_row_signs() -> None:
    _, _, bt = toom_cook(4, 3, tuple(Fraction(p) for p in (0, 1, -1, 2, -2)))
    lavin = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                      [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]])
    np.testing.assert_array_equal(np.abs(bt), np.abs(lavin))


@pytest.mark.parametrize(("n", "fast"), [(1, 1), (7, 8), (11, 12), (13, 15), (58, 60), (97, 100),
                                         (226, 240)])
def test_fft_sizes_round_up_to_the_next_2_3_5_smooth_number(n: int, fast: int) -> None:
    assert next_fast_len(n) == fast


def test_activation_reads_ir_layer_attrs() -> None:
    act = Activation.from_attrs({"activation": "leakyrelu", "activation_params": {"alpha": 0.2}})
    assert act.kind == "leakyrelu" and act.params["alpha"] == 0.2
    assert Activation.from_attrs({}).kind == "none"
    assert hash(act) == hash(Activation("leakyrelu"))  # usable as a cache key


def test_reference_matches_a_hand_computed_convolution() -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2), dtype=np.float32)
    d = conv_descriptor(1, 1, 4, 4, 2, 2, 0)
    y = conv2d_reference(x, w, np.array([1.0], np.float32), d)
    np.testing.assert_array_equal(y[0, 0], [[0 + 1 + 4 + 5 + 1, 2 + 3 + 6 + 7 + 1],
                                            [8 + 9 + 12 + 13 + 1, 10 + 11 + 14 + 15 + 1]])
