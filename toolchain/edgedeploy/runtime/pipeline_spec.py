"""Pipeline stage specifications and their checks (host and device share these plain types).

Kept apart from pipeline.py so the executor stays readable; importing this needs only numpy.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .affinity import available_cpus
from .errors import InputError
from .shm import TensorSpec

__all__ = ["KEEP", "Frames", "StageFn", "StageSpec", "TensorSpec", "check_inputs", "pickle_spec",
           "split_cpus", "validate_stages"]

StageFn = Callable[[list[np.ndarray]], list[np.ndarray]]
Frames = Iterable[Sequence[np.ndarray]] | Callable[[int], Sequence[np.ndarray]]
KEEP = ("none", "last", "all")


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """A stage, built inside its own process(es) by ``factory(*factory_args)``.

    ``factory`` must be a module-level function (spawn pickles it by reference); it returns the
    callable that maps the input tensors to the output tensors, and may warm it up.
    """

    name: str
    cpus: tuple[int, ...]
    factory: Callable[..., StageFn]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    replicas: int = 1
    factory_args: tuple = ()


def split_cpus(cpus: Sequence[int], replicas: int) -> list[tuple[int, ...]]:
    """Each replica's cores: the stage's cores split evenly if there are enough, else shared."""
    cpus = tuple(int(c) for c in cpus)
    if len(cpus) < replicas or replicas == 1:
        return [cpus] * replicas
    parts = np.array_split(np.array(cpus), replicas)
    return [tuple(int(c) for c in p) for p in parts]


def validate_stages(stages: Sequence[StageSpec], depth: int, start_method: str) -> None:
    if start_method not in ("spawn", "forkserver"):
        raise InputError(f"start_method must be 'spawn' or 'forkserver', not {start_method!r}",
                         hint="fork is unsafe once onnxruntime or BLAS threads exist")
    if not stages:
        raise InputError("a pipeline needs at least one stage")
    if depth < 1:
        raise InputError(f"queue_depth must be >= 1, got {depth}")
    allowed = set(available_cpus())
    for prev, spec in zip([None, *stages], stages, strict=False):
        if spec.replicas < 1:
            raise InputError(f"stage {spec.name}: replicas must be >= 1")
        if not set(spec.cpus) <= allowed:
            raise InputError(f"stage {spec.name}: cpus {sorted(set(spec.cpus) - allowed)} are not "
                             f"available here (available: {sorted(allowed)})")
        if prev is not None and _norm(prev.outputs) != _norm(spec.inputs):
            raise InputError(f"stage {spec.name}: inputs {_norm(spec.inputs)} do not match "
                             f"stage {prev.name}'s outputs {_norm(prev.outputs)}")


def _norm(specs: Sequence[TensorSpec]) -> tuple:
    return tuple(s.as_tuple() for s in specs)


def pickle_spec(spec: StageSpec) -> bytes:
    try:
        return pickle.dumps(spec)
    except Exception as exc:
        raise InputError(f"stage {spec.name} cannot be sent to its process: {exc}",
                         hint="its factory must be a module-level function and its "
                              "factory_args picklable") from exc


def check_inputs(stage: StageSpec, tensors: Sequence[np.ndarray]) -> None:
    if len(tensors) != len(stage.inputs):
        raise InputError(f"stage {stage.name} takes {len(stage.inputs)} tensors, "
                         f"got {len(tensors)}")
    for k, (t, spec) in enumerate(zip(tensors, stage.inputs, strict=False)):
        if tuple(np.shape(t)) != tuple(spec.shape):
            raise InputError(f"input {k} has shape {tuple(np.shape(t))}, "
                             f"stage {stage.name} expects {tuple(spec.shape)}")
