"""The engine interface and registry: every back-end that runs (part of) a model on a device.

An engine declares what it can do as data, as Zephyr's west runners do: which model formats it
runs segments of, on which device kind, at which precisions, with which onnxruntime execution
providers, whether it runs ops the IR has no native code for. The planner (which options a layer
has on a board), the cost model (how a choice is priced), the executor (how a run of layers
becomes one session), the bundle (which segment files ship) and ``doctor`` (what a board must
offer) all read these declarations here, so adding an engine is one module that registers one
:class:`EngineSpec`.

Back-end packages (onnxruntime, LiteRT) are imported lazily through :func:`require`, which turns a
missing package into an install hint instead of an ImportError deep in a stage process.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Protocol, runtime_checkable

import numpy as np

from edgedeploy.runtime.errors import ExecutionError, did_you_mean
from edgedeploy.runtime.vocab import CPU, GPU, NATIVE, NCHW

#: Capability names an engine may declare.
SEGMENT = "segment"  # runs a contiguous cut of a graph
WHOLE_MODEL = "whole_model"  # runs a complete model file
THREADS = "threads"  # honours a thread count
AFFINITY = "affinity"  # pins its threads to given cores


@runtime_checkable
class Engine(Protocol):
    """What every engine instance offers: named tensors in, named tensors out, rank-4 ones in
    its spec's ``layout`` (the executor converts at its edges where a neighbour wants another)."""

    name: str
    capabilities: frozenset[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineOptions:
    """How a stage hands its resources to an engine instance."""

    #: CPU cores the engine's threads run on (a GPU engine: the core of its feeding thread).
    cpus: tuple[int, ...] | None = None
    threads: int | None = None
    #: GPU index for GPU engines.
    device_id: int = 0
    #: Reduced precision allowed (TensorRT fp16), only where the manifest allows it.
    fp16: bool = False
    #: Where an engine may cache compiled artefacts (TensorRT engines), inside the release.
    cache_dir: str | None = None
    allow_spinning: bool = True


Opener = Callable[[bytes | str, EngineOptions], Engine]


@dataclass(frozen=True)
class EngineSpec:
    """A registered engine: what it runs, where, and how to open a segment with it lazily."""

    name: str
    capabilities: frozenset[str]
    #: Returns the engine class; imports the engine module (not its back-end package).
    load: Callable[[], type] = field(compare=False)
    #: Modules whose import proves the back-end is usable here (any one of them suffices).
    backends: tuple[str, ...] = ()
    #: Source model formats it can run segments of ("onnx", "tflite").
    formats: tuple[str, ...] = ()
    #: The file format of its segments (the format a host-side cutter writes), "" if none.
    segment_format: str = ""
    device: str = CPU
    precisions: tuple[str, ...] = ("fp32",)
    #: onnxruntime execution providers a board must offer for this engine.
    providers: tuple[str, ...] = ()
    #: Runs ops the IR keeps opaque (no native implementation).
    runs_opaque: bool = False
    #: The layout of its rank-4 tensors, in a segment and at its edges: entering or leaving a
    #: segment of an engine whose layout is not its neighbour's costs a transpose, which the
    #: planner prices.
    layout: str = NCHW
    #: What a board needs for it, as bundle requirements: Python distributions and
    #: ``provider:<Name>`` entries (onnxruntime execution providers); ``doctor`` checks them.
    requires: tuple[str, ...] = ()
    #: Opens a segment (model bytes or a path) with the given resources.
    open: Opener | None = field(default=None, compare=False)

    @property
    def is_segment(self) -> bool:
        return SEGMENT in self.capabilities and self.open is not None

    @property
    def on_gpu(self) -> bool:
        return self.device == GPU

    def available(self) -> bool:
        """The back-end imports here (a GPU engine also needs its providers: see ``doctor``)."""
        return not self.backends or any(_importable(m) for m in self.backends)


ENGINES: dict[str, EngineSpec] = {}


def register_engine(spec: EngineSpec) -> EngineSpec:
    """Add an engine to the registry (every engine module registers itself this way)."""
    old = ENGINES.get(spec.name)
    if old is not None and old != spec:  # the same declaration again is a module reload
        raise RuntimeError(f"engine {spec.name!r} registered twice")
    ENGINES[spec.name] = spec
    return spec


def unregister_engine(name: str) -> None:
    """Remove an engine (tests register toy engines and take them away again)."""
    ENGINES.pop(name, None)


def available_engines() -> list[str]:
    """Names of the registered engines whose back-end imports on this machine, sorted."""
    return sorted(name for name, spec in ENGINES.items() if spec.available())


def engine_spec(name: str) -> EngineSpec:
    """The registered engine ``name``; ExecutionError naming the known ones otherwise."""
    spec = ENGINES.get(name)
    if spec is None:
        from edgedeploy.runtime.vocab import LEGACY_NAMES

        hint = f"engines: {', '.join(sorted(ENGINES))}"
        if name in LEGACY_NAMES:
            hint = f"{name!r} is now called {LEGACY_NAMES[name]!r}; re-plan to update the lockfile"
        raise ExecutionError(f"unknown engine {name!r}{did_you_mean(name, ENGINES)}", hint=hint)
    return spec


#: The requirement of a bundle whose CPU stages compute fp16: cores with fp16 arithmetic.
CPU_FP16 = "cpu:fp16"


def board_requirements(engines: Iterable[str], *, cpu_fp16: bool = False) -> list[str]:
    """What a board needs to run ``engines``: numpy, and each engine's own requirements
    (Python distributions, ``provider:<Name>`` execution providers), and :data:`CPU_FP16`
    where a CPU stage computes fp16, sorted."""
    needs = {"numpy", *([CPU_FP16] if cpu_fp16 else [])}
    for engine in engines:
        needs.update(engine_spec(engine).requires)
    return sorted(needs)


def engine_class(name: str) -> type:
    """The class of engine ``name``."""
    return engine_spec(name).load()


def engine_of(choice: str) -> str:
    """The engine that runs a per-layer choice: a segment engine's own name, else ``native``
    (conv primitives such as ``winograd_f4x3/nchw`` and ``native`` ops)."""
    spec = ENGINES.get(choice)
    if spec is not None and spec.is_segment:
        return choice
    return NATIVE


def is_segment_choice(choice: str) -> bool:
    spec = ENGINES.get(choice)
    return spec is not None and spec.is_segment


def segment_engines(fmt: str | None = None, device: str | None = None) -> list[EngineSpec]:
    """Segment engines that run segments of ``fmt`` on ``device`` (any when None), by name."""
    return [s for _, s in sorted(ENGINES.items()) if s.is_segment
            and (fmt is None or fmt in s.formats) and (device is None or s.device == device)]


def open_segment(engine: str, model: bytes | str, options: EngineOptions) -> Engine:
    """An instance of segment engine ``engine`` over ``model``."""
    spec = engine_spec(engine)
    if not spec.is_segment or spec.open is None:
        raise ExecutionError(f"engine {engine!r} does not run graph segments")
    return spec.open(model, options)


def cpus_of(options: EngineOptions) -> Sequence[int] | None:
    return list(options.cpus) if options.cpus else None


@functools.cache
def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # ImportError, or a wheel that fails to load (tflite-runtime on numpy 2)
        return False
    return True


def require(module: str, package: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise ExecutionError saying which package to install for what."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExecutionError(
            f"{purpose} needs the Python package {package!r}, which is not installed here "
            f"({exc})",
            hint=f"install it on this machine: python -m pip install {package}",
        ) from exc
