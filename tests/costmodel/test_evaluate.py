"""The cost-model evaluator: its rank statistic, how held-out layers are timed and aggregated,
the retest ceiling, and ``costmodel eval`` on a board twin (simulated, so it runs in seconds)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy import api
from edgedeploy.costmodel import evaluate as ev
from edgedeploy.costmodel.configs import CoreConfig
from edgedeploy.costmodel.model import CostModel
from edgedeploy.costmodel.profile import Sample, open_profile
from edgedeploy.costmodel.shapes import heldout_shapes
from edgedeploy.twins import twin_target
from edgedeploy.twins.profile import TwinMeasure

_times = st.lists(st.integers(1, 6).map(float), min_size=2, max_size=8)


@given(st.data())
def test_kendall_tau_is_tau_b_counted_pair_by_pair(data):
    a = data.draw(_times)
    b = data.draw(st.lists(st.integers(1, 6).map(float), min_size=len(a), max_size=len(a)))
    conc = disc = ties_a = ties_b = 0
    for i, j in combinations(range(len(a)), 2):
        s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
        conc += s > 0
        disc += s < 0
        ties_a += a[i] == a[j]
        ties_b += b[i] == b[j]
    n0 = len(a) * (len(a) - 1) // 2
    denom = np.sqrt((n0 - ties_a) * (n0 - ties_b))
    expected = (conc - disc) / denom if denom else 1.0
    assert abs(ev.kendall_tau(a, b) - expected) < 1e-12


_rounds = st.lists(st.lists(st.floats(0.1, 100.0), min_size=1, max_size=6), min_size=1,
                   max_size=5)


@settings(max_examples=50)
@given(_rounds)
def test_a_heldout_primitive_reads_its_fastest_round(rounds):
    d = heldout_shapes()[0]
    cfg = CoreConfig("cpu", 1)
    prims = [f"p{i}" for i in range(len(rounds))]
    # stored as measure_heldout stores them: round by round
    samples = [Sample(d, p, cfg, r[k], tag="heldout")
               for k in range(max(map(len, rounds))) for p, r in zip(prims, rounds, strict=True)
               if k < len(r)]
    (layer,) = ev.heldout_layers(samples)
    assert layer.primitives == tuple(prims)
    np.testing.assert_array_equal(layer.measured(), [min(r) for r in rounds])
    again = ev.retest([layer])
    if min(map(len, rounds)) < 2:
        assert again is None
    else:
        half = min(map(len, rounds)) // 2
        np.testing.assert_array_equal(layer.measured(slice(0, half)),
                                      [min(r[:half]) for r in rounds])


def test_retest_of_rounds_that_agree_is_perfect_and_of_reversed_ones_is_minus_one():
    d, cfg = heldout_shapes()[0], CoreConfig("cpu", 1)
    same = ev.HeldoutLayer(d, cfg, ("a", "b", "c"), ((1.0, 1.0), (2.0, 2.0), (3.0, 3.0)))
    flipped = ev.HeldoutLayer(d, cfg, ("a", "b", "c"), ((1.0, 3.0), (2.0, 2.0), (3.0, 1.0)))
    assert ev.retest([same]) == {"mape": 0.0, "kendall_tau": 1.0,
                                 "kendall_tau_beyond_5pct": 1.0, "top1_within_10pct": 1.0}
    assert ev.retest([flipped])["kendall_tau"] == -1.0


def test_heldout_primitives_are_timed_in_interleaved_rounds_of_alternating_order():
    target = twin_target("rpi4")
    twin = TwinMeasure(target)
    calls: list[tuple[str, str, str]] = []

    def measure(d, primitive, config):
        calls.append((repr(d.to_dict()), primitive, config.key))
        return twin(d, primitive, config)

    profile = open_profile(target)
    new = ev.measure_heldout(target, profile, 30.0, measure, clock=twin.clock)
    assert new and len(new) == len(calls)
    layers = {}
    for c in calls:
        layers.setdefault((c[0], c[2]), []).append(c[1])
    assert len(layers) >= 2
    for order in layers.values():
        n = len(order) // ev.HELDOUT_ROUNDS
        assert n >= 2 and len(order) == n * ev.HELDOUT_ROUNDS
        first = order[:n]
        assert len(set(first)) == n
        for r in range(ev.HELDOUT_ROUNDS):
            assert order[r * n:(r + 1) * n] == (first if r % 2 == 0 else first[::-1])
    # stored in the profile, and measured once: a second pass measures other layers
    stored = open_profile(target)
    assert len(stored.select("heldout")) == len(new)
    more = ev.measure_heldout(target, stored, 30.0, measure, clock=twin.clock)
    assert more and not {(repr(s.descriptor.to_dict()), s.config.key) for s in more} & set(layers)


def test_costmodel_eval_on_a_twin_is_simulated_and_calibration_beats_the_prior():
    report = api.costmodel_eval("sim:rpi4", budget_s=60.0, heldout_budget_s=600.0)
    assert report["simulated"] is True and report["budget_clock"] == "simulated device seconds"
    assert report["n_heldout_layers"] >= 20
    retest = report["retest"]
    assert retest is not None and retest["kendall_tau"] > 0.8  # the twin's jitter is small
    assert report["mape"] < report["prior_only"]["mape"]


@pytest.mark.parametrize("board", ["jetson-tx2", "rpi4", "rk3399"])
def test_a_primitive_profiled_on_a_shape_or_two_is_not_extrapolated_wildly(board):
    """A short twin profile of a slow board that saw one depthwise shape: calibration must not
    predict the held-out depthwise layers worse than the uncalibrated prior does (fitted with
    each block scaled by its own spread, jetson-tx2's were off by e^4.3 = 70x on average, the
    prior's by e^1.2)."""
    from edgedeploy.costmodel.profiler import run_profile
    from edgedeploy.costmodel.shapes import designed_sample

    target = twin_target(board)
    twin = TwinMeasure(target)
    fit = run_profile(target, designed_sample(), 60.0, twin, "fit", clock=twin.clock)
    seen = [s.descriptor for s in fit if s.primitive.startswith("depthwise")]
    assert seen
    fit = [s for s in fit if not s.primitive.startswith("depthwise") or s.descriptor == seen[0]]
    held = [d for d in heldout_shapes() if d.groups > 1 and d.groups == d.c_in]
    cfgs = [c for c in CostModel(target).configs if not c.is_gpu]
    rows = [(d, p, c) for d in held for p in ("depthwise/nchw", "depthwise/nhwc") for c in cfgs]
    descs, prims, configs = (list(col) for col in zip(*rows, strict=True))
    true = np.array([twin.truth.unit_ms(d, p, c.cluster, c.cores) for d, p, c in rows])

    def error(model: CostModel) -> float:
        return float(np.mean(np.abs(np.log(model.predict(descs, prims, configs) / true))))

    assert len(held) >= 4
    assert error(CostModel.fit(target, fit)) < error(CostModel(target))
