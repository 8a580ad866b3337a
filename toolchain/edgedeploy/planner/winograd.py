"""Winograd as a plan choice: the model with the 3x3 convolutions that run faster as F(4,3)
rewritten in ONNX operators (:mod:`edgedeploy.importers.onnx_winograd`), kept only where the
whole model measured faster on the board.

Which layers is measured, not assumed: each 3x3, stride-1 convolution shape is timed in
onnxruntime between a 1x1 convolution and another, as a CNN holds it, a few copies in a row
(:func:`in_context`), as given and rewritten, on as many cores as a stage of the plan has (one
for one-thread replicas). The rewrite's MatMuls beat onnxruntime's Conv on wide, mid-sized
layers (512 channels at 28 px: 1.5x on one thread here) and lose on narrow or small ones (256
channels at 14 px: 0.8-0.95x), so a model may have none worth it. The layers at
:data:`MIN_LAYER_GAIN` or more are rewritten; measure-to-decide then runs the rewritten model in
the winner's configuration against the model as given (``benchmarks.winograd_trial``).

The rewritten model is cached under ``<build_dir>/winograd/`` by a key of the model's bytes, its
input shapes and the layers, and rebuilt from the lockfile's list of layers where it is missing:
deploying a rewritten plan again needs no measurement.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.importers.onnx_winograd import ConvSite, conv_sites, winograd_rewrite
from edgedeploy.runtime import ir
from edgedeploy.schemas.manifest import Manifest

log = logging.getLogger("edgedeploy.planner")

#: Bumped when what this module writes for the same inputs changes (part of the cache key).
WINOGRAD_VERSION = 3
#: A layer is rewritten where Winograd ran at least this much faster in context: below it, the
#: rewrite's extra tensors cost the whole model more than the layer saves.
MIN_LAYER_GAIN = 1.05
#: Alternated runs of the two forms of a layer at most (``runtime.model_timing.paired_ms``,
#: after a warm-up; fewer where a pair is long); each run holds :func:`copies` of the layer.
LAYER_PAIRS = 9
#: Copies of a layer, each in its context, in the model a layer is timed on (:func:`in_context`):
#: enough that their weights do not stay in cache from run to run ...
CONTEXT_COPIES = 4
#: ... where a layer is small: one of this many multiply-adds or more is timed in one copy.
#: Its weights serve enough tiles that the cache moves its gain little (VGG-16's 256-channel
#: 56 px layer, 1.85 G: 1.45x in one, 1.36x in four), and four copies of VGG-16's layers spent
#: the trial's layer budget on three shapes of its nine (seen while developing).
ONE_COPY_MACS = 500_000_000
#: Convolutions of fewer multiply-adds are left as they are: they take well under a millisecond,
#: their timing alone is noise, and no gain on them could move the whole model.
MIN_LAYER_MACS = 10_000_000
#: ``graph.source`` key carrying the record of a rewritten model's layers.
SOURCE_KEY = "winograd"


def applies(manifest: Manifest) -> bool:
    """Whether the manifest's model may be rewritten: an fp32 ONNX model, the setting on."""
    return (manifest.measure.winograd and (manifest.model.format or "onnx") == "onnx"
            and manifest.model.precision != "int8")


def prepared_proto(manifest: Manifest) -> onnx.ModelProto:
    """The manifest's model with its inputs' shapes fixed and its nodes named as the importer
    fixes and names them: the rewrite needs every convolution's spatial size, and a layer is
    known by its name (an exported model may leave every node unnamed)."""
    from edgedeploy.importers.onnx_prep import fix_inputs, load_proto, name_nodes

    spec = manifest.model
    proto, _ = load_proto(Path(spec.path))
    fixed, _ = fix_inputs(proto, spec.shape_override(), spec.input_name)
    name_nodes(fixed)
    return fixed


def sites(manifest: Manifest) -> list[ConvSite]:
    """The manifest model's convolutions the rewrite applies to and worth timing (of
    :data:`MIN_LAYER_MACS` or more); none where the rewrite does not apply."""
    if not applies(manifest):
        return []
    try:
        found = conv_sites(prepared_proto(manifest))
    except Exception as exc:  # a model the importer takes but shape inference does not
        log.info("winograd: no convolution sites found in %s: %s", manifest.model.path, exc)
        return []
    return [s for s in found if macs(s) >= MIN_LAYER_MACS]


