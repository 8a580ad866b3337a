"""Precision as a plan choice: an int8 variant of the model, kept only within an accuracy guard.

``model.precision: int8`` (or ``auto``) quantizes the manifest's model: an ONNX model with
onnxruntime's static QDQ quantizer (per-channel int8 weights, uint8 activations, after
onnxruntime's pre-quantization pass), a TFLite model with the AI Edge Quantizer (LiteRT's int8
kernels, :mod:`edgedeploy.importers.tflite_quantize`), calibrated on ``model.calibration`` frames
(an .npz named like the model inputs, a leading frame axis, or a folder of images that the
manifest's ``io.preprocess`` turns into input tensors, as on the board) or, absent those, on seeded
random frames -- a weak calibration the lockfile and a warning call out. The last fifth of the
frames is held out: the fp32 and int8 whole models run there under their runtime, and the int8
model is planned only when the max relative error of its outputs stays within
``model.max_output_error`` (with top-1 agreement reported for (N, classes) outputs, and bounded by
``model.min_top1_agreement`` where set). Where the wholly int8 model breaks the bounds, its regions
that add the most error are kept fp32, one more at a time, until a mixed model passes
(:func:`mixed_variant`). ``int8`` refuses when none does (exit 3); ``auto`` keeps
fp32 and records why. A model quantized already is planned as given. Where ``auto``'s int8 model
passes, measure-to-decide times the int8 and fp32 plans side by side on a target it reaches (this
host, a board over SSH: ``benchmarks.decide``) and keeps the faster; unmeasured (a twin, an SSH
board not measured, ``--no-measure``), the planner keeps the precision its cost model predicts
better where the board's profile measured int8 (``planner.api.priced_precision``), int8
otherwise.

``model.precision: fp16`` keeps the model's file and computes its float operators in fp16 where
LiteRT's XNNPACK can (a TFLite model, on a board whose cores compute fp16: ``Cluster.
fp16_arithmetic``). The same guard decides, on the same held-out frames: the model whole in LiteRT
in fp32 against the model whole computed in fp16 (:func:`half_guard`), on this host, which must
compute fp16 itself. onnxruntime's CPU provider computes an fp16 ONNX model in fp32 (its fp16 model
ran 1.00x its fp32 one here: results/precision_fp16.json), so an ONNX model is refused (exit 2).

The int8 model and its guard figures are cached under ``<build_dir>/precision/`` by a key of
everything they depend on (model and calibration bytes, input shapes, the quantizer's and the
runtime's versions), so re-planning reuses them and the path is deterministic; nothing is written
beside the user's model.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.errors import (
    EdgeDeployError,
    ExecutionError,
    InfeasibleError,
    InputError,
    ModelError,
)
from edgedeploy.importers.quantize import quantize
from edgedeploy.planner.lock import sha256_calibration, sha256_file, sha256_text
from edgedeploy.runtime import ir
from edgedeploy.runtime.executor import max_rel_error, random_inputs
from edgedeploy.runtime.layouts import carried_shape, own_layout, stacked_to_ir
from edgedeploy.runtime.vocab import FP16, INT8, LOCAL, ORT_ERRORS_ONLY, TFLITE
from edgedeploy.schemas.manifest import Manifest, ModelSpec

log = logging.getLogger("edgedeploy.planner")

#: Bumped when what this module writes for the same inputs changes (part of the cache key).
PRECISION_VERSION = 2
#: Seeded random frames used when no calibration file is given.
RANDOM_FRAMES = 10
RANDOM_SEED = 0
#: Held out for the guard: a fifth of the frames, at least one.
HELDOUT_SHARE = 0.2
#: Calibration frames the per-node error ranking runs (the first ones).
SENSITIVITY_FRAMES = 4
#: ``graph.source`` key carrying the precision record of an imported (planned) model.
SOURCE_KEY = "precision"


@dataclass(frozen=True)
class Frames:
    """Calibration frames by input name (leading frame axis) and where they came from."""

    arrays: dict[str, np.ndarray]
    source: str
    sha256: str | None

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def weak(self) -> bool:
        return self.sha256 is None

    def split(self) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        """(calibration frames, held-out frames): the last fifth held out, at least one. Each
        input an array, a scalar input's too (indexing gives a numpy scalar, which onnxruntime's
        calibration cannot take)."""
        frames = [{k: np.asarray(v[i]) for k, v in self.arrays.items()}
                  for i in range(self.count)]
        held = max(1, round(self.count * HELDOUT_SHARE))
        return frames[:-held], frames[-held:]


@dataclass(frozen=True)
class Guard:
    """What the accuracy guard measured on the held-out frames."""

    max_error: float
    top1_agreement: float | None
    frames: int


def load_frames(spec: ModelSpec, graph: ir.Graph,
                preprocess: Mapping[str, Any] | None = None) -> Frames:
    """The calibration frames for ``graph``'s inputs: the manifest's .npz checked name by name
    and shape by shape, or its folder of images through ``preprocess`` (InputError, exit 2),
    or seeded random frames."""
    shapes = {t.name: carried_shape(graph, t.name) for t in graph.inputs}  # as a user has them
    if spec.calibration is None:
        frames = [random_inputs(graph, seed=RANDOM_SEED + k) for k in range(RANDOM_FRAMES)]
        return Frames({n: np.stack([f[n] for f in frames]) for n in shapes}, "random", None)
    path = Path(spec.calibration)
    if path.is_dir():
        return _image_frames(path, graph, preprocess)
    hint = ("save one array per model input, named like it, with a leading frame axis: "
            + ", ".join(f"{n} as [F, {', '.join(map(str, s))}]" for n, s in shapes.items())
            + f", F >= 2 (numpy.savez({path.name!r}, {next(iter(shapes))}=frames, ...))")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"calibration {path}: not a readable .npz ({exc})", hint=hint) from None
    missing = sorted(set(shapes) - set(arrays))
    extra = sorted(set(arrays) - set(shapes))
    if missing or extra:
        raise InputError(
            f"calibration {path}: its arrays {sorted(arrays)} do not match the model inputs "
            f"{sorted(shapes)}" + (f" (missing {missing})" if missing else "")
            + (f" (not inputs: {extra})" if extra else ""), hint=hint)
    counts = set()
    for name, shape in shapes.items():
        got = arrays[name].shape
        if got[1:] != shape:
            raise InputError(f"calibration {path}: {name!r} has shape {list(got)}, expected "
                             f"[F, {', '.join(map(str, shape))}] (a leading frame axis, then "
                             "the model input's shape)", hint=hint)
        if arrays[name].dtype.kind not in "fiu":
            raise InputError(f"calibration {path}: {name!r} holds {arrays[name].dtype}, not "
                             "numbers", hint=hint)
        counts.add(got[0])
    if len(counts) != 1 or min(counts) < 2:
        raise InputError(f"calibration {path}: every input needs the same number of frames, "
                         f"at least 2 (one is held out for the accuracy guard); got "
                         f"{sorted(counts)}", hint=hint)
    dtypes = {t.name: np.dtype(t.dtype) if t.dtype else np.dtype(np.float32)
              for t in graph.inputs}
    return Frames({n: stacked_to_ir(graph, n, arrays[n]).astype(dtypes[n], copy=False)
                   for n in shapes}, str(path), sha256_file(path))


def _outputs(model: Path, frames: list[dict[str, np.ndarray]], *, fp16: bool = False
             ) -> dict[str, np.ndarray]:
    """The whole model's outputs under its runtime (onnxruntime, or LiteRT for a .tflite fed
    the frames in its own layout; ``fp16``: LiteRT computing in fp16), each stacked over
    ``frames``."""
    if model.suffix == ".tflite":
        from edgedeploy.runtime.engines.litert import LiteRTHalfModel, LiteRTModel

        runtime = LiteRTHalfModel if fp16 else LiteRTModel
        feeds = _tflite_frames(frames)
        # allocated at the frames' shapes: a dynamic size's placeholder may not even prepare
        with runtime(model, num_threads=1,
                     input_shapes={n: x.shape for n, x in feeds[0].items()}) as interpreter:
            runs = [interpreter.run(f) for f in feeds]
        return {n: np.stack([r[n] for r in runs]) for n in sorted(runs[0])}
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = ORT_ERRORS_ONLY  # its warnings are about the model file
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    runs = [sess.run(names, f) for f in frames]
    return {n: np.stack([np.asarray(r[k]) for r in runs]) for k, n in enumerate(names)}


def top1_agreement(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]
                   ) -> float | None:
    """Share of rows whose arg-max agrees, over the (N, classes) outputs (stacked per frame:
    (frames, N, classes)); None when no output has that shape."""
    shares = []
    for name, ref in want.items():
        if ref.ndim == 3 and ref.shape[-1] > 1:
            shares.append(float(np.mean(np.argmax(got[name], -1) == np.argmax(ref, -1))))
    return min(shares) if shares else None


def _image_frames(folder: Path, graph: ir.Graph, preprocess: Mapping[str, Any] | None
                  ) -> Frames:
    """A folder of images as calibration frames: each image through ``io.preprocess`` (as the
    board's images source and ``edgedeploy infer`` do), keyed by the files' bytes and the
    preprocessing, so a changed image or setting quantizes afresh."""
    from edgedeploy.runtime.preprocess import IMAGE_SUFFIXES, Preprocess, image_files, load_image

    files = image_files(folder)
    hint = (f"put at least 2 images ({', '.join(IMAGE_SUFFIXES)}) in {folder}, or give an "
            ".npz of frames; io.preprocess says how an image becomes the input tensor")
    if len(graph.inputs) != 1:
        raise InputError(f"calibration {folder}: images feed one input; the model takes "
                         f"{len(graph.inputs)}", hint="give an .npz named by input")
    if len(files) < 2:
        raise InputError(f"calibration {folder}: {len(files)} image(s); at least 2 are needed "
                         "(one is held out for the accuracy guard)", hint=hint)
    name = graph.inputs[0].name
    shape = carried_shape(graph, name)  # as the runner takes the input, in its own layout
    spec = dict(preprocess or {})
    spec["layout"] = spec.get("layout") or own_layout(graph)
    prep = Preprocess.for_input(shape, spec)
    digest = sha256_text(json.dumps({"images": sha256_calibration(folder),
                                     "preprocess": dict(preprocess or {})}, sort_keys=True))
    frames = []
    for f in files:
        x = prep(load_image(f))
        if tuple(x.shape) != shape:
            raise InputError(f"calibration {f}: preprocessing gives {list(x.shape)}, the model "
                             f"takes {list(shape)}", hint=hint)
        frames.append(x)
    dtype = np.dtype(graph.inputs[0].dtype or np.float32)
    return Frames({name: stacked_to_ir(graph, name, np.stack(frames)).astype(dtype, copy=False)},
                  f"{folder} ({len(files)} images)", digest)


def guard(fp32: Path, int8: Path, held: list[dict[str, np.ndarray]]) -> Guard:
    """The int8 model against fp32 on the held-out frames, both run whole by their runtime."""
    return _compared(_outputs(fp32, held), _outputs(int8, held), len(held))


def half_guard(model: Path, held: list[dict[str, np.ndarray]]) -> Guard:
    """The model computed in fp16 against fp32 on the held-out frames, both whole in LiteRT."""
    return _compared(_outputs(model, held), _outputs(model, held, fp16=True), len(held))


def _compared(want: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
              frames: int) -> Guard:
    """The guard's figures of outputs ``got`` against fp32's ``want`` over ``frames``."""
    return Guard(max_rel_error(got, want), top1_agreement(got, want), frames)


def reduce_range(manifest: Manifest) -> bool:
    """Whether the int8 ONNX model keeps its weights in 7 bits: where it is guarded (this host)
    or may run (an x86 board, whose VNNI a descriptor does not say) onnxruntime's x86 kernels
    without VNNI can saturate (``boards.detect.saturates_u8s8``). Arm's kernels do not, nor
    XNNPACK's for a TFLite source (they widen to 16 bits before they multiply)."""
    return manifest.model.format != TFLITE and bool(saturating(manifest))


def saturating(manifest: Manifest) -> list[str]:
    """Where an int8 ONNX model of ``manifest`` with full-range weights may saturate: "this
    host" (x86 without VNNI), and each x86 board target by name."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.boards.detect import saturates_u8s8

    boards = sorted({ref.board for ref in manifest.targets.values()
                     if ref.board != LOCAL and load_target(ref.board).arch == "x86_64"})
    return (["this host (x86 without VNNI)"] if saturates_u8s8() else []) + boards


def warn_full_range(manifest: Manifest, graph: ir.Graph) -> None:
    """Warn where the model as given (``graph``) is int8 with full-range weights and a place it
    is measured or may run can saturate them (:func:`saturating`): an int8 model edgedeploy
    makes keeps 7 bits there, a user's own cannot change without being quantized again."""
    from edgedeploy.importers.quantize import full_range_weights

    spec = manifest.model
    int8 = any(layer.descriptor.precision == INT8 for layer in graph.layers)
    where = saturating(manifest) if int8 and spec.format != TFLITE else []
    nodes = full_range_weights(Path(spec.path)) if where else []
    if nodes:
        log.warning("precision: %s has full-range int8 weights in %d layer(s) (%s%s) and "
                    "onnxruntime's int8 kernels on %s add pairs of uint8 x int8 products into "
                    "16 bits and clamp: its outputs there can differ from its arithmetic "
                    "(by 2-33 %% on the two models measured here); quantize it again with "
                    "weights in 7 bits (onnxruntime.quantization's reduce_range=True), or plan "
                    "the fp32 model with model.precision: int8, which does",
                    Path(spec.path).name, len(nodes), ", ".join(nodes[:3]),
                    ", ..." if len(nodes) > 3 else "", " and ".join(where))


def _cache_key(spec: ModelSpec, graph: ir.Graph, frames: Frames, narrow: bool) -> str:
    from importlib.metadata import version

    tools = (("ai-edge-quantizer", "ai-edge-litert") if spec.format == "tflite"
             else ("onnxruntime",))
    key = {"version": PRECISION_VERSION, "tools": {t: version(t) for t in tools},
           **({"reduce_range": True} if narrow else {}),
           "model": sha256_file(Path(spec.path)), "calibration": frames.sha256 or
           f"random:{RANDOM_SEED}:{RANDOM_FRAMES}",
           "inputs": {t.name: list(t.shape) for t in graph.inputs}}
    return sha256_text(json.dumps(key, sort_keys=True))


def int8_variant(manifest: Manifest, graph: ir.Graph, frames: Frames) -> tuple[Path, Guard]:
    """The int8 model of ``manifest.model`` and its guard figures, from the cache when the same
    inputs made them before (``<build_dir>/precision/<stem>.int8.<key>.<onnx|tflite>``)."""
    spec = manifest.model
    narrow = reduce_range(manifest)
    key = _cache_key(spec, graph, frames, narrow)
    name = f"{Path(spec.path).stem}.int8.{key[:16]}{_SUFFIX[spec.format or 'onnx']}"
    out = Path(manifest.output.build_dir) / "precision" / name
    record = out.with_suffix(".guard.json")
    cached = _cached_guard(record)
    if out.is_file() and cached is not None:
        return out, cached["guard"]
    calib, held = frames.split()
    log.info("precision: quantizing %s to int8 (static, per-channel weights) on %d "
             "calibration frame(s) -> %s", spec.path, len(calib), out)
    _quantize(spec, out, calib, narrow)
    result = guard(Path(spec.path), out, held)
    record.write_text(json.dumps({"max_error": result.max_error,
                                  "top1_agreement": result.top1_agreement,
                                  "frames": result.frames}, sort_keys=True) + "\n")
    return out, result


#: The int8 model's file suffix, by source format.
_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}


