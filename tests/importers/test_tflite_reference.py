"""A plain numpy evaluator of the IR (naive loops, no shortcuts), and the LiteRT comparison helper
the TFLite importer tests share. Its own tests check it against LiteRT-independent facts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgedeploy.importers.tflite import import_tflite
from edgedeploy.runtime import ir
from edgedeploy.runtime.activations import apply_activation

RTOL, ATOL = 1e-4, 1e-5


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, a: dict[str, Any]) -> np.ndarray:
    """Direct convolution over NCHW input and OIHW weights (the definition, one tap at a time)."""
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = a["strides"], a["dilations"], a["pads"]
    g = a["group"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n, _, hp, wp = xp.shape
    o, ig, kh, kw = w.shape
    ho = (hp - dh * (kh - 1) - 1) // sh + 1
    wo = (wp - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, ho, wo), dtype=np.float64)
    og = o // g
    for gi in range(g):
        xs = xp[:, gi * ig:(gi + 1) * ig]
        ws = w[gi * og:(gi + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                           j * dw:j * dw + sw * (wo - 1) + 1:sw]
                y[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y.astype(np.float32)


def pool(x: np.ndarray, a: dict[str, Any], kind: str) -> np.ndarray:
    """Max / average pooling; padding never counts (count_include_pad = 0)."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = a["kernel"], a["strides"], a["pads"]
    fill = -np.inf if kind == ir.MAXPOOL else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    ones = np.pad(np.ones(x.shape[2:]), ((pt, pb), (pl, pr)))
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.zeros((*x.shape[:2], ho, wo), dtype=np.float64)
    for r in range(ho):
        for c in range(wo):
            win = xp[:, :, r * sh:r * sh + kh, c * sw:c * sw + kw]
            if kind == ir.MAXPOOL:
                y[:, :, r, c] = win.max(axis=(2, 3))
            else:
                y[:, :, r, c] = win.sum(axis=(2, 3)) / ones[r * sh:r * sh + kh,
                                                            c * sw:c * sw + kw].sum()
    return y.astype(np.float32)


def _src_coords(out: int, size: int, a: dict[str, Any], nearest: bool) -> np.ndarray:
    """TF's source coordinate of each output pixel along one axis."""
    i = np.arange(out, dtype=np.float64)
    if a["align_corners"] and out > 1:
        return i * ((size - 1) / (out - 1))
    scale = size / out
    if a["half_pixel_centers"]:
        return (i + 0.5) * scale - (0.0 if nearest else 0.5)
    return i * scale


