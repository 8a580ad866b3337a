"""A primitive that runs another's GEMM plus passes (``CostTerms.same_gemm``) is priced, once
calibrated, as that one's time plus its passes: on a 1x1 conv, im2col and direct are gemm_1x1's
GEMM plus a copy, and a few per cent of calibration error on the GEMM must not reorder them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy.boards.catalog import load_target
from edgedeploy.costmodel import CoreConfig, CostModel, Sample
from edgedeploy.costmodel.features import descriptor_matrix, key_table, primitive_key
from edgedeploy.costmodel.model import SAME_GEMM_MIN_PAIRS, candidates
from edgedeploy.costmodel.prior import same_gemm_keys
from edgedeploy.costmodel.shapes import conv_descriptor

TARGET = "rpi4"
#: What the synthetic board's copies cost against the prior's passes.
TRUE_SCALE = 0.4


def _refs(d, names: list[str]) -> list[str | None]:
    keys = same_gemm_keys(descriptor_matrix([d] * len(names)),
                          np.array([primitive_key(n) for n in names]))
    return [None if k < 0 else key_table().keys[k] for k in keys]


def test_pointwise_im2col_and_direct_run_gemm_1x1s_gemm_in_their_own_layout():
    d = conv_descriptor(256, 512, 14, 1)
    names = candidates(d)
    refs = dict(zip(names, _refs(d, names), strict=True))
    for layout in ("nchw", "nhwc"):
        assert refs[f"im2col_gemm/{layout}"] == refs[f"direct/{layout}"] == f"gemm_1x1/{layout}"
        assert refs[f"gemm_1x1/{layout}"] is None
    assert refs["onnxruntime"] is None and refs["litert"] is None


@pytest.mark.parametrize("d", [
    conv_descriptor(256, 512, 14, 3),  # taps: a column matrix, not the input
    conv_descriptor(256, 512, 14, 1, stride=2),  # a subsampled copy first, in both
    conv_descriptor(64, 64, 14, 3, groups=64),  # depthwise
])
def test_no_shared_gemm_where_the_operands_differ(d):
    names = candidates(d)
    assert _refs(d, names) == [None] * len(names)


def _synthetic_samples(model: CostModel, scale: float, pointwise: int) -> list[Sample]:
    """Every candidate on a mix of shapes, 'measured' as the prior times a per-primitive factor;
    on ``pointwise`` 1x1 shapes, im2col and direct measure gemm_1x1 plus ``scale`` times the
    prior's extra passes."""
    shapes = [conv_descriptor(c, 2 * c, s, k) for c in (32, 96) for s in (14, 28) for k in (3, 5)]
    ones = [conv_descriptor(c, c * m, s, 1) for c, m, s in
            ((64, 2, 28), (128, 4, 14), (256, 2, 14), (512, 2, 7), (96, 6, 28), (384, 1, 14),
             (48, 4, 56), (160, 6, 7))][:pointwise]
    rng = np.random.default_rng(0)
    factor = {p: float(f) for p, f in zip(sorted({p for d in shapes + ones for p in candidates(d)}),
                                          rng.uniform(0.6, 1.6, 64), strict=False)}
    out = []
    for d in shapes + ones:
        names = [p for p in candidates(d) if p != "litert"]
        for cfg in model.configs:
            prior = model.predict([d] * len(names), names, [cfg] * len(names))
            ms = {p: t * factor[p] for p, t in zip(names, prior, strict=True)}
            for p, ref in zip(names, _refs(d, names), strict=True):
                if ref is not None:
                    extra = prior[names.index(p)] - prior[names.index(ref)]
                    ms[p] = ms[ref] + scale * extra
            out += [Sample(d, p, cfg, t) for p, t in ms.items()]
    return out


def test_calibration_learns_the_scale_of_the_extra_passes_and_keeps_the_gap():
    target = load_target(TARGET)
    prior = CostModel(target)
    model = CostModel.fit(target, _synthetic_samples(prior, TRUE_SCALE, pointwise=8))
    group = {primitive_key(p) * 1000 + i for p in ("im2col_gemm/nchw", "direct/nhwc")
             for i in range(len(model.configs))}
    assert group <= set(model.same_gemm_scale)
    for g in group:
        assert model.same_gemm_scale[g] == pytest.approx(TRUE_SCALE, rel=1e-6)
    d, cfg = conv_descriptor(320, 1280, 7, 1), CoreConfig("a72", 4)  # a shape never measured
    names = ["gemm_1x1/nchw", "im2col_gemm/nchw", "direct/nchw"]
    cal = model.predict([d] * 3, names, [cfg] * 3)
    base = prior.predict([d] * 3, names, [cfg] * 3)
    np.testing.assert_allclose(cal[1:] - cal[0], TRUE_SCALE * (base[1:] - base[0]), rtol=1e-9)


def test_one_noisy_large_layer_does_not_set_the_scale():
    # the largest 1x1 layer's gemm_1x1 read 1.6x slow, as one did on a 2-core profile: im2col
    # and direct then measure faster than it there, by more than the other layers' gaps
    target = load_target(TARGET)
    prior = CostModel(target)
    samples = _synthetic_samples(prior, TRUE_SCALE, pointwise=8)
    largest = max((s.descriptor for s in samples if s.descriptor.kernel_h == 1),
                  key=lambda d: d.c_in * d.c_out * d.h * d.w)
    noisy = [Sample(s.descriptor, s.primitive, s.config,
                    s.ms * 1.6 if s.descriptor == largest and s.primitive.startswith("gemm_1x1")
                    else s.ms) for s in samples]
    model = CostModel.fit(target, noisy)
    for p in ("im2col_gemm/nchw", "im2col_gemm/nhwc", "direct/nchw", "direct/nhwc"):
        for i in range(len(model.configs)):
            assert model.same_gemm_scale[primitive_key(p) * 1000 + i] == pytest.approx(
                TRUE_SCALE, rel=1e-6)


def test_too_few_measured_pairs_leave_the_calibration_as_it_was():
    target = load_target(TARGET)
    model = CostModel.fit(target, _synthetic_samples(CostModel(target), TRUE_SCALE,
                                                     pointwise=SAME_GEMM_MIN_PAIRS - 1))
    assert model.correction is not None and model.same_gemm_scale == {}
    assert model.digest() != CostModel.fit(
        target, _synthetic_samples(CostModel(target), TRUE_SCALE, pointwise=8)).digest()


@settings(max_examples=40, deadline=None)
@given(c_in=st.integers(8, 1024), c_out=st.integers(8, 2048), size=st.integers(4, 112),
       cores=st.integers(1, 4), nhwc=st.booleans())
def test_the_same_gemm_plus_passes_is_never_predicted_faster(c_in, c_out, size, cores, nhwc):
    model = _fitted()
    d, cfg = conv_descriptor(c_in, c_out, size, 1), CoreConfig("a72", cores)
    lay = "nhwc" if nhwc else "nchw"
    names = [f"gemm_1x1/{lay}", f"im2col_gemm/{lay}", f"direct/{lay}"]
    ms = model.predict([d] * 3, names, [cfg] * 3)
    assert ms[1] >= ms[0] and ms[2] >= ms[0]


_MODEL: list[CostModel] = []


def _fitted() -> CostModel:
    if not _MODEL:
        target = load_target(TARGET)
        _MODEL.append(CostModel.fit(target, _synthetic_samples(CostModel(target), TRUE_SCALE, 8)))
    return _MODEL[0]