def _quantize(spec: ModelSpec, out: Path, calib: list[dict[str, np.ndarray]],
              narrow: bool) -> None:
    """Write the static int8 model of ``spec``'s model to ``out``, by its format's quantizer
    (``narrow``: ONNX weights in 7 bits, :func:`reduce_range`)."""
    if spec.format != "tflite":
        quantize(Path(spec.path), out, calib, reduce_range=narrow)
        return
    from edgedeploy.importers.tflite_quantize import quantize_tflite

    data = quantize_tflite(Path(spec.path).read_bytes(), _tflite_frames(calib))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)


def _tflite_frames(frames: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Frames (IR layout) as LiteRT takes them: rank-4 tensors NHWC."""
    from edgedeploy.runtime.layouts import ir_to_tflite

    return [{n: ir_to_tflite(v) for n, v in f.items()} for f in frames]


def _cached_guard(record: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(record.read_text())
        data["guard"] = Guard(float(data["max_error"]), data["top1_agreement"],
                              int(data["frames"]))
        return data
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: made again


@dataclass(frozen=True)
class _Regions:
    """What the mixed search needs of one source format: the model the quantizer takes
    (``prepare``), its unit names in order (``names``), the error each adds in the wholly int8
    model (``added``) and a quantization keeping some of them float (``quantize``)."""

    prepare: Callable[[Path, Path], Path]
    names: Callable[[Path], list[str]]
    added: Callable[[Path, Path, list[dict[str, np.ndarray]]], dict[str, float]]
    quantize: Callable[[Path, Path, list[dict[str, np.ndarray]], tuple[str, ...]], None]


def _onnx_regions(narrow: bool) -> _Regions:
    """ONNX: nodes, named after onnxruntime's pre-quantization pass (``quantize.prepare``);
    ``narrow``: weights in 7 bits (:func:`reduce_range`)."""
    import onnx

    from edgedeploy.importers.quantize import prepare
    from edgedeploy.planner.sensitivity import added_errors

    return _Regions(
        prepare=lambda model, tmp: prepare(model, str(tmp / "pre.onnx")),
        names=lambda source: [n.name for n in onnx.load(str(source)).graph.node],
        added=added_errors,
        quantize=lambda source, out, calib, exclude: quantize(
            source, out, calib, exclude=exclude, prepared=True, reduce_range=narrow))


def _tflite_regions(narrow: bool) -> _Regions:
    """TFLite: operators, named by their scope (``tflite_quantize.op_scopes``), of the model
    as the quantizer takes it (``tflite_quantize.float_model``, made once for the search: each
    later call on it returns it as it is). ``narrow`` is never true for it
    (:func:`reduce_range`)."""
    from edgedeploy.importers.tflite_quantize import float_model, op_scopes, quantize_tflite
    from edgedeploy.planner import sensitivity_tflite

    def prepare(model: Path, tmp: Path) -> Path:
        source = tmp / "float.tflite"
        source.write_bytes(float_model(model.read_bytes()))
        return source

    def write(source: Path, out: Path, calib: list[dict[str, np.ndarray]],
              exclude: tuple[str, ...]) -> None:
        out.write_bytes(quantize_tflite(source.read_bytes(), _tflite_frames(calib),
                                        exclude=exclude))

    return _Regions(
        prepare=prepare,
        names=lambda source: op_scopes(source.read_bytes()),
        added=lambda source, int8, frames: sensitivity_tflite.added_errors(
            source.read_bytes(), int8.read_bytes(), _tflite_frames(frames)),
        quantize=write)


#: The mixed search's parts by source format.
_REGIONS: dict[str, Callable[[bool], _Regions]] = {"onnx": _onnx_regions, "tflite": _tflite_regions}


def mixed_variant(manifest: Manifest, graph: ir.Graph, frames: Frames, int8: Path
                  ) -> tuple[Path | None, Guard, tuple[str, ...]]:
    """An int8 model with the fewest regions kept fp32 that the accuracy guard accepts, for
    when the wholly int8 model ``int8`` breaks ``model.max_output_error``: the model (its ONNX
    nodes or TFLite operators, in order) is cut into contiguous regions (``sensitivity.runs``),
    ranked by the error their quantized units add on calibration frames, and the worst kept
    float one more at a time, each candidate quantized and guarded on the held-out frames, up
    to half the regions. Returns (the model or None when no candidate passed, its guard figures
    or the best refused ones, the fp32 unit names); cached like :func:`int8_variant`, the bound
    part of the key, a failed search too."""
    from edgedeploy.planner.sensitivity import ranked_regions, runs

    spec = manifest.model
    narrow = reduce_range(manifest)
    key = sha256_text(f"{_cache_key(spec, graph, frames, narrow)}:mixed:{spec.max_output_error!r}:"
                      f"{spec.min_top1_agreement!r}")
    suffix = _SUFFIX[spec.format or "onnx"]
    out = Path(manifest.output.build_dir) / "precision" / (
        f"{Path(spec.path).stem}.mixed.{key[:16]}{suffix}")
    record = out.with_suffix(".guard.json")
    cached = _cached_guard(record)
    if cached is not None and (cached["fp32_nodes"] is None or out.is_file()):
        nodes = cached["fp32_nodes"]
        return (None if nodes is None else out), cached["guard"], tuple(nodes or ())
    calib, held = frames.split()
    fmt = _REGIONS[spec.format or "onnx"](narrow)
    found: tuple[Path | None, Guard, tuple[str, ...]] | None = None
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        source = fmt.prepare(Path(spec.path), Path(tmp))
        added = fmt.added(source, int8, calib[:SENSITIVITY_FRAMES])
        parts = runs(fmt.names(source))
        order = ranked_regions(parts, added)
        trial = Path(tmp) / f"mixed{suffix}"
        for k in range(1, len(parts) // 2 + 1):
            nodes = tuple(n for i in sorted(order[:k]) for n in parts[i])
            try:
                fmt.quantize(source, trial, calib, nodes)
            except ModelError as exc:  # this split is one the quantizer cannot make
                log.info("precision: %d of %d regions fp32: %s", k, len(parts), exc)
                continue
            result = guard(Path(spec.path), trial, held)
            log.info("precision: %d of %d regions fp32 (%d of %d units): %s", k, len(parts),
                     len(nodes), sum(map(len, parts)), _measured(result, spec))
            if found is None or _shortfall(result, spec) < _shortfall(found[1], spec):
                found = (None, result, ())
            if passes(result, spec):
                os.replace(trial, out)
                found = (out, result, nodes)
                break
    path, result, nodes = found if found else (None, Guard(float("inf"), None, 0), ())
    record.write_text(json.dumps({"max_error": result.max_error,
                                  "top1_agreement": result.top1_agreement,
                                  "frames": result.frames,
                                  "fp32_nodes": list(nodes) if path else None},
                                 sort_keys=True) + "\n")
    return path, result, nodes


def choose(manifest: Manifest, graph: ir.Graph) -> tuple[Path, dict[str, Any] | None]:
    """The model file to plan for ``manifest`` and its precision record (None for the model as
    given: fp32 asked for, or a model quantized already). ``graph`` is the model as given,
    imported. Where the wholly int8 model breaks the accuracy bounds, an int8 model with
    regions kept fp32 (:func:`mixed_variant`) is tried. InfeasibleError (exit 3)
    when ``precision: int8`` and no int8 model passes the guard."""
    spec = manifest.model
    if spec.precision == "fp32":
        return Path(spec.path), None
    quantized = sum(layer.descriptor.precision == INT8 for layer in graph.layers)
    if quantized:
        log.warning("precision: %s is quantized already (%d int8 layers): planned as given, "
                    "not quantized again", Path(spec.path).name, quantized)
        return Path(spec.path), None
    prep = manifest.io.preprocess
    frames = load_frames(spec, graph, prep.model_dump(exclude_none=True) if prep else None)
    if frames.weak:
        log.warning("precision: no model.calibration given: %sthe accuracy guard runs on "
                    "seeded random frames, a weak calibration (give an .npz of real frames)",
                    "" if spec.precision == FP16 else "int8 scales are fitted to and ")
    if spec.precision == FP16:
        return Path(spec.path), _half(spec, frames)
    try:
        path, result = int8_variant(manifest, graph, frames)
    except ModelError as exc:  # the quantizer could not make an int8 model of it
        if spec.precision == "int8":
            raise
        log.warning("precision: auto keeps fp32: %s", exc)
        return Path(spec.path), _record(spec, frames, None, None,
                                        reason=f"int8 not made: {exc}; fp32 kept")
    whole = _measured(result, spec)
    if passes(result, spec):
        log.info("precision: int8 %s: accepted", whole)
        return path, _record(spec, frames, path, result)
    log.info("precision: wholly int8 %s: refused; keeping regions fp32", whole)
    mixed, result, fp32_nodes = mixed_variant(manifest, graph, frames, path)
    if mixed is not None:
        log.info("precision: int8 with %d node(s) fp32 %s: accepted", len(fp32_nodes),
                 _measured(result, spec))
        return mixed, _record(spec, frames, mixed, result, fp32_nodes=fp32_nodes,
                              reason=f"wholly int8 refused ({whole}); {len(fp32_nodes)} "
                                     "node(s) kept fp32 to pass the guard")
    measured = (f"{whole}; with up to half the model kept fp32 the best was "
                f"{_measured(result, spec)}")
    log.info("precision: int8 %s: refused", measured)
    if spec.precision == "int8":
        raise InfeasibleError(
            f"precision int8: the int8 model of {Path(spec.path).name} breaks the accuracy "
            f"bound: {measured}",
            hint="raise model.max_output_error (or lower min_top1_agreement), calibrate on real "
                 "frames (model.calibration), or plan fp32 (precision: fp32, or auto to fall "
                 "back when the bound breaks)")
    return Path(spec.path), _record(spec, frames, None, result,
                                    reason=f"int8 refused: {measured}; fp32 kept")


def _half(spec: ModelSpec, frames: Frames, *, refused: type[EdgeDeployError] = InfeasibleError
          ) -> dict[str, Any]:
    """The fp16 record once the guard accepted fp16 on this host; ModelError (exit 2) where
    this host cannot compute fp16, ``refused`` where the guard refuses it (InfeasibleError,
    exit 3, for ``precision: fp16``)."""
    result = _half_guarded(spec, frames)
    measured = _measured(result, spec)
    if not passes(result, spec):
        raise refused(
            f"precision fp16: {Path(spec.path).name} computed in fp16 breaks the accuracy "
            f"bound: {measured}",
            hint="raise model.max_output_error (or lower min_top1_agreement), or plan fp32")
    log.info("precision: fp16 %s: accepted", measured)
    return _record(spec, frames, None, result, chosen=FP16)


def _half_guarded(spec: ModelSpec, frames: Frames) -> Guard:
    """The guard's figures of ``spec``'s model computed in fp16 on the held-out frames."""
    _, held = frames.split()
    try:
        return half_guard(Path(spec.path), held)
    except (ModelError, ExecutionError) as exc:
        raise ModelError(
            f"precision fp16: the accuracy guard runs the model in fp16 on this host, and "
            f"LiteRT could not: {exc.message}",
            hint="plan on a host whose cores compute fp16 (x86 avx512_fp16, Arm asimdhp in "
                 "/proc/cpuinfo), or plan fp32") from exc


def half_choice(manifest: Manifest, graph: ir.Graph) -> dict[str, Any]:
    """``auto``'s fp16 contender: the record of ``manifest.model`` computed in fp16 where the
    guard accepts it (a float TFLite model, guarded on this host); ModelError saying why not."""
    spec = manifest.model
    if spec.format != TFLITE or any(layer.descriptor.precision == INT8
                                    for layer in graph.layers):
        raise ModelError(f"{Path(spec.path).name} is not a float TFLite model: LiteRT computes "
                         "no fp16 of it")
    prep = manifest.io.preprocess
    frames = load_frames(spec, graph, prep.model_dump(exclude_none=True) if prep else None)
    return _half(spec, frames, refused=ModelError)


def _record(spec: ModelSpec, frames: Frames, model: Path | None, result: Guard | None, *,
            reason: str | None = None, fp32_nodes: tuple[str, ...] = (),
            chosen: str | None = None) -> dict[str, Any]:
    """The precision record (the lockfile's ``precision`` block): int8 chosen when ``model``
    is given, fp32 kept otherwise (or ``chosen``), with the guard's figures where it ran."""
    _, held = frames.split()
    return {
        "requested": spec.precision, "chosen": chosen or ("int8" if model else "fp32"),
        "model": str(model) if model else None, "max_output_error": spec.max_output_error,
        "min_top1_agreement": spec.min_top1_agreement,
        "measured_error": result.max_error if result else None,
        "top1_agreement": result.top1_agreement if result else None,
        "calibration": {"source": frames.source, "sha256": frames.sha256,
                        "frames": frames.count, "heldout_frames": len(held),
                        "weak": frames.weak},
        "reason": reason, "fp32_nodes": list(fp32_nodes),
    }


def passes(result: Guard, spec: ModelSpec) -> bool:
    """Whether the guard's figures keep the manifest's bounds: the error always, top-1
    agreement where it was measured and ``model.min_top1_agreement`` is set."""
    top1_short, error = _shortfall(result, spec)
    return top1_short == 0.0 and error <= spec.max_output_error


def _shortfall(result: Guard, spec: ModelSpec) -> tuple[float, float]:
    """How far the figures fall short of the bounds (less is better): top-1 first, then error."""
    top1 = (0.0 if spec.min_top1_agreement is None or result.top1_agreement is None
            else max(0.0, spec.min_top1_agreement - result.top1_agreement))
    return top1, result.max_error


def _measured(result: Guard, spec: ModelSpec) -> str:
    """The guard's figures against the bounds, in words."""
    ok = result.max_error <= spec.max_output_error
    words = (f"max relative error {result.max_error:.4g} {'<=' if ok else '>'} max_output_error "
             f"{spec.max_output_error:g}")
    if result.top1_agreement is not None:
        words += f", top-1 agreement {result.top1_agreement:.1%}"
        if spec.min_top1_agreement is not None:
            ok = result.top1_agreement >= spec.min_top1_agreement
            words += f" {'>=' if ok else '<'} min_top1_agreement {spec.min_top1_agreement:.1%}"
    return f"{words} (on {result.frames} held-out frame(s))"


def measured_fp32(record: dict[str, Any]) -> dict[str, Any]:
    """``auto``'s record once measurement chose the model as given over its accepted int8
    variant: int8 passed the guard but did not run faster on the board."""
    return {**record, "chosen": "fp32", "model": None,
            "reason": "int8 accepted by the guard; fp32 measured faster on the board"}


def planned_model(manifest: Manifest, graph: ir.Graph) -> Path:
    """The model file a graph from :func:`edgedeploy.planner.api.model_graph` or
    :func:`~edgedeploy.planner.api.planned_graph` was imported from: the int8 or the Winograd
    variant when it was chosen, else the manifest's model."""
    from edgedeploy.planner.winograd import planned_file

    rewritten = planned_file(graph)
    if rewritten is not None:
        return rewritten
    record = graph.source.get(SOURCE_KEY) or {}
    return Path(record["model"]) if record.get("chosen") == "int8" else Path(manifest.model.path)


__all__ = ["Frames", "Guard", "choose", "guard", "half_choice", "half_guard", "int8_variant",
           "load_frames", "measured_fp32", "mixed_variant", "passes", "planned_model", "quantize",
           "top1_agreement"]
