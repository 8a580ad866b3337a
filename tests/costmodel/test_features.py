from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.boards.catalog import load_target
from edgedeploy.costmodel.configs import config_matrix, core_configs
from edgedeploy.costmodel.features import (
    PRIMITIVE_KEYS,
    descriptor_matrix,
    feature_matrix,
    feature_names,
    primitive_key,
)
from edgedeploy.costmodel.prior import prior_ms
from edgedeploy.costmodel.shapes import conv_descriptor

convs = st.builds(
    conv_descriptor,
    c_in=st.integers(1, 512), c_out=st.integers(1, 512), size=st.integers(1, 128),
    kernel=st.sampled_from([1, 3, 5, 7]), stride=st.integers(1, 2),
)


TX2 = load_target("jetson-tx2")


def _rows(d):
    t = TX2
    cfgs = core_configs(t)
    n = len(PRIMITIVE_KEYS) * len(cfgs)
    dm = descriptor_matrix([d] * n)
    keys = np.repeat(np.arange(len(PRIMITIVE_KEYS)), len(cfgs))
    cm = np.tile(config_matrix(t, cfgs), (len(PRIMITIVE_KEYS), 1))
    return dm, keys, cm


@given(convs)
def test_features_are_finite_and_deterministic_for_any_conv(d):
    dm, keys, cm = _rows(d)
    p = prior_ms(dm, keys, cm)
    x1 = feature_matrix(dm, keys, cm, p)
    x2 = feature_matrix(*_rows(d), prior_ms(*_rows(d)))
    assert x1.shape == (len(dm), len(feature_names()))
    assert np.isfinite(x1).all()
    np.testing.assert_array_equal(x1, x2)


def test_core_configs_enumerate_every_core_count_and_the_gpu():
    keys = [c.key for c in core_configs(load_target("jetson-tx2"))]
    assert keys == ["denver:1", "denver:2", "a57:1", "a57:2", "a57:3", "a57:4", "gpu:1"]


def test_unknown_primitive_family_is_priced_as_direct_in_its_layout():
    assert PRIMITIVE_KEYS[primitive_key("newalgo/nhwc")] == "direct/nhwc"
    assert PRIMITIVE_KEYS[primitive_key("winograd_f4x3/nchw")] == "winograd_f4x3/nchw"
