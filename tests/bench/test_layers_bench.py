"""Per-layer benchmark (issue 3, item 6): every applicable primitive vs onnxruntime's Conv.

Every distinct conv layer of ResNet-50 (torchvision v1.5: stride on the 3x3) and VGG-16 at 224x224,
single-threaded (BLAS bounded with threadpoolctl, ORT with intra_op_num_threads=1), candidates
alternated inside one loop, warm-up then the median of several runs. Prints a table and writes
``results/bench_layers.json``. Only ``make bench`` runs it; times are reported, never asserted.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgedeploy.runtime.ir import Descriptor
from edgedeploy.runtime.primitives import NHWC, NO_ACTIVATION, applicable
from edgedeploy.testing.primitive_check import (
    conv_descriptor,
    ort_conv_session,
    random_conv_inputs,
)


def _resnet50_shapes() -> list[tuple[int, ...]]:
    """(c_in, c_out, h, w, kernel, stride, pad) of every ResNet-50 conv, duplicates included."""
    shapes = [(3, 64, 224, 224, 7, 2, 3)]
    stages = [(64, 64, 256, 56, 1, 3), (256, 128, 512, 56, 2, 4), (512, 256, 1024, 28, 2, 6),
              (1024, 512, 2048, 14, 2, 3)]
    for c_in, mid, out, hw, stride, blocks in stages:
        for b in range(blocks):
            first = b == 0
            size = hw if first else hw // stride
            shapes.append((c_in if first else out, mid, size, size, 1, 1, 0))
            shapes.append((mid, mid, size, size, 3, stride if first else 1, 1))
            shapes.append((mid, out, hw // stride, hw // stride, 1, 1, 0))
            if first:
                shapes.append((c_in, out, hw, hw, 1, stride, 0))  # projection shortcut
    return shapes


RESNET50 = _resnet50_shapes()
VGG16 = [(c_in, c_out, hw, hw, 3, 1, 1) for c_in, c_out, hw in [
    (3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56),
    (256, 256, 56), (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 28),
    (512, 512, 14), (512, 512, 14), (512, 512, 14)]]
MEMORY_CAP = 768 * 2**20  # skip a primitive whose packed weights + workspace exceed this
OUT = Path("results/bench_layers.json")


def distinct_layers() -> list[tuple[str, tuple[int, ...]]]:
    seen: dict[tuple[int, ...], str] = {}
    for model, shapes in (("resnet50", RESNET50), ("vgg16", VGG16)):
        for shape in shapes:
            seen.setdefault(shape, model)
    return [(f"{model}:{'x'.join(map(str, s))}", s) for s, model in seen.items()]


def qualifies_for_winograd_target(d: Descriptor) -> bool:
    """The issue's target set: 3x3 stride-1 layers, >= 128 channels, 14x14..56x56."""
    return (d.kernel == (3, 3) and d.stride == (1, 1) and min(d.c_in, d.c_out) >= 128
            and 14 <= d.h <= 56)


def _candidates(d: Descriptor) -> dict[str, Callable[[], object]]:
    x, weights = random_conv_inputs(d)
    sess = ort_conv_session(d, weights)
    out: dict[str, Callable[[], object]] = {"ort": lambda: sess.run(None, {"x": x})}
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for p in applicable(d):
        packed = p.transform_weights(d, weights)
        size = p.workspace_bytes(d) + sum(a.nbytes for a in packed.values())
        if size > MEMORY_CAP:
            continue
        xin = x_nhwc if p.layout_in == NHWC else x
        out[p.name] = lambda p=p, packed=packed, xin=xin: p.run(d, packed, xin, NO_ACTIVATION)
    return out


def time_layer(d: Descriptor, runs: int) -> dict[str, float]:
    """Median milliseconds of each candidate, alternating them within each round."""
    cands = _candidates(d)
    samples: dict[str, list[float]] = {k: [] for k in cands}
    for r in range(runs + 1):
        for name, fn in cands.items():
            t0 = time.perf_counter()
            fn()
            if r:  # round 0 is the warm-up
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def test_every_conv_layer_of_resnet50_and_vgg16_against_onnxruntime(pytestconfig) -> None:
    if not any("bench" in str(a) for a in pytestconfig.args):
        pytest.skip("benchmark: run it with `make bench`")
    from threadpoolctl import threadpool_limits

    rows = []
    with threadpool_limits(1):
        for name, (c_in, c_out, h, w, k, s, p) in distinct_layers():
            d = conv_descriptor(c_in, c_out, h, w, k, s, p)
            runs = 3 if d.macs > 1e9 else 5 if d.macs > 2e8 else 9
            times = time_layer(d, runs)
            ratios = {prim: times["ort"] / t for prim, t in times.items() if prim != "ort"}
            best = min(ratios, key=lambda prim: times[prim])
            rows.append({"name": name, "descriptor": d.to_dict(), "times_ms": times,
                         "ratios": ratios, "best": best,
                         "winograd_target": qualifies_for_winograd_target(d)})
            print(f"{name:32s} ort {times['ort']:8.2f} ms  best {best:20s} "
                  f"{times[best]:8.2f} ms  x{ratios[best]:.2f}  "
                  + "  ".join(f"{k}={v:.2f}" for k, v in sorted(ratios.items())), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    target = {r["name"]: r["ratios"].get("winograd_f4x3/nchw") for r in rows
              if r["winograd_target"]}
    OUT.write_text(json.dumps({"threads": 1, "ratio": "ort_ms / primitive_ms", "layers": rows,
                               "winograd_f4x3_vs_ort_on_target_layers": target}, indent=1) + "\n")
    print("winograd_f4x3/nchw vs ort on 3x3/s1, >=128 ch, 14..56 px:", target)
    assert all(t > 0 for r in rows for t in r["times_ms"].values())
