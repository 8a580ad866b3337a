"""Calibration and transfer on synthetic boards whose true correction is known."""

from __future__ import annotations

import numpy as np

from edgedeploy.boards.catalog import load_target
from edgedeploy.costmodel import CoreConfig, CostModel, Sample
from edgedeploy.costmodel.fit import Correction, fine_tune, fit_correction
from edgedeploy.costmodel.model import candidates
from edgedeploy.costmodel.shapes import space_filling


def _synthetic(model: CostModel, shapes, truth, seed=0, noise=0.05) -> list[Sample]:
    """Samples whose time is the prior times a known function of the descriptor."""
    rng = np.random.default_rng(seed)
    rows = [(d, p, c) for d in shapes for p in candidates(d) for c in model.configs
            if not c.is_gpu]
    prior = model.predict([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    return [Sample(d, p, c, float(t * truth(d, p, c) * np.exp(rng.normal(0, noise))))
            for (d, p, c), t in zip(rows, prior, strict=True)]


def _truth_a(d, p, c):
    fam = {"direct": 2.5, "fft": 0.4, "onnxruntime": 0.6}.get(p.split("/")[0], 1.3)
    return fam * (1.0 + 0.3 * np.log2(c.cores)) * (d.c_in / 64) ** 0.1


def _mape(model, samples):
    pred = model.predict([s.descriptor for s in samples], [s.primitive for s in samples],
                         [s.config for s in samples])
    meas = np.array([s.ms for s in samples])
    return float(np.mean(np.abs(pred - meas) / meas))


def test_fit_recovers_a_known_correction_on_unseen_shapes():
    target = load_target("rk3399")
    prior = CostModel(target)
    train = _synthetic(prior, space_filling(30, seed=1), _truth_a)
    test = _synthetic(prior, space_filling(15, seed=7), _truth_a, seed=3)
    fitted = CostModel.fit(target, train)
    assert fitted.correction is not None
    assert _mape(fitted, test) < 0.5 * _mape(prior, test)
    assert _mape(fitted, test) < 0.12


def test_transfer_with_few_samples_beats_the_untransferred_model():
    source, dest = load_target("rk3399"), load_target("rpi4")
    train = _synthetic(CostModel(source), space_filling(30, seed=1), _truth_a)
    src_model = CostModel.fit(source, train)

    def truth_b(d, p, c):  # the new board: everything 1.8x slower, threading scales worse
        return _truth_a(d, p, c) * 1.8 / (1.0 + 0.2 * np.log2(c.cores))

    dest_prior = CostModel(dest)
    pool = _synthetic(dest_prior, space_filling(12, seed=2), truth_b, seed=4)
    k = [pool[i] for i in np.random.default_rng(0).permutation(len(pool))[:15]]
    test = _synthetic(dest_prior, space_filling(15, seed=9), truth_b, seed=5)
    untransferred = CostModel(dest, src_model.correction)
    transferred = src_model.transferred(dest, k)
    assert _mape(transferred, test) < 0.6 * _mape(untransferred, test)
    assert _mape(transferred, test) < 0.25


def test_robust_fit_ignores_a_wild_outlier():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = x @ np.array([0.5, -0.2, 0.1]) + 0.3
    y_bad = y.copy()
    y_bad[0] += 8.0  # a preempted measurement
    c = fit_correction(x, y_bad, lam=0.01)
    assert np.max(np.abs(c.predict_log(x[1:]) - y[1:])) < 0.1


def test_correction_round_trips_through_json():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 20))
    base = fit_correction(x, x[:, 0] * 0.3, lam=1.0)
    tuned = fine_tune(base, np.hstack([x[:10], np.zeros((10, 0))]), x[:10, 0] * 0.3 + 0.2)
    again = Correction.from_dict(tuned.to_dict())
    np.testing.assert_allclose(again.predict_log(x), tuned.predict_log(x), atol=1e-6)


def test_too_few_samples_leave_the_prior_alone():
    target = load_target("rpi4")
    d = space_filling(1)[0]
    model = CostModel.fit(target, [Sample(d, "onnxruntime", CoreConfig("a72", 1), 1.0)])
    assert model.correction is None and model.source == "prior"


def test_fit_learns_a_primitive_that_starves_on_few_pixels_per_thread():
    """One primitive whose kernel runs short of pixels per thread (time over the prior grows as
    x / (x + 24) falls, x = pixels per thread), the others as the prior says: the calibration
    learns the curve and predicts that primitive on unseen shapes, small ones included."""
    target = load_target("rpi4")
    prior = CostModel(target)

    def truth(d, p, c):
        if p != "gemm_1x1/nhwc":
            return 1.0
        x = d.n * d.h_out * d.w_out / c.cores
        return 1.0 / (x / (x + 24.0))

    def ones(sizes, channels):
        from edgedeploy.costmodel.shapes import conv_descriptor

        return [conv_descriptor(ci, co, s, 1) for s in sizes for ci, co in channels]

    train = _synthetic(prior, ones((3, 5, 9, 16, 28, 56), ((64, 128), (256, 64), (512, 512))),
                       truth, noise=0.02)
    test = _synthetic(prior, ones((4, 7, 14, 20, 40), ((96, 192), (384, 96))), truth, seed=2,
                      noise=0.0)
    fitted = CostModel.fit(target, train)
    nhwc = [s for s in test if s.primitive == "gemm_1x1/nhwc"]
    assert _mape(fitted, nhwc) < 0.04


def test_robust_fit_follows_the_undisturbed_samples_where_load_slowed_some():
    """A third of the samples measured 5-35 % slow (load from elsewhere only adds time): the
    fit stays near the undisturbed trend (a symmetric Huber fit: 0.031 above it)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([0.4, -0.3, 0.2]) + 0.1 + rng.normal(0, 0.02, 200)
    slowed = y + np.where(rng.random(200) < 0.35, rng.uniform(0.05, 0.3, 200), 0.0)
    c = fit_correction(x, slowed, lam=0.01)
    assert abs(float(np.median(c.predict_log(x) - y))) < 0.02


def test_fit_learns_a_primitive_whose_efficiency_follows_its_gemms_aspect():
    """One primitive's time over the prior grows with the product of its GEMM's log sizes
    (rows times columns: a kernel that runs long, narrow products well and square ones less
    so): the calibration learns it from some shapes and predicts it on unseen ones."""
    target = load_target("rpi4")
    prior = CostModel(target)

    def truth(d, p, c):
        if p != "gemm_1x1/nchw":
            return 1.0
        return float(np.exp(0.04 * (np.log(d.h_out * d.w_out) - 5) * (np.log(d.c_out) - 5)))

    def ones(sizes, channels):
        from edgedeploy.costmodel.shapes import conv_descriptor

        return [conv_descriptor(ci, co, s, 1) for s in sizes for ci, co in channels]

    train = _synthetic(prior, ones((7, 14, 28, 56, 112), ((32, 16), (64, 512), (256, 128),
                                                          (512, 1024), (96, 48))),
                       truth, noise=0.01)
    test = _synthetic(prior, ones((10, 20, 40, 80), ((48, 768), (384, 24), (128, 256))), truth,
                      seed=2, noise=0.0)
    fitted = CostModel.fit(target, train)
    nchw = [s for s in test if s.primitive == "gemm_1x1/nchw"]
    assert _mape(fitted, nchw) < 0.03
