"""Writing a runner bundle: a deterministic directory the deployer uploads as one release.

Layout (every path is listed in SHA256SUMS except bundle.json and SHA256SUMS itself)::

    bundle.json  SHA256SUMS  run.sh  health.sh  main.py  edgedeploy.env  edgedeploy-<name>.service
    app/config.json  app/graph.json  app/weights.npz  app/reference.npz  app/segments/<k>.onnx
    app/segments/<k>.opt.onnx  <k>.opt.onnx.data  <k>.opt.json   (pre-optimised, generator.optimize)
    runner/edgedeploy/__init__.py  runner/edgedeploy/client.py  runner/edgedeploy/runtime/**.py

Determinism: files are written from sorted lists, JSON with sorted keys and fixed separators, and
.npz archives through :func:`write_npz` (fixed zip timestamps and order), so the same inputs give
byte-identical bundles and the same release id (the first 16 hex digits of sha256(SHA256SUMS)).

Weights ship raw (OIHW, the IR's form) and each primitive transforms them when its stage starts:
Winograd F(4,3) weights are 4x the raw size (6x6 tiles for 3x3 kernels), F(2,3) 1.8x and FFT
kernels larger still, while the transforms take milliseconds per layer. Raw weights also let
every plan of a Pareto set (and every variant ``measure`` tries) share one weight file whatever
primitives it picks, which the runtime manager needs to switch plans on the device.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy import __version__
from edgedeploy.errors import InputError
from edgedeploy.generator.context import BuildInput, render_context
from edgedeploy.generator.optimize import optimized_segments
from edgedeploy.generator.render import render_all
from edgedeploy.runtime import ir
from edgedeploy.runtime.layouts import carried_shape
from edgedeploy.runtime.stages import (
    batchable,
    boundary_tensors,
    segment_key,
    segments_needed,
)
from edgedeploy.runtime.vocab import ONNX

SUMS = "SHA256SUMS"
META = "bundle.json"
EXECUTABLE = ("run.sh", "health.sh")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_RUNTIME = Path(__file__).resolve().parent.parent / "runtime"
_CLIENT = _RUNTIME.parent / "client.py"


@dataclass(frozen=True)
class BundleInfo:
    """What was built: where, its release id and every file with its checksum."""

    root: Path
    id: str
    name: str
    target: str
    family: str
    plan_sha256: str
    files: tuple[tuple[str, str], ...]  # (relative path, sha256), sorted; META excluded

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.root), "id": self.id, "name": self.name,
                "target": self.target, "family": self.family, "plan_sha256": self.plan_sha256,
                "files": len(self.files) + 1,
                "bytes": sum((self.root / p).stat().st_size for p, _ in self.files)}


def canonical_json(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz np.load reads, with sorted entries and fixed timestamps (np.savez stamps now)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- artifacts --------------------------------------------------------------------------------
def _stage_dicts(graph: ir.Graph, build: BuildInput) -> dict[str, Any]:
    plans = build.plans_dict()  # converted once from the runner's own config types
    for name, plan in plans.items():
        for st in plan["stages"]:
            st["inputs"] = boundary_tensors(graph, st["start"])
            st["outputs"] = boundary_tensors(graph, st["stop"])
        _check_plan(graph, name, plan)
    return plans


def _check_plan(graph: ir.Graph, name: str, plan: Mapping[str, Any]) -> None:
    expect = 0
    for st in plan["stages"]:
        if st["start"] != expect or st["stop"] <= st["start"] or st["replicas"] < 1:
            raise InputError(f"plan {name!r}: stage {st['name']} [{st['start']}, {st['stop']}) "
                             f"x{st['replicas']} does not continue at layer {expect}")
        expect = st["stop"]
    if expect != len(graph.layers):
        raise InputError(f"plan {name!r} covers {expect} of {len(graph.layers)} layers")
    unknown = sorted(set(plan["choices"]) - {layer.name for layer in graph.layers})
    if unknown:
        raise InputError(f"plan {name!r} has choices for unknown layers: {unknown[:5]}")
    for st in plan["stages"]:
        if st.get("batch", 1) > 1 and not batchable(graph, st["start"], st["stop"],
                                                      plan["choices"]):
            raise InputError(f"plan {name!r}: stage {st['name']} batches {st['batch']} frames "
                             "but not all its layers run in an ONNX segment engine",
                             hint="micro-batching needs the whole stage in onnxruntime; plan "
                                  "it with batch 1")


def _segments(graph: ir.Graph, build: BuildInput, model_path: Path | None
              ) -> list[dict[str, Any]]:
    """Every engine segment any plan needs (the served ones and ``build.measured_plans``), cut
    once each, numbered in a sorted order (engines sharing a segment format, onnxruntime on CPU
    and GPU, share the file)."""
    from edgedeploy.runtime.stages import StageIO

    configs = (*build.plans, *build.measured_plans)
    @functools.cache  # the tensors at each cut, found once
    def at(cut: int) -> tuple[str, ...]:
        return tuple(boundary_tensors(graph, cut))

    wanted: dict[tuple[str, tuple[str, ...], tuple[str, ...]], str] = {}
    for p in configs:
        for st in p.stages:
            io_ = StageIO(st.start, st.stop, at(st.start), at(st.stop))
            for engine, i, o in segments_needed(graph, io_, p.choices):
                wanted.setdefault(segment_key(engine, i, o), engine)
    if not wanted:
        return []
    from edgedeploy.importers.segments import segment_provider

    # a micro-batching stage needs its segments free in the batch; the bundle's other plans
    # share the files (a free batch costs a batch of one about 1 %)
    batched = build.free_batch or any(st.batch > 1 for p in configs for st in p.stages)
    provide = segment_provider(graph, model_path, dynamic_batch=batched)
    return [{"format": fmt, "inputs": list(i), "outputs": list(o),
             "file": f"app/segments/{k}.{fmt}",
             **({"batch": "free"} if batched and fmt == ONNX else {}),
             "model": provide(wanted[(fmt, i, o)], list(i), list(o))}
            for k, (fmt, i, o) in enumerate(sorted(wanted))]


def requirements(build: BuildInput) -> list[str]:
    """What a board must have for this bundle (``doctor`` checks it before anything is
    uploaded): numpy, each engine's own requirements (packages, execution providers), and
    cores computing fp16 where a CPU stage does."""
    from edgedeploy.runtime.engines import board_requirements, engine_spec

    half = any(s.fp16 and not engine_spec(s.engine).on_gpu
               for p in (*build.plans, *build.measured_plans) for s in p.stages)
    return board_requirements(build.engines(), cpu_fp16=half)


def _reference(graph: ir.Graph, seed: int, fp16: bool = False
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from edgedeploy.execute import reference_outputs
    from edgedeploy.runtime.executor import random_inputs
    from edgedeploy.runtime.layouts import to_model

    feeds = random_inputs(graph, seed)
    runtime_name, outs = reference_outputs(graph, feeds, fp16=fp16)
    # in the model's own layout at its edges, as the runner takes and gives them
    feeds, outs = to_model(graph, feeds), to_model(graph, outs)
    ins = [t.name for t in graph.inputs]
    outputs = [t.name for t in graph.outputs]
    arrays = {f"in{k}": feeds[n] for k, n in enumerate(ins)}
    arrays.update({f"out{k}": np.asarray(outs[n], dtype=np.float32) for k, n in enumerate(outputs)})
    meta = {"file": "app/reference.npz", "inputs": ins, "outputs": outputs,
            "runtime": runtime_name, "seed": seed}
    return arrays, meta


def _shipped_weights(graph: ir.Graph, build: BuildInput
                     ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The weight arrays the bundle ships, and the sizes of those it leaves to its segments:
    every array, unless ``build.plans_only``; then only those a plan reads outside an engine
    segment (a primitive's, a native op's)."""
    if not build.plans_only:
        return dict(graph.weights), {}
    from edgedeploy.runtime.engines import is_segment_choice

    read = {key for p in (*build.plans, *build.measured_plans) for layer in graph.layers
            if not is_segment_choice(p.choices.get(layer.name, ""))
            for key in layer.weights.values()}
    arrays = {k: v for k, v in graph.weights.items() if k in read}
    held = {k: int(v.nbytes) for k, v in graph.weights.items() if k not in read}
    return arrays, held


