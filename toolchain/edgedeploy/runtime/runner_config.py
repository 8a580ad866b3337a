"""The bundle's runner configuration (``app/config.json``): reading, checking, and stage building.

Device side: numpy and edgedeploy.runtime only. The schema is documented in runner.py; this module
turns it into plain objects and into :class:`StageSpec` lists for the pipeline executor. Weights
ship raw (OIHW) and each stage process transforms only its own layers' weights at start-up, so one
weight file serves every plan of the Pareto set whatever primitives they pick.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.runtime import ir
from edgedeploy.runtime.engines import EngineOptions, engine_spec
from edgedeploy.runtime.errors import InputError
from edgedeploy.runtime.layouts import carried_shape
from edgedeploy.runtime.stage_weights import StageWeights
from edgedeploy.runtime.stages import (
    GraphStage,
    SegmentKey,
    StageIO,
    boundary_tensors,
    ring_dtype,
    segment_key,
    segments_needed,
)
from edgedeploy.runtime.vocab import NATIVE, ONNX

SCHEMA_VERSION = 1
CONFIG_PATH = "app/config.json"
STATUS_FILE = "runner.status.json"
CONTROL_FILE = "runner.control.json"
#: Where engines cache what they compile at start-up (TensorRT engines), inside the release.
ENGINE_CACHE = "engine-cache"


class BundleConfigError(InputError):
    """The bundle's config.json (or a plan given to ``measure``) is missing or inconsistent."""


@dataclass(frozen=True)
class StageConfig:
    """One pipeline stage as the runner runs it: layers ``[start, stop)`` on ``cpus`` (empty:
    every core the runner may use), ``replicas`` copies, through ``engine``'s device."""

    name: str
    start: int
    stop: int
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    cpus: tuple[int, ...] = ()
    replicas: int = 1
    #: The stage's device engine: ``native`` for CPU stages (their layers' choices name the
    #: engines of their segments), a GPU engine for a GPU stage.
    engine: str = NATIVE
    device_id: int = 0
    #: Reduced precision: a GPU engine may run fp16 (TensorRT); a CPU stage's LiteRT segments
    #: compute in fp16 (the plan's precision is fp16 and the stage's cores compute it).
    fp16: bool = False
    #: Frames a replica runs as one call (micro-batching); > 1 only for stages whose layers all
    #: run in batch-dynamic segments.
    batch: int = 1
    #: Run in the runner's own process, in the thread that feeds it (a plan's only stage, one
    #: replica, every core): no worker process and no shared-memory hop.
    inline: bool = False

    @property
    def io(self) -> StageIO:
        return StageIO(self.start, self.stop, self.inputs, self.outputs)

    def to_dict(self) -> dict[str, Any]:
        """The stage as config.json holds it (what :func:`parse_plan` reads back)."""
        out: dict[str, Any] = {"name": self.name, "start": self.start, "stop": self.stop,
                               "cpus": list(self.cpus), "replicas": self.replicas,
                               "engine": self.engine}
        if self.inputs or self.outputs:
            out.update(inputs=list(self.inputs), outputs=list(self.outputs))
        if engine_spec(self.engine).on_gpu:
            out.update(device_id=self.device_id, fp16=self.fp16)
        elif self.fp16:
            out["fp16"] = True
        if self.batch > 1:
            out["batch"] = self.batch
        if self.inline:
            out["inline"] = True
        return out

    def engine_options(self, cache_dir: str | None = None) -> EngineOptions:
        return EngineOptions(device_id=self.device_id, fp16=self.fp16, cache_dir=cache_dir)


@dataclass(frozen=True)
class PlanConfig:
    """A whole plan as the runner runs it: stages and per-layer choices (one per layer name)."""

    name: str
    stages: tuple[StageConfig, ...]
    choices: Mapping[str, str]
    predicted: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [s.to_dict() for s in self.stages],
                "choices": dict(sorted(self.choices.items())),
                "predicted": dict(sorted(self.predicted.items()))}


