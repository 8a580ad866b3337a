"""Timing two models in alternation (``runtime.model_timing.paired_ms``)."""

from __future__ import annotations

import numpy as np

from edgedeploy.importers.onnx_winograd import ConvSite
from edgedeploy.planner.winograd import in_context
from edgedeploy.runtime.affinity import available_cpus, pin_process
from edgedeploy.runtime.model_timing import paired_ms


def test_paired_timing_reads_each_model_in_the_callers_order() -> None:
    before = available_cpus()
    light = in_context(ConvSite("conv", 16, 16, 28, 28)).SerializeToString()
    heavy = in_context(ConvSite("conv", 16, 256, 28, 28)).SerializeToString()  # 16x the 3x3 work
    x = {"x": np.random.default_rng(0).standard_normal((1, 16, 28, 28)).astype(np.float32)}
    one = before[:1]
    try:
        heavy_ms, light_ms = paired_ms(heavy, light, x, one, pairs=5)
        assert heavy_ms > 2 * light_ms > 0
        light_ms, heavy_ms = paired_ms(light, heavy, x, one, pairs=5)
        assert heavy_ms > 2 * light_ms > 0
        same, again = paired_ms(light, light, x, one, pairs=5)
        assert 0.5 < same / again < 2.0
    finally:
        pin_process(before)  # it leaves the process pinned where it timed, as session_ms does
