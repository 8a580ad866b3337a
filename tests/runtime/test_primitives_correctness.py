"""Every conv primitive matches the direct oracle and onnxruntime's Conv on random descriptors.

Relative error ``max|a - b| / max(max|b|, 1e-6)`` <= 1e-4 (Winograd F(4,3) <= 1e-3), with the fused
activation applied; channels 1-256, sizes 1-64, kernels 1-7, stride 1-2, asymmetric pads, dilation
1-2, groups, bias on/off. Each family's constraints are imposed on the drawn descriptor, so every
example exercises the primitive (and checks its predicate accepts it).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedeploy.runtime.ir import ACTIVATIONS, Descriptor
from edgedeploy.runtime.primitives import Activation, get, names
from edgedeploy.testing.primitive_check import check_primitive, conv_descriptor

CONV = [n for n in names() if get(n).op == "conv2d"]
MAX_MACS = 1_000_000  # keeps each example in the milliseconds on a slow shared core
ACT_PARAMS = {"leakyrelu": {"alpha": 0.1}, "hardsigmoid": {"alpha": 0.2, "beta": 0.5},
              "clip": {"min": -0.5, "max": 1.0}}


def _constrain(family: str, k: dict) -> dict:
    """Bend drawn conv parameters to what ``family`` accepts."""
    if family in ("winograd_f2x3", "winograd_f4x3"):
        k.update(kernel=(3, 3), stride=(1, 1), dilation=(1, 1), groups=1)
    elif family == "fft":
        k.update(kernel=(max(3, k["kernel"][0]), max(3, k["kernel"][1])), stride=(1, 1),
                 dilation=(1, 1), groups=1)
    elif family == "gemm_1x1":
        k.update(kernel=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    elif family == "depthwise":
        k.update(groups=k["c_in"], c_out=k["c_in"] * k["mult"])
    return k


@st.composite
def conv_cases(draw: st.DrawFn, family: str) -> tuple[Descriptor, Activation]:
    groups = draw(st.sampled_from([1, 1, 1, 2, 3, 4]))
    k = {
        "c_in": groups * draw(st.integers(1, 256 // groups)),
        "c_out": groups * draw(st.integers(1, 256 // groups)),
        "mult": draw(st.integers(1, 3)),
        "h": draw(st.integers(1, 64)), "w": draw(st.integers(1, 64)),
        "kernel": (draw(st.integers(1, 7)), draw(st.integers(1, 7))),
        "stride": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        "pads": tuple(draw(st.integers(0, 3)) for _ in range(4)),
        "dilation": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        "groups": groups,
    }
    k = _constrain(family, k)
    if family == "depthwise":
        k["c_in"] = k["groups"] = min(k["c_in"], 64)
        k["c_out"] = k["c_in"] * k["mult"]
    (kh, kw), (dh, dw), (t, left, b, r) = k["kernel"], k["dilation"], k["pads"]
    # Shrink the image until the layer is cheap, but keep at least one output pixel.
    h, w = k["h"], k["w"]
    per_pixel = max(1, k["c_out"] * (k["c_in"] // k["groups"]) * kh * kw)
    while h * w * per_pixel > MAX_MACS * k["stride"][0] * k["stride"][1] and max(h, w) > 1:
        h, w = max(1, h // 2), max(1, w // 2)
    h = max(h, dh * (kh - 1) + 1 - t - b)
    w = max(w, dw * (kw - 1) + 1 - left - r)
    kind = draw(st.sampled_from(sorted(ACTIVATIONS)))
    d = conv_descriptor(k["c_in"], k["c_out"], h, w, k["kernel"], k["stride"], k["pads"],
                        k["dilation"], k["groups"], activation=kind, has_bias=draw(st.booleans()))
    return d, Activation(kind, ACT_PARAMS.get(kind, {}))


@pytest.mark.parametrize("name", CONV)
def test_primitive_matches_oracle_and_onnxruntime_on_random_descriptors(name: str) -> None:
    family = get(name).family

    @given(case=conv_cases(family), seed=st.integers(0, 2**16))
    def check(case: tuple[Descriptor, Activation], seed: int) -> None:
        d, act = case
        assert get(name).applies(d), f"{name} should apply to {d}"
        check_primitive(name, d, act, seed=seed)

    check()


@pytest.mark.parametrize("name", CONV)
def test_primitive_matches_onnxruntime_on_a_batch_of_two(name: str) -> None:
    d = conv_descriptor(6, 12, 10, 9, 3, 1, (1, 0, 2, 1), has_bias=True)
    family = get(name).family
    if family == "gemm_1x1":
        d = conv_descriptor(6, 12, 10, 9, 1, 2, 0)
    elif family == "depthwise":
        d = conv_descriptor(6, 12, 10, 9, 3, 2, 1, groups=6, has_bias=True)
    check_primitive(name, replace(d, n=2, elems_in=2 * d.elems_in, elems_out=2 * d.elems_out),
                    Activation("relu6"))


@pytest.mark.parametrize(("name", "c", "hw"), [
    ("winograd_f4x3/nchw", 256, 14), ("winograd_f4x3/nhwc", 512, 7),
    ("winograd_f2x3/nchw", 256, 14), ("fft/nchw", 128, 28),
])
def test_fast_algorithms_stay_accurate_at_resnet_channel_counts(name: str, c: int,
                                                                hw: int) -> None:
    result = check_primitive(name, conv_descriptor(c, c, hw, hw, 3, 1, 1, has_bias=True))
    assert result.err_ort <= result.tolerance


def test_a_wrong_primitive_is_reported_with_its_name_and_descriptor(monkeypatch) -> None:
    from edgedeploy.runtime.primitives import registry

    d = conv_descriptor(4, 4, 6, 6, 3, 1, 1)
    good = registry.REGISTRY["direct/nchw"]
    broken = replace(good, run=lambda d, p, x, a: good.run(d, p, x, a) * 1.01)
    monkeypatch.setitem(registry.REGISTRY, "direct/nchw", broken)
    with pytest.raises(AssertionError, match=r"primitive direct/nchw: .*descriptor Descriptor"):
        check_primitive("direct/nchw", d)