@dataclass(frozen=True)
class RunnerConfig:
    """``app/config.json`` resolved against the bundle root ``root``."""

    root: Path
    raw: Mapping[str, Any]
    name: str
    active: str
    plans: Mapping[str, PlanConfig]
    segments: Mapping[SegmentKey, str]
    tolerance: float

    def path(self, key: str) -> Path:
        return self.root / str(self.raw[key])

    def plan(self, name: str | None = None) -> PlanConfig:
        name = name or self.active
        if name not in self.plans:
            raise BundleConfigError(f"no plan {name!r} in this bundle",
                                    hint=f"plans: {', '.join(sorted(self.plans))}")
        return self.plans[name]

    def state_dir(self, override: str | None = None) -> Path:
        """``--state-dir`` > $EDGEDEPLOY_STATE_DIR > config ``state_dir`` > deploy layout > XDG.

        Deployed as ``<root>/releases/<id>`` the state goes to ``<root>/run`` beside the
        deployer's pidfile; elsewhere to ``$XDG_STATE_HOME/edgedeploy/<name>``: never inside
        the bundle, whose files are checksummed.
        """
        chosen = override or os.environ.get("EDGEDEPLOY_STATE_DIR") or self.raw.get("state_dir")
        if chosen:
            return (self.root / chosen).resolve()
        if self.root.resolve().parent.name == "releases":
            return self.root.resolve().parent.parent / "run"
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "edgedeploy" / self.name


def load_config(root: str | Path, path: str = CONFIG_PATH) -> RunnerConfig:
    root = Path(root)
    file = root / path
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise BundleConfigError(f"{file}: not found", hint="run from a bundle directory "
                                "(built by `edgedeploy build`)") from None
    except (OSError, ValueError) as exc:
        raise BundleConfigError(f"{file}: unreadable: {exc}") from None
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        raise BundleConfigError(f"{file}: schema_version must be {SCHEMA_VERSION}",
                                hint="rebuild the bundle with this edgedeploy version")
    try:
        plans = {name: parse_plan(name, p) for name, p in raw["plans"].items()}
        segments = {(str(s.get("format", ONNX)), tuple(s["inputs"]), tuple(s["outputs"])):
                    str(s["file"]) for s in raw.get("segments", [])}
        cfg = RunnerConfig(root=root, raw=raw, name=str(raw["name"]), active=str(raw["active"]),
                           plans=plans, segments=segments,
                           tolerance=float(raw.get("tolerance", 1e-3)))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleConfigError(f"{file}: malformed: {type(exc).__name__}: {exc}") from None
    cfg.plan()  # the active plan must exist
    return cfg