def resize(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """TF ResizeNearestNeighbor / ResizeBilinear with align_corners / half_pixel_centers."""
    _, _, oh, ow = a["sizes"]
    nearest = a["mode"] == "nearest"
    idx = []
    for out, size in ((oh, x.shape[2]), (ow, x.shape[3])):
        src = _src_coords(out, size, a, nearest)
        if nearest:
            pick = np.round(src) if a["align_corners"] else np.floor(src)
            idx.append(np.clip(pick.astype(int), 0, size - 1))
        else:
            lo = np.floor(src)
            frac = src - lo
            idx.append((np.clip(lo, 0, size - 1).astype(int),
                        np.clip(np.ceil(src), 0, size - 1).astype(int), frac))
    if nearest:
        return x[:, :, idx[0]][:, :, :, idx[1]]
    (h0, h1, fh), (w0, w1, fw) = idx
    top = x[:, :, h0] * (1 - fh)[:, None] + x[:, :, h1] * fh[:, None]
    top = top.astype(np.float64)
    return (top[:, :, :, w0] * (1 - fw) + top[:, :, :, w1] * fw).astype(np.float32)


def _unpad(pads: list[int], rank: int) -> list[tuple[int, int]]:
    return [(pads[i], pads[i + rank]) for i in range(rank)]


def run_layer(layer: ir.Layer, xs: list[np.ndarray], w: dict[str, np.ndarray]) -> np.ndarray:
    a, op = layer.attrs, layer.op
    if op == ir.CONV2D:
        y = conv2d(xs[0], w["weight"], w.get("bias"), a)
    elif op == ir.DENSE:
        y = xs[0] @ w["weight"].T + w.get("bias", 0)
    elif op in (ir.MAXPOOL, ir.AVGPOOL):
        y = pool(xs[0], a, op)
    elif op in (ir.ADD, ir.MUL):
        ops = list(xs)
        if "other" in w:
            ops.insert(a["constant_position"], w["other"])
        y = ops[0] + ops[1] if op == ir.ADD else ops[0] * ops[1]
    elif op == ir.CONCAT:
        y = np.concatenate(xs, axis=a["axis"])
    elif op == ir.PAD:
        y = np.pad(xs[0], _unpad(a["pads"], xs[0].ndim), constant_values=a["value"])
    elif op == ir.GLOBAL_AVGPOOL:
        y = xs[0].mean(axis=(2, 3), keepdims=True)
    elif op == ir.MEAN:
        y = xs[0].mean(axis=tuple(a["axes"]), keepdims=bool(a["keepdims"]))
    elif op in (ir.RESHAPE, ir.FLATTEN):
        y = xs[0].reshape(a["target_shape"] if op == ir.FLATTEN else a["shape"])
    elif op == ir.TRANSPOSE:
        y = xs[0].transpose(a["perm"])
    elif op == ir.SOFTMAX:
        z = xs[0] * a.get("beta", 1.0)
        e = np.exp(z - z.max(axis=a["axis"], keepdims=True))
        y = e / e.sum(axis=a["axis"], keepdims=True)
    elif op == ir.RESIZE:
        y = resize(xs[0], a)
    elif op == ir.ACTIVATION:
        y = xs[0].copy()
    else:
        raise NotImplementedError(op)
    y = np.ascontiguousarray(y, dtype=np.float32)
    return apply_activation(y, a.get("activation", "none"), a.get("activation_params"),
                            slope=w.get("slope"))


def run_ir(graph: ir.Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    env = dict(feeds)
    for layer in graph.layers:
        w = {role: graph.weights[key] for role, key in layer.weights.items()}
        env[layer.outputs[0]] = run_layer(layer, [env[t] for t in layer.inputs], w)
    return env


def to_ir(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def run_litert(path: Path, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                   dict[str, tuple[int, ...]]]:
    """Run the model in LiteRT; returns every readable tensor (in IR layout) and all shapes."""
    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], feeds[d["name"]])
    it.invoke()
    values, shapes = {}, {}
    for d in it.get_tensor_details():
        shapes[d["name"]] = tuple(int(s) for s in d["shape"])
        try:
            values[d["name"]] = to_ir(it.get_tensor(d["index"]))
        except ValueError:
            continue
    return values, shapes


def check_model(path: Path, *, seed: int = 0, numerics: bool = True,
                **import_kwargs: Any) -> ir.Graph:
    """Import ``path`` and check it against LiteRT: (a) every IR tensor LiteRT also has has the
    NCHW form of LiteRT's shape, (b) every such tensor the reference evaluator computes matches
    LiteRT's value (layer by layer, so a layout slip is caught where it happens)."""
    graph = import_tflite(path, **import_kwargs)
    rng = np.random.default_rng(seed)
    feeds = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in graph.inputs}
    tfl_feeds = {k: (v.transpose(0, 2, 3, 1) if v.ndim == 4 else v) for k, v in feeds.items()}
    values, shapes = run_litert(path, tfl_feeds)
    for name, info in graph.tensors.items():
        if name in shapes:
            want = shapes[name]
            assert info.shape == (tuple(want[i] for i in (0, 3, 1, 2)) if len(want) == 4
                                  else want), name
        else:
            assert "/" in name, f"IR tensor {name!r} is neither LiteRT's nor the importer's"
    if numerics:
        env = run_ir(graph, feeds)
        for name, value in env.items():
            if name in values and name not in feeds:
                np.testing.assert_allclose(value, values[name], rtol=RTOL, atol=ATOL,
                                           err_msg=name)
        for t in graph.outputs:
            assert t.name in env
    return graph


# --- the evaluator's own checks ------------------------------------------------------------------
def test_reference_conv_matches_a_per_pixel_definition() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    a = {"strides": [2, 1], "dilations": [1, 2], "pads": [1, 0, 2, 1], "group": 2}
    y = conv2d(x, w, None, a)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1)))
    o, r, c = 4, 1, 2  # output channel 4 is in group 1 (input channels 2..3)
    want = sum(xp[0, 2 + ci, r * 2 + i, c + 2 * j] * w[o, ci, i, j]
               for ci in range(2) for i in range(3) for j in range(2))
    assert y.shape == (1, 6, 3, 5)
    assert math.isclose(float(y[0, o, r, c]), float(want), rel_tol=1e-5)


def test_reference_avgpool_leaves_padding_out_of_the_count() -> None:
    x = np.ones((1, 1, 3, 3), np.float32)
    a = {"kernel": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}
    assert np.allclose(pool(x, a, ir.AVGPOOL), 1.0)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_reference_resize_keeps_constant_images_constant(mode: str) -> None:
    x = np.full((1, 2, 3, 4), 2.5, np.float32)
    for align, half in ((False, False), (True, False), (False, True)):
        a = {"mode": mode, "sizes": [1, 2, 7, 5], "align_corners": align,
             "half_pixel_centers": half}
        assert np.allclose(resize(x, a), 2.5)