def _config(graph: ir.Graph, build: BuildInput, plans: dict[str, Any],
            segments: list[dict[str, Any]], reference: dict[str, Any],
            held: Mapping[str, int]) -> dict[str, Any]:
    return {
        "schema_version": 1, "name": build.name, "target": build.target,
        "graph": "app/graph.json", "weights": "app/weights.npz",
        # as the runner takes and gives them: in the model's own layout
        "inputs": [{**t.to_dict(), "shape": list(carried_shape(graph, t.name))}
                   for t in graph.inputs],
        "outputs": [{**t.to_dict(), "shape": list(carried_shape(graph, t.name))}
                    for t in graph.outputs],
        "active": build.active_plan.name, "plans": plans,
        "segments": [{k: v for k, v in s.items() if k != "model"} for s in segments],
        "reference": reference, "tolerance": build.tolerance, "state_dir": None,
        "source": {"kind": "random", "seed": build.seed, "pool": 4},
        "targets": dict(build.targets),
        **({"io": dict(build.io)} if build.io is not None else {}),
        **({"weights_held": dict(sorted(held.items()))} if held else {}),
    }


def _graph_json(graph: ir.Graph) -> str:
    data = graph.to_dict()
    source = dict(data.get("source") or {})
    if "path" in source:  # the host's path means nothing on the board
        source["path"] = Path(str(source["path"])).name
    data["source"] = source
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