def parse_plan(name: str, data: Mapping[str, Any]) -> PlanConfig:
    """A plan entry of config.json (also what ``measure --config-json`` takes)."""
    try:
        stages = tuple(
            StageConfig(name=str(s.get("name") or f"stage{k}"), start=int(s["start"]),
                        stop=int(s["stop"]), inputs=tuple(s.get("inputs", ())),
                        outputs=tuple(s.get("outputs", ())),
                        cpus=tuple(int(c) for c in s.get("cpus", ())),
                        replicas=int(s.get("replicas", 1)), engine=str(s.get("engine", NATIVE)),
                        device_id=int(s.get("device_id", 0)), fp16=bool(s.get("fp16", False)),
                        batch=int(s.get("batch", 1)), inline=s.get("inline") is True)
            for k, s in enumerate(data["stages"]))
        choices = {str(k): str(v) for k, v in dict(data.get("choices", {})).items()}
        predicted = {str(k): float(v) for k, v in dict(data.get("predicted", {})).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleConfigError(f"plan {name!r} is malformed: {type(exc).__name__}: {exc}",
                                hint="each stage needs start, stop (and cpus, replicas)") from None
    if not stages:
        raise BundleConfigError(f"plan {name!r} has no stages")
    for st in stages:
        try:
            engine_spec(st.engine)
        except Exception as exc:
            raise BundleConfigError(f"plan {name!r}, stage {st.name}: {exc}") from None
        if st.batch < 1:
            raise BundleConfigError(f"plan {name!r}, stage {st.name}: batch must be >= 1")
        if st.inline and len(stages) > 1:
            raise BundleConfigError(f"plan {name!r}, stage {st.name}: an inline stage is the "
                                    "plan's only stage")
    return PlanConfig(name, stages, choices, predicted)


class NpzWeights(Mapping[str, np.ndarray]):
    """A bundle's weights read from its .npz on each access and never cached.

    Why: a stage process must not keep the raw (OIHW) copy of every layer once its primitives
    have packed them, nor ever load the weights of layers its onnxruntime sessions hold
    themselves. With this mapping the executor alone decides what stays resident.
    """

    def __init__(self, path: str | Path, keys: Iterable[str] | None = None,
                 held: Mapping[str, int] | None = None) -> None:
        self.path = Path(path)
        self._held = dict(held or {})  # weights only engine segments hold: their sizes
        with zipfile.ZipFile(self.path) as zf:
            present = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        wanted = present if keys is None else set(keys) - self._held.keys()
        missing = sorted(wanted - present)
        if missing:
            raise KeyError(f"{self.path.name} has no weight(s) {missing[:5]}")
        self._keys = sorted(wanted)

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self._held:
            raise KeyError(f"{key} is held by an engine segment; this bundle ships its size only")
        if key not in self._keys:
            raise KeyError(key)
        with np.load(self.path) as npz:
            return npz[key]

    def __contains__(self, key: object) -> bool:
        return key in self._keys or key in self._held

    def __iter__(self) -> Iterator[str]:
        return iter([*self._keys, *self._held])

    def __len__(self) -> int:
        return len(self._keys) + len(self._held)

    def nbytes_of(self, key: str) -> int:
        """An array's size from its .npy header, without reading the data."""
        if key in self._held:
            return self._held[key]
        fmt = np.lib.format
        with zipfile.ZipFile(self.path) as zf, zf.open(key + ".npy") as fh:
            version = fmt.read_magic(fh)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(fh)
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def load_graph(cfg: RunnerConfig, start: int = 0, stop: int | None = None, *,
               lazy: bool = False) -> ir.Graph:
    """The IR with only the weights that ``layers[start:stop]`` use (a stage loads its own).

    ``lazy``: weights are an :class:`NpzWeights` view, read when the executor asks for them.
    Weights the bundle ships as sizes only (config ``weights_held``: its plans run those layers
    in engine segments) come as sizes, as a stage's :class:`StageWeights` holds them.
    """
    try:
        data = json.loads(cfg.path("graph").read_text())
        graph = ir.Graph.from_dict(data)
        keys = {k for layer in graph.layers[start:stop] for k in layer.weights.values()}
        held = {str(k): int(v) for k, v in (cfg.raw.get("weights_held") or {}).items()
                if k in keys}
        if lazy:
            graph.weights = NpzWeights(cfg.path("weights"), keys, held)  # type: ignore[assignment]
        else:
            with np.load(cfg.path("weights")) as npz:
                arrays = {k: npz[k] for k in sorted(keys - held.keys())}
            graph.weights = StageWeights(arrays, held) if held else arrays  # type: ignore[assignment]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise BundleConfigError(f"cannot load the model from the bundle: {exc}",
                                hint="the bundle may be incomplete; rebuild and push it") from None
    return graph


def resolve_stages(graph: ir.Graph, plan: PlanConfig) -> list[StageConfig]:
    """Check a plan against the graph; fill in boundary tensors a variant left out."""
    n = len(graph.layers)
    out: list[StageConfig] = []
    expect = 0
    for st in plan.stages:
        if st.start != expect or not st.start < st.stop <= n:
            raise BundleConfigError(
                f"plan {plan.name!r}, stage {st.name}: layers [{st.start}, {st.stop}) do not "
                f"continue the previous stage (expected start {expect}, {n} layers in all)")
        ins = tuple(boundary_tensors(graph, st.start))
        outs = tuple(boundary_tensors(graph, st.stop))
        if (st.inputs and st.inputs != ins) or (st.outputs and st.outputs != outs):
            raise BundleConfigError(f"plan {plan.name!r}, stage {st.name}: boundary tensors do "
                                    "not match the graph", hint="rebuild the bundle")
        out.append(replace(st, inputs=ins, outputs=outs))
        expect = st.stop
    if expect != n:
        raise BundleConfigError(f"plan {plan.name!r} covers layers [0, {expect}) of {n}")
    return out