def macs(site: ConvSite) -> int:
    """Multiply-adds of one frame through the convolution as given."""
    return site.c_in * site.c_out * 9 * site.h * site.w


def conv_shapes(found: Sequence[ConvSite]) -> list[tuple[ConvSite, list[str]]]:
    """Each distinct convolution shape as a one-conv site (its node ``conv``), with the nodes of
    the model of that shape: the heaviest first, as they are timed."""
    shapes: dict[tuple[int, int, int, int], list[str]] = {}
    for s in found:
        shapes.setdefault((s.c_in, s.c_out, s.h, s.w), []).append(s.node)
    heaviest = sorted(shapes, key=lambda k: (-macs(ConvSite("", *k)), k))
    return [(ConvSite("conv", *k), shapes[k]) for k in heaviest]


def copies(site: ConvSite) -> int:
    """How many copies of ``site``'s layer :func:`in_context` puts in a row."""
    return 1 if macs(site) >= ONE_COPY_MACS else CONTEXT_COPIES


def in_context(site: ConvSite, seed: int = 0) -> onnx.ModelProto:
    """Convolutions of ``site``'s shape as a CNN holds them: each between a 1x1 convolution
    and a ReLU before it and a ReLU and a 1x1 convolution after it, :func:`copies` such in a
    row with weights of their own (nodes ``conv0``, ``conv1``, ...).

    Why not alone: onnxruntime keeps a chain of convolutions in its blocked (NCHWc) layout and
    fuses each one's ReLU, so in a model the rewrite also pays to leave that layout and come
    back to it, and its ReLU runs apart; timed alone, the Conv as given paid the layout's
    reorders too. And a model's weights do not stay in cache from one frame to the next, while
    one layer's, timed over and over, do: the rewrite's are four times the size. ResNet-50's
    256-channel 14 px layer ran 1.25x faster rewritten alone on one thread, 1.16x in one such
    sandwich, 1.02x in four in a row and 0.78x in eight; the whole model rewritten at it and at
    its 128-channel 28 px layers (1.25x alone) measured 8 % slower. VGG-16's 256-channel 56 px
    layer, where each weight serves 196 tiles, read 1.77x, 1.45x and 1.36x (seen while
    developing)."""
    rng = np.random.default_rng(seed)
    ci, co = site.c_in, site.c_out
    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []

    def weight(name: str, *shape: int, scale: float) -> str:
        weights.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    t, n = "x", copies(site)
    for k in range(n):
        last = k == n - 1
        c_in = ci if k == 0 else co  # the copies after the first take the layer's output
        nodes += [
            helper.make_node("Conv", [t, weight(f"w_before{k}", ci, c_in, 1, 1,
                                                scale=c_in ** -0.5)], [f"before{k}"],
                             name=f"before{k}"),
            helper.make_node("Relu", [f"before{k}"], [f"a{k}"], name=f"relu_before{k}"),
            helper.make_node("Conv", [f"a{k}", weight(f"w{k}", co, ci, 3, 3, scale=0.05),
                                      weight(f"b{k}", co, scale=1.0)], [f"conv{k}"],
                             name=f"conv{k}", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"conv{k}"], [f"c{k}"], name=f"relu{k}"),
            helper.make_node("Conv", [f"c{k}", weight(f"w_after{k}", co, co, 1, 1,
                                                      scale=co ** -0.5)],
                             ["y" if last else f"after{k}"], name=f"after{k}")]
        t = f"after{k}"
    graph = helper.make_graph(
        nodes, "conv_in_context",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, site.h, site.w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, co, site.h, site.w])],
        weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def both_forms(site: ConvSite) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Convolutions of ``site``'s shape in their context (:func:`in_context`), as given and
    rewritten as Winograd F(4,3): what a layer is timed on (each form's ms over
    :func:`copies` is one layer's)."""
    given = in_context(site)
    return given, winograd_rewrite(given, [f"conv{k}" for k in range(copies(site))])[0]


def gain(ms_given: float, ms_rewritten: float) -> float:
    """A layer's speed-up as Winograd: the ms of its context as given over those with it
    rewritten (:func:`both_forms`)."""
    return round(ms_given / ms_rewritten, 3) if ms_rewritten > 0 else 0.0


def layer_timings(found: Sequence[ConvSite], counts: Sequence[int], budget_s: float
                  ) -> dict[int, dict[str, tuple[float, float]]]:
    """Each convolution's context (:func:`both_forms`) timed in onnxruntime on each core count
    of ``counts`` (the first cores of this process's CPUs), as given and rewritten, the two in
    alternation (ms a layer), keyed by count and node name: one timing per shape and count, the
    heaviest shapes first, until ``budget_s`` a count is spent (the rest are left out). The
    difference is what the rewrite saves in a model, the context's own convolutions cancelling.
    Each shape is built once for every count (rewriting four copies of a 512-channel layer took
    1.4 s here). The process's CPU affinity is restored afterwards."""
    from edgedeploy.runtime.affinity import available_cpus, pin_process
    from edgedeploy.runtime.model_timing import paired_ms

    todo = conv_shapes(found)
    original = available_cpus()
    start = time.monotonic()
    out: dict[int, dict[str, tuple[float, float]]] = {c: {} for c in counts}
    try:
        for k, (site, nodes) in enumerate(todo):
            if time.monotonic() - start > budget_s * len(counts):
                log.info("winograd: layer timing budget (%.0f s) spent; %d shape(s) untimed",
                         budget_s * len(counts), len(todo) - k)
                break
            x = np.random.default_rng(1).standard_normal(
                (1, site.c_in, site.h, site.w)).astype(np.float32)
            forms = [m.SerializeToString() for m in both_forms(site)]
            for c in counts:
                given, rewritten = paired_ms(*forms, {"x": x}, original[:c], LAYER_PAIRS)
                out[c].update(dict.fromkeys(nodes, (given / copies(site),
                                                    rewritten / copies(site))))
    finally:
        pin_process(original)
    return out


def chosen(gains: dict[str, float]) -> list[str]:
    """The layers worth rewriting: those at :data:`MIN_LAYER_GAIN` or more, sorted."""
    return sorted(n for n, g in gains.items() if g >= MIN_LAYER_GAIN)


def variant_file(manifest: Manifest, layers: Sequence[str]) -> Path:
    """The manifest's model with ``layers`` rewritten, from the cache when the same model,
    shapes and layers made it before (``<build_dir>/winograd/<stem>.winograd.<key>.onnx``).
    Raises :class:`~edgedeploy.errors.ModelError` where the model lacks one of the layers
    (a lockfile written for another model)."""
    from edgedeploy.errors import ModelError
    from edgedeploy.planner.lock import sha256_file, sha256_text

    spec = manifest.model
    key = sha256_text(json.dumps({
        "model": sha256_file(Path(spec.path)), "input_shape": spec.shape_override(),
        "input_name": spec.input_name, "layers": sorted(layers), "version": WINOGRAD_VERSION,
        "onnx": onnx.__version__}, sort_keys=True))
    out = Path(manifest.output.build_dir) / "winograd" / \
        f"{Path(spec.path).stem}.winograd.{key[:16]}.onnx"
    if out.is_file():
        return out
    proto, done = winograd_rewrite(prepared_proto(manifest), layers)
    missing = sorted(set(layers) - set(done))
    if missing:
        raise ModelError(f"{spec.path}: no 3x3, stride-1 convolution named {missing[0]!r} to "
                         "rewrite as Winograd",
                         "the lockfile was planned for another model: plan again")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    log.info("winograd: %d layer(s) of %s rewritten -> %s", len(done), spec.path, out)
    return out


def variant_graph(manifest: Manifest, record: dict[str, Any]) -> ir.Graph:
    """The rewritten model imported into the IR, carrying ``record`` (its layers, gains and
    whether it was chosen) and the file it was imported from under :data:`SOURCE_KEY`."""
    from edgedeploy.importers import load_model

    spec = manifest.model
    path = variant_file(manifest, record["layers"])
    graph = load_model(path, input_shape=spec.shape_override(), input_name=spec.input_name,
                       fmt="onnx")
    graph.source[SOURCE_KEY] = {**record, "model": str(path)}
    return graph


def planned_file(graph: ir.Graph) -> Path | None:
    """The rewritten model a graph from :func:`variant_graph` runs, else None."""
    record = graph.source.get(SOURCE_KEY) or {}
    return Path(record["model"]) if record.get("chosen") and record.get("model") else None


__all__ = ["CONTEXT_COPIES", "LAYER_PAIRS", "MIN_LAYER_GAIN", "MIN_LAYER_MACS", "ONE_COPY_MACS",
           "SOURCE_KEY", "applies", "chosen", "copies", "layer_timings", "macs",
           "planned_file", "prepared_proto", "sites", "variant_file", "variant_graph"]