# --- the bundle -------------------------------------------------------------------------------
def build_bundle(build: BuildInput, graph: ir.Graph, model_path: str | Path | None,
                 out_dir: str | Path, *, family: str | None = None) -> BundleInfo:
    """Write the bundle for ``build`` (``family`` overrides ``build.family``) into ``out_dir``.

    ``out_dir`` is replaced when it already holds a bundle (bundle.json or SHA256SUMS) or is
    empty; any other non-empty folder is refused rather than deleted.
    """
    if family is not None and family != build.family:
        from dataclasses import replace

        build = replace(build, family=family)
    out = Path(out_dir)
    model = Path(model_path) if model_path is not None else None
    plans = _stage_dicts(graph, build)
    segments = _segments(graph, build, model)
    ref_arrays, ref_meta = _reference(graph, build.seed, build.reference_fp16)
    arrays, held = _shipped_weights(graph, build)
    threads = max((len(s.cpus) for s in build.active_plan.stages), default=1) or 1
    files: dict[str, bytes] = {
        path: text.encode() for path, text in render_all(
            render_context(build, threads, __version__)).items()}
    files["app/config.json"] = canonical_json(
        _config(graph, build, plans, segments, ref_meta, held)).encode()
    files["app/graph.json"] = _graph_json(graph).encode()
    files.update({s["file"]: s["model"] for s in segments})
    files.update(optimized_segments(segments))  # <k>.opt.*: see generator.optimize
    files.update(dict(build.app_files))  # modules an io python source or sink names
    files["runner/edgedeploy/__init__.py"] = (
        f'"""edgedeploy device runtime, copied into a bundle by edgedeploy {__version__}."""\n\n'
        f'__version__ = "{__version__}"\n').encode()
    files.update(_runtime_files())
    files["runner/edgedeploy/client.py"] = _CLIENT.read_bytes()  # for applications on the board
    _prepare(out)
    for rel in sorted(files):
        _write(out / rel, files[rel])
    write_npz(out / "app" / "weights.npz", arrays)
    write_npz(out / "app" / "reference.npz", ref_arrays)
    return _seal(out, build)


def _runtime_files() -> dict[str, bytes]:
    """The runtime package's .py files (sorted; no caches, no other files)."""
    out = {}
    for path in sorted(_RUNTIME.rglob("*.py")):
        rel = path.relative_to(_RUNTIME)
        if "__pycache__" in rel.parts:
            continue
        out[f"runner/edgedeploy/runtime/{rel.as_posix()}"] = path.read_bytes()
    return out


def runtime_package() -> dict[str, bytes]:
    """The device runtime as an importable package (``edgedeploy/__init__.py`` and
    ``edgedeploy/runtime/**.py``, as a bundle carries it under ``runner/``): for running the
    runtime on a board outside a release, as the profiler's probe does."""
    files = {"edgedeploy/__init__.py": (
        f'"""edgedeploy device runtime, copied onto a board by edgedeploy {__version__}."""\n\n'
        f'__version__ = "{__version__}"\n').encode()}
    files.update({k.removeprefix("runner/"): v for k, v in _runtime_files().items()})
    return files


def _prepare(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{out} exists and is not a folder")
        entries = list(out.iterdir())
        if entries and not ((out / META).exists() or (out / SUMS).exists()):
            raise InputError(f"{out} is not empty and holds no bundle: refusing to replace it",
                             hint="choose an empty or new folder with -o")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    mode = 0o755 if path.name in EXECUTABLE else 0o644
    os.chmod(path, mode)


def _seal(out: Path, build: BuildInput) -> BundleInfo:
    """Write SHA256SUMS over every file, then bundle.json with the release id derived from it."""
    rels = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and not stat.S_ISLNK(p.lstat().st_mode))
    entries = tuple((rel, sha256_bytes((out / rel).read_bytes())) for rel in rels)
    sums = "".join(f"{digest}  {rel}\n" for rel, digest in entries)
    (out / SUMS).write_text(sums)
    release = sha256_bytes(sums.encode())[:16]
    meta = {"id": release, "name": build.name, "target": build.target,
            "plan_sha256": build.digest(), "entry": "run.sh", "health": "health.sh",
            "python": build.python, "family": build.family,
            "engines": build.engines(), "requires": requirements(build)}
    (out / META).write_text(canonical_json(meta))
    return BundleInfo(out, release, build.name, build.target, build.family, build.digest(),
                      entries)