def stage_segments(cfg: RunnerConfig, graph: ir.Graph, io: StageIO,
                   choices: Mapping[str, str]) -> dict[SegmentKey, str]:
    """The paths of the segment models a stage needs (engines read the file themselves: no
    bytes copy of the model stays in the stage process beside the session)."""
    out = {}
    for engine, ins, outs in segments_needed(graph, io, choices):
        key = segment_key(engine, ins, outs)
        if key not in cfg.segments:
            raise BundleConfigError(
                f"layers {ins} -> {outs} run on {engine} but the bundle ships no such segment",
                hint="choose native primitives for them, or rebuild the bundle with this plan")
        path = cfg.root / cfg.segments[key]
        if not path.is_file():
            raise BundleConfigError(f"segment file {path} is missing",
                                    hint="the bundle may be incomplete; rebuild and push it")
        out[key] = str(path)
    return out


def build_stage(root: str, config_path: str, stage: StageConfig,
                choices: Mapping[str, str]) -> GraphStage:
    """Pipeline factory (module-level, so spawn pickles it by reference): runs in the replica's
    pinned process and loads only what that stage needs. Its engines use the cores this replica
    was pinned to (a replica of a stage gets a share of the stage's cores, not all of them)."""
    from edgedeploy.runtime.affinity import available_cpus

    limit_heap_retention()
    cfg = load_config(root, config_path)
    graph = load_graph(cfg, stage.start, stage.stop, lazy=True)
    segments = stage_segments(cfg, graph, stage.io, choices)
    return GraphStage(graph, stage.io, choices, segments, cpus=available_cpus(),
                      options=stage_options(cfg, stage))


def stage_options(cfg: RunnerConfig, stage: StageConfig) -> EngineOptions:
    """How a stage of the bundle opens its engines (fp16, a GPU's device, its engine cache in
    the release): the same for its replicas and for the health check."""
    return stage.engine_options(str(cfg.root / ENGINE_CACHE / stage.name))


def limit_heap_retention(threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold so buffers above ``threshold`` bytes go back to the OS on free.

    Why: glibc raises the threshold each time a large mmapped block is freed (up to 32 MiB), so
    the transient copies of weights made at start-up (onnxruntime's graph optimizer, weight
    transforms) end up in the heap, where freeing them leaves the pages resident. Fixing it
    keeps a stage's RSS near its live data. A no-op (False) where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def tensor_shape(graph: ir.Graph, name: str) -> tuple[int, ...]:
    """The shape ``name`` crosses a stage boundary in (the model's own for its edges)."""
    try:
        return carried_shape(graph, name)
    except KeyError:
        raise BundleConfigError(
            f"tensor {name!r} has no known shape in the bundle's graph") from None


def stage_specs(cfg: RunnerConfig, graph: ir.Graph, plan: PlanConfig,
                config_path: str = CONFIG_PATH) -> list:
    """StageSpecs for the pipeline executor; cpus default to every available core."""
    from edgedeploy.runtime.affinity import available_cpus
    from edgedeploy.runtime.pipeline import StageSpec, TensorSpec

    allowed = available_cpus()
    specs = []
    for st in resolve_stages(graph, plan):
        cpus = st.cpus or tuple(allowed)
        specs.append(StageSpec(
            name=st.name, cpus=cpus, replicas=st.replicas, factory=build_stage,
            factory_args=(str(cfg.root), config_path, st, dict(plan.choices)), batch=st.batch,
            inline=st.inline,
            inputs=tuple(TensorSpec(tensor_shape(graph, t), ring_dtype(graph, t))
                         for t in st.inputs),
            outputs=tuple(TensorSpec(tensor_shape(graph, t), ring_dtype(graph, t))
                          for t in st.outputs)))
    return specs
