"""The engine interface and registry: every back-end that runs (part of) a model on a device.

An engine declares what it can do as data (``capabilities``), as Zephyr's west runners do, so the
planner and the runner can check a plan against the engines a board really has. Back-end packages
(onnxruntime, LiteRT) are imported lazily through :func:`require`, which turns a missing package
into an install hint instead of an ImportError deep in a stage process.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, runtime_checkable

import numpy as np

from edgedeploy.runtime.errors import ExecutionError

#: Capability names an engine may declare.
SEGMENT = "segment"  # runs a contiguous cut of a graph
WHOLE_MODEL = "whole_model"  # runs a complete model file
THREADS = "threads"  # honours a thread count
AFFINITY = "affinity"  # pins its threads to given cores


@runtime_checkable
class Engine(Protocol):
    """What every engine instance offers: named tensors in, named tensors out."""

    name: str
    capabilities: frozenset[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineSpec:
    """A registered engine: its name, what it can do and how to get its class lazily."""

    name: str
    capabilities: frozenset[str]
    #: Returns the engine class; imports the engine module (not its back-end package).
    load: Callable[[], type]
    #: Modules whose import proves the back-end is usable here (any one of them suffices).
    backends: tuple[str, ...] = ()

    def available(self) -> bool:
        return not self.backends or any(_importable(m) for m in self.backends)


ENGINES: dict[str, EngineSpec] = {}


def register_engine(spec: EngineSpec) -> EngineSpec:
    """Add an engine to the registry (the native engine registers itself the same way)."""
    if spec.name in ENGINES:
        raise RuntimeError(f"engine {spec.name!r} registered twice")
    ENGINES[spec.name] = spec
    return spec


def available_engines() -> list[str]:
    """Names of the registered engines whose back-end imports on this machine, sorted."""
    return sorted(name for name, spec in ENGINES.items() if spec.available())


def engine_class(name: str) -> type:
    """The class of engine ``name``; ExecutionError naming the known ones otherwise."""
    spec = ENGINES.get(name)
    if spec is None:
        raise ExecutionError(f"unknown engine {name!r}",
                             hint=f"engines: {', '.join(sorted(ENGINES))}")
    return spec.load()


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
