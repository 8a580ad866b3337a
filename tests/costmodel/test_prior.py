from __future__ import annotations

import numpy as np
import pytest

from edgedeploy.boards.catalog import list_targets, load_target
from edgedeploy.costmodel import CoreConfig, CostModel
from edgedeploy.costmodel.model import candidates
from edgedeploy.costmodel.shapes import conv_descriptor


def test_prior_grows_with_flops_for_every_primitive():
    model = CostModel(load_target("rpi4"))
    cfg = CoreConfig("a72", 4)
    for c_out in (32, 64, 128, 256):
        small = conv_descriptor(64, c_out, 28, 3)
        big = conv_descriptor(64, c_out * 2, 28, 3)
        for prim in candidates(small):
            a, b = model.predict([small, big], [prim, prim], [cfg, cfg])
            assert b > a, (prim, c_out)


def test_prior_falls_with_more_cores_for_blas_backed_primitives():
    model = CostModel(load_target("rpi4"))
    d = conv_descriptor(128, 128, 28, 3)
    for prim in ("im2col_gemm/nchw", "winograd_f4x3/nchw", "gemm_1x1/nchw", "onnxruntime"):
        if prim == "gemm_1x1/nchw":
            d = conv_descriptor(128, 128, 28, 1)
        times = model.predict([d] * 4, [prim] * 4, [CoreConfig("a72", n) for n in (1, 2, 3, 4)])
        assert np.all(np.diff(times) < 0), (prim, times)


@pytest.mark.parametrize("board", [b for b in list_targets() if b != "local"])
def test_every_catalogue_board_gets_finite_cpu_predictions_without_a_profile(board):
    model = CostModel(load_target(board))
    d = conv_descriptor(64, 64, 56, 3)
    prims = candidates(d)
    for cfg in model.configs:
        t = model.predict([d] * len(prims), prims, [cfg] * len(prims))
        if cfg.is_gpu:
            assert np.isfinite(t[prims.index("onnxruntime")]) and np.isinf(t[0])
        else:
            assert np.isfinite(t).all() and (t > 0).all()


def test_faster_clock_predicts_faster():
    slow = CostModel(load_target("rpi4"))
    fast = CostModel(load_target("rpi5"))
    d = conv_descriptor(64, 64, 56, 3)
    a = slow.predict([d], ["im2col_gemm/nchw"], [slow.configs[-1]])[0]
    b = fast.predict([d], ["im2col_gemm/nchw"], [fast.configs[-1]])[0]
    assert b < a


def test_transfer_cost_is_zero_within_a_configuration_and_positive_across():
    model = CostModel(load_target("jetson-tx2"))
    a, b, g = CoreConfig("denver", 2), CoreConfig("a57", 4), CoreConfig("gpu", 1)
    assert model.transfer_ms(10**6, a, a) == 0
    assert 0 < model.transfer_ms(10**6, a, b) < model.transfer_ms(10**7, a, b)
    assert model.transfer_ms(10**6, a, g) > 0
    assert model.layout_transform_ms(10**6, a) > model.layout_transform_ms(10**4, a) > 0


def test_a_hop_between_two_stages_costs_within_one_cluster_too():
    """Two stages are two processes whatever their cores: a hop within a cluster pays the
    ring's hand-over and a copy, below a hop across clusters of the same bytes."""
    model = CostModel(load_target("jetson-tx2"))
    within = model.hop_ms(10**6, "a57", "a57")
    assert 0 < within < model.hop_ms(10**7, "a57", "a57")
    assert within < model.hop_ms(10**6, "denver", "a57") == model.transfer_ms(
        10**6, CoreConfig("denver", 1), CoreConfig("a57", 1))
    assert model.hop_ms(10**6, "a57", "gpu") == model.transfer_ms(
        10**6, CoreConfig("a57", 1), CoreConfig("gpu", 1))


@pytest.mark.parametrize("family", ["gemm_1x1", "im2col_gemm", "direct"])
def test_threads_divide_the_rows_of_a_numpy_gemm(family):
    """An NHWC variant's GEMM has a row per pixel, an NCHW one a row per output channel, and
    OpenBLAS's threads divide the rows: with threads, the layout with few rows is the slower
    one, on one thread the two orders tie (but for the NHWC variants' fixed penalty)."""
    from edgedeploy.costmodel.prior import NHWC_PENALTY

    model = CostModel(load_target("rpi4"))
    few_pixels = conv_descriptor(512, 1024, 7, 1)  # 49 pixel rows against 1024 channel rows
    few_channels = conv_descriptor(256, 16, 28, 1)  # 16 channel rows against 784 pixel rows
    nchw, nhwc = f"{family}/nchw", f"{family}/nhwc"

    def ratio(d: object, cores: int) -> float:
        cfg = CoreConfig("a72", cores)
        a, b = model.predict([d, d], [nhwc, nchw], [cfg, cfg])
        return float(a / b) / NHWC_PENALTY

    for d in (few_pixels, few_channels):
        assert ratio(d, 1) == pytest.approx(1.0, abs=0.02), d
    assert ratio(few_pixels, 4) > 1.05 and ratio(few_channels, 4) < 1 / 1.05
    assert ratio(few_pixels, 4) > ratio(few_pixels, 2) > 1.0


def test_threads_do_not_divide_an_engines_rows():
    """onnxruntime and LiteRT partition a conv in two dimensions: few output channels cost
    them no more per FLOP with more threads than many do."""
    model = CostModel(load_target("rpi4"))
    few, many = conv_descriptor(256, 16, 28, 1), conv_descriptor(256, 64, 28, 1)
    for engine in ("onnxruntime", "litert"):
        speedups = []
        for d in (few, many):
            one, four = model.predict([d, d], [engine, engine],
                                      [CoreConfig("a72", 1), CoreConfig("a72", 4)])
            speedups.append(one / four)
        assert speedups[0] == pytest.approx(speedups[1], rel=0.05), engine
