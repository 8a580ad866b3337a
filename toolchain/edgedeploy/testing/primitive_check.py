"""Check any conv primitive against the naive direct oracle and onnxruntime's Conv (STYLE.md 5).

Relative error, the one measure used everywhere here: ``max|a - b| / max(max|b|, 1e-6)`` with ``b``
the reference. The fused activation is applied to the references with the runtime's own
``apply_activation`` so a mismatch always points at the primitive, which a failure names together
with its descriptor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..runtime.activations import apply_activation
from ..runtime.ir import CONV2D, Descriptor, conv_output_size
from ..runtime.primitives import NHWC, NO_ACTIVATION, Activation, conv2d_reference, get
from ..runtime.vocab import ORT_ERRORS_ONLY

#: Max relative error per family (Winograd F(4,3)'s transforms amplify float32 rounding).
TOLERANCES = {"winograd_f4x3": 1e-3}
DEFAULT_TOLERANCE = 1e-4


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max(max|b|, 1e-6)``: error relative to the reference's magnitude."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        raise AssertionError(f"shape {a64.shape} != reference shape {b64.shape}")
    if b64.size == 0:
        return 0.0
    return float(np.max(np.abs(a64 - b64)) / max(float(np.max(np.abs(b64))), 1e-6))


def conv_descriptor(c_in: int, c_out: int, h: int, w: int, kernel: int | tuple[int, int] = 3,
                    stride: int | tuple[int, int] = 1,
                    pads: int | tuple[int, int, int, int] = 0,
                    dilation: int | tuple[int, int] = 1, groups: int = 1, n: int = 1,
                    activation: str = "none", has_bias: bool = False) -> Descriptor:
    """A conv2d descriptor with the output size and element counts filled in."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    top, left, bottom, right = (pads,) * 4 if isinstance(pads, int) else pads
    ho = conv_output_size(h, kh, sh, top, bottom, dh)
    wo = conv_output_size(w, kw, sw, left, right, dw)
    return Descriptor(
        op=CONV2D, n=n, c_in=c_in, h=h, w=w, c_out=c_out, h_out=ho, w_out=wo, kernel_h=kh,
        kernel_w=kw, stride_h=sh, stride_w=sw, pad_top=top, pad_left=left, pad_bottom=bottom,
        pad_right=right, dilation_h=dh, dilation_w=dw, groups=groups, activation=activation,
        has_bias=has_bias, elems_in=n * c_in * h * w, elems_out=n * c_out * ho * wo,
    )


def random_conv_inputs(d: Descriptor, seed: int = 0,
                       act: Activation = NO_ACTIVATION) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A seeded NCHW input and IR weights (He-scaled OIHW weight, bias, PRelu slope if needed)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((d.n, d.c_in, d.h, d.w)).astype(np.float32)
    fan_in = (d.c_in // d.groups) * d.kernel_h * d.kernel_w
    w = rng.standard_normal((d.c_out, d.c_in // d.groups, d.kernel_h, d.kernel_w))
    weights = {"weight": (w * np.sqrt(2.0 / fan_in)).astype(np.float32)}
    if d.has_bias:
        weights["bias"] = rng.standard_normal(d.c_out).astype(np.float32)
    if act.kind == "prelu":
        weights["slope"] = rng.uniform(0.0, 0.5, d.c_out).astype(np.float32)
    return x, weights


def ort_conv(x: np.ndarray, weights: Mapping[str, np.ndarray], d: Descriptor,
             act: Activation = NO_ACTIVATION) -> np.ndarray:
    """onnxruntime's Conv on one thread, then ``act`` through the runtime's activation code."""
    sess = ort_conv_session(d, weights)
    y = sess.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]
    return apply_activation(y, act.kind, act.params, slope=weights.get("slope"))


def conv_model_bytes(d: Descriptor, weights: Mapping[str, np.ndarray]) -> bytes:
    """A one-node ONNX model computing ``Conv`` with ``d``'s attributes (input "x", output "y")."""
    from edgedeploy.costmodel.profiler import conv_onnx

    return conv_onnx(d, weights["weight"], weights.get("bias"))


def ort_conv_session(d: Descriptor, weights: Mapping[str, np.ndarray]):
    """A single-threaded onnxruntime session of one Conv (input "x"): the reference kernel."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = ORT_ERRORS_ONLY
    return ort.InferenceSession(conv_model_bytes(d, weights), opts,
                                providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class CheckResult:
    primitive: str
    descriptor: Descriptor
    activation: Activation
    err_oracle: float
    err_ort: float
    tolerance: float


def run_primitive(name: str, d: Descriptor, x: np.ndarray, weights: Mapping[str, np.ndarray],
                  act: Activation = NO_ACTIVATION) -> np.ndarray:
    """Pack, run and return NCHW, whatever the primitive's layout (the test harness's view)."""
    p = get(name)
    packed = p.transform_weights(d, weights)
    xin = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if p.layout_in == NHWC else x.copy()
    y = p.run(d, packed, xin, act)
    return y.transpose(0, 3, 1, 2) if p.layout_out == NHWC else y


def check_primitive(name: str, d: Descriptor, act: Activation = NO_ACTIVATION, seed: int = 0,
                    tolerance: float | None = None, with_ort: bool = True) -> CheckResult:
    """Run primitive ``name`` on seeded data; AssertionError naming it and ``d`` if it is off."""
    tol = tolerance if tolerance is not None else TOLERANCES.get(get(name).family,
                                                                 DEFAULT_TOLERANCE)
    x, weights = random_conv_inputs(d, seed, act)
    got = run_primitive(name, d, x, weights, act)
    ref = conv2d_reference(x, weights["weight"], weights.get("bias"), d)
    ref = apply_activation(ref, act.kind, act.params, slope=weights.get("slope"))
    err_oracle = relative_error(got, ref)
    err_ort = relative_error(got, ort_conv(x, weights, d, act)) if with_ort else 0.0
    result = CheckResult(name, d, act, err_oracle, err_ort, tol)
    if not (err_oracle <= tol and err_ort <= tol):
        raise AssertionError(
            f"primitive {name}: relative error vs direct oracle {err_oracle:.3g}, vs onnxruntime "
            f"{err_ort:.3g} (tolerance {tol:g}); activation {act.kind} {dict(act.params)}; "
            f"descriptor {d}")
    return result
