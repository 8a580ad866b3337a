"""The designed sample of layer shapes the profiler measures, and the held-out split.

Two sources: the conv shapes of the reference zoo, split deterministically into
a fit half and a held-out half (a hash of the shape decides, so the split never depends on order
or on which models were listed), and space-filling samples: a scrambled Halton sequence over
log-channels, log-spatial size, kernel, stride and grouping, which covers the shape space evenly
with few points (better than a grid or random draws at small sample sizes).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgedeploy.runtime import ir

ZOO_SIZE = 224
KERNELS = (1, 3, 3, 5, 7)  # 3x3 twice: it dominates real CNNs


def shape_key(d: ir.Descriptor) -> str:
    return json.dumps(d.to_dict(), sort_keys=True)


def model_shapes(graph: ir.Graph) -> list[ir.Descriptor]:
    """The distinct layer shapes of a model, heaviest first: what its plan needs priced."""
    seen: dict[str, ir.Descriptor] = {}
    for layer in sorted(graph.layers, key=lambda lay: -float(lay.descriptor.flops)):
        if layer.op != ir.OPAQUE:
            seen.setdefault(shape_key(layer.descriptor), layer.descriptor)
    return list(seen.values())


def is_heldout(d: ir.Descriptor) -> bool:
    """Deterministic half split of shapes (by hash): the designed sample leaves held-out shapes
    out, and an evaluation never fits on them (a profile taken for a model measures its own)."""
    h = hashlib.sha256(shape_key(_bare(d)).encode()).digest()
    return h[0] % 2 == 1


def _bare(d: ir.Descriptor) -> ir.Descriptor:
    """The shape without its fused activation or bias: those barely change the time."""
    return d.with_(activation="none", has_bias=True)


#: The zoo's shapes at ZOO_SIZE, shipped with the package: building the zoo to read them takes
#: seconds (VGG's weights alone are 0.5 GB), which a first, quick profile cannot spare. A test
#: rebuilds them and compares (:func:`write_packaged_shapes` rewrites the file).
PACKAGED_SHAPES = Path(__file__).with_name(f"zoo_conv_shapes_{ZOO_SIZE}.json")


@lru_cache(maxsize=4)
def zoo_conv_shapes(size: int = ZOO_SIZE) -> tuple[ir.Descriptor, ...]:
    """Unique conv descriptors of every zoo model at ``size`` (activation and bias normalised).

    ZOO_SIZE's ship with the package; other sizes are built once and cached as JSON in the user
    cache directory, keyed by size and edgedeploy version.
    """
    from edgedeploy import __version__

    if size == ZOO_SIZE:
        return _read_shapes(PACKAGED_SHAPES)
    cache = _cache_dir() / f"zoo_conv_shapes_{size}_{__version__}.json"
    try:
        return _read_shapes(cache)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    shapes = _build_zoo_shapes(size)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(_shapes_json(shapes))
        tmp.replace(cache)
    except OSError:  # a read-only cache only costs time
        pass
    return shapes


def write_packaged_shapes() -> Path:
    """Rebuild the zoo and rewrite the packaged shapes (after a zoo model changes)."""
    PACKAGED_SHAPES.write_text(_shapes_json(_build_zoo_shapes(ZOO_SIZE)))
    return PACKAGED_SHAPES


def _read_shapes(path: Path) -> tuple[ir.Descriptor, ...]:
    return tuple(ir.Descriptor.from_dict(d) for d in json.loads(path.read_text()))


def _shapes_json(shapes: tuple[ir.Descriptor, ...]) -> str:
    """One shape a line, so a zoo change reads as a small diff."""
    return "[\n" + ",\n".join(json.dumps(d.to_dict()) for d in shapes) + "\n]\n"


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("edgedeploy"))


def _build_zoo_shapes(size: int) -> tuple[ir.Descriptor, ...]:
    from edgedeploy import zoo
    from edgedeploy.importers.onnx import import_onnx

    seen: dict[str, ir.Descriptor] = {}
    for name in zoo.list_models():
        graph = import_onnx(zoo.build(name, size=size, seed=0))
        for layer in graph.layers:
            if layer.op == ir.CONV2D:
                d = _bare(layer.descriptor)
                seen.setdefault(shape_key(d), d)
    return tuple(seen.values())


def conv_descriptor(c_in: int, c_out: int, size: int, kernel: int, stride: int = 1,
                    groups: int = 1, n: int = 1) -> ir.Descriptor:
    """A 'same'-padded square conv descriptor."""
    pad = kernel // 2
    out = ir.conv_output_size(size, kernel, stride, pad, pad)
    return ir.Descriptor(ir.CONV2D, n, c_in, size, size, c_out, out, out, kernel, kernel, stride,
                         stride, pad, pad, pad, pad, 1, 1, groups, "none", True,
                         n * c_in * size * size, n * c_out * out * out)


def _halton(n: int, dims: int, seed: int) -> np.ndarray:
    """Scrambled (random-shift) Halton points in [0, 1)^dims."""
    primes = (2, 3, 5, 7, 11, 13)[:dims]
    out = np.empty((n, dims))
    for j, b in enumerate(primes):
        for i in range(n):
            f, r, k = 1.0, 0.0, i + 1
            while k:
                f /= b
                r += f * (k % b)
                k //= b
            out[i, j] = r
    shift = np.random.default_rng(seed).random(dims)
    return (out + shift) % 1.0


def space_filling(n: int, seed: int = 0, max_mflops: float = 400.0) -> list[ir.Descriptor]:
    """``n`` conv shapes spread over channels 8-512, sizes 7-112, kernels 1-7, strides 1-2,
    a sixth of them depthwise; shapes above ``max_mflops`` are shrunk spatially so a sample
    stays cheap to measure (cost grows with size predictably; the model extrapolates)."""
    pts = _halton(n, 5, seed)
    out = []
    for u in pts:
        c_in = round(2 ** (3 + 6 * u[0]))
        c_out = round(2 ** (3 + 6 * u[1]))
        size = round(2 ** (np.log2(7) + (np.log2(112) - np.log2(7)) * u[2]))
        kernel = KERNELS[int(u[3] * len(KERNELS))]
        stride = 2 if u[4] > 0.75 else 1
        groups = 1
        if u[4] < 1 / 6 and kernel > 1:
            groups, c_out = c_in, c_in  # depthwise
        d = conv_descriptor(c_in, c_out, size, kernel, stride, groups)
        while d.flops > max_mflops * 1e6 and size > 7:
            size = max(7, int(size * 0.8))
            d = conv_descriptor(c_in, c_out, size, kernel, stride, groups)
        out.append(d)
    return out


def designed_sample(n_space: int = 160, seed: int = 0,
                    zoo_size: int = ZOO_SIZE) -> list[ir.Descriptor]:
    """The profiler's shapes in measuring order: zoo fit shapes and space-filling shapes
    interleaved, each list in a seeded random order, so a budget cut anywhere leaves a
    balanced sample."""
    rng = np.random.default_rng(seed)
    zoo = [d for d in zoo_conv_shapes(zoo_size) if not is_heldout(d)]
    zoo = [zoo[i] for i in rng.permutation(len(zoo))]
    space = [d for d in space_filling(n_space, seed) if not is_heldout(d)]
    out: list[ir.Descriptor] = []
    seen: set[str] = set()
    for i in range(max(len(zoo), len(space))):
        for src in (zoo, space):
            if i < len(src) and shape_key(src[i]) not in seen:
                seen.add(shape_key(src[i]))
                out.append(src[i])
    return out


def heldout_shapes(seed: int = 0, zoo_size: int = ZOO_SIZE) -> list[ir.Descriptor]:
    """Zoo conv shapes never in the fit sample, in a seeded order."""
    held = [d for d in zoo_conv_shapes(zoo_size) if is_heldout(d)]
    rng = np.random.default_rng(seed + 1)
    return [held[i] for i in rng.permutation(len(held))]
