"""Pipeline stage specifications and their checks (host and device share these plain types).

Kept apart from pipeline.py so the executor stays readable; importing this needs only numpy.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import shm
from .affinity import available_cpus
from .errors import InputError
from .shm import TensorSpec
from .worker_start import START_METHODS

__all__ = ["KEEP", "SPEC_PIPE_BYTES", "Frames", "StageFn", "StageSpec", "TensorSpec",
           "check_inputs", "frame_reader", "period_of", "pickle_spec", "split_cpus", "tail_of",
           "validate_stages", "write_spec_file"]

StageFn = Callable[[list[np.ndarray]], list[np.ndarray]]
Frames = Iterable[Sequence[np.ndarray]] | Callable[[int], Sequence[np.ndarray]]
KEEP = ("none", "last", "all")


def frame_reader(frames: Frames, total: int) -> Callable[[int], Sequence[np.ndarray]]:
    """Frame ``k`` of ``frames`` (a callable ``index -> tensors`` or an iterable read in
    order); InputError when it runs out before ``total`` frames."""
    source = None if callable(frames) else iter(frames)

    def read(k: int) -> Sequence[np.ndarray]:
        tensors = frames(k) if source is None else next(source, None)  # type: ignore[operator]
        if tensors is None:
            raise InputError(f"frames ran out after {k} of {total}")
        return tensors
    return read


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
    #: Frames a replica may run as one call (micro-batching, see stage_worker._serve): its
    #: callable must then take and give tensors with the batch on the leading axis.
    batch: int = 1
    #: Run in the feeding process (``inline_pipeline``; replicas and micro-batches in its
    #: threads, ``inline_replicas``): only a plan's sole stage.
    inline: bool = False


class _Replicated(Protocol):
    """A stage as its completions' pattern sees it."""

    replicas: int
    batch: int


def period_of(stages: Sequence[_Replicated]) -> int:
    """Frames after which a pipeline of ``stages`` repeats the pattern of its completions:
    each stage hands back its replicas' batches in turn (replicas x batch)."""
    return math.lcm(*(s.replicas * s.batch for s in stages))


def tail_of(stages: Sequence[_Replicated]) -> int:
    """Frames to feed behind a timed run of a pipeline of ``stages`` so that no replica drains
    inside it: two whole batches per replica."""
    return 2 * sum(s.replicas * s.batch for s in stages)


def split_cpus(cpus: Sequence[int], replicas: int) -> list[tuple[int, ...]]:
    """Each replica's cores: the stage's cores split evenly if there are enough, else shared."""
    cpus = tuple(int(c) for c in cpus)
    if len(cpus) < replicas or replicas == 1:
        return [cpus] * replicas
    parts = np.array_split(np.array(cpus), replicas)
    return [tuple(int(c) for c in p) for p in parts]


def validate_stages(stages: Sequence[StageSpec], depth: int, start_method: str) -> None:
    if start_method not in START_METHODS:
        raise InputError(f"start_method must be one of {', '.join(START_METHODS)}, "
                         f"not {start_method!r}",
                         hint="fork is unsafe once onnxruntime or BLAS threads exist")
    if not stages:
        raise InputError("a pipeline needs at least one stage")
    if depth < 1:
        raise InputError(f"queue_depth must be >= 1, got {depth}")
    allowed = set(available_cpus())
    for prev, spec in zip([None, *stages], stages, strict=False):
        if spec.replicas < 1:
            raise InputError(f"stage {spec.name}: replicas must be >= 1")
        if spec.batch < 1:
            raise InputError(f"stage {spec.name}: batch must be >= 1")
        if spec.batch > 1 and any(t.shape[:1] != (1,) for t in (*spec.inputs, *spec.outputs)):
            raise InputError(f"stage {spec.name}: batch {spec.batch} needs every input and "
                             "output to lead with a batch axis of 1",
                             hint="plan it with batch 1")
        if not set(spec.cpus) <= allowed:
            raise InputError(f"stage {spec.name}: cpus {sorted(set(spec.cpus) - allowed)} are not "
                             f"available here (available: {sorted(allowed)})")
        if prev is not None and _norm(prev.outputs) != _norm(spec.inputs):
            raise InputError(f"stage {spec.name}: inputs {_norm(spec.inputs)} do not match "
                             f"stage {prev.name}'s outputs {_norm(prev.outputs)}")


def _norm(specs: Sequence[TensorSpec]) -> tuple:
    return tuple(s.as_tuple() for s in specs)


#: A pickled spec larger than this reaches its replicas through a file (see write_spec_file).
SPEC_PIPE_BYTES = 1 << 20


def write_spec_file(blob: bytes) -> str:
    """A stage's pickled spec as a file its replicas read at start-up (in /dev/shm, named as
    the rings are, so a crashed parent's files are reclaimed with them).

    Spawn arguments go through a pipe that the child reads only after its interpreter has
    started and imported the parent's main module: a parent handing each replica a 100 MB
    segment that way waits for every child in turn, and starting a ResNet-50's replicas one
    after another cost 0.65 s each. A file lets every child start at once."""
    import tempfile

    folder = shm.SHM_DIR if os.path.isdir(shm.SHM_DIR) else tempfile.gettempdir()
    path = os.path.join(folder, shm.owned_name())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)
    return path


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


def spin_budgets(stages: Sequence[StageSpec], spin_us: float | None = None) -> list[float]:
    """Each replica's spin budget in seconds, in spawn order (stage by stage, replica by replica).

    The rule, because a spin on a shared core steals the time of the very producer it waits for:
    a replica spins before it sleeps only when it is pinned to cores no other replica is pinned
    to. With the automatic budget (``spin_us`` None and no ``EDGEDEPLOY_SPIN_US``) one more
    condition holds: at least one available core is left to no replica, for the unpinned parent
    that feeds and collects frames (with 2 spinning stages on a 2-core host under other load, a
    compute-bound split lost up to 12 % of its throughput: the spinners took the parent's time).
    An explicit budget skips that check;
    ``0`` turns spinning off everywhere (an energy-bound deployment wants that).
    """
    env = os.environ.get("EDGEDEPLOY_SPIN_US", "").strip()
    auto = spin_us is None and not env
    if spin_us is None:
        try:
            spin_us = float(env) if env else shm.DEFAULT_SPIN_S * 1e6
        except ValueError as exc:
            raise InputError(f"EDGEDEPLOY_SPIN_US must be a number of microseconds, "
                             f"not {env!r}") from exc
    if spin_us < 0:
        raise InputError(f"spin_us must be >= 0, got {spin_us}")
    sets = [frozenset(c) for spec in stages for c in split_cpus(spec.cpus, spec.replicas)]
    if auto and not set(available_cpus()) - frozenset().union(*sets):
        return [0.0] * len(sets)
    budgets = []
    for k, mine in enumerate(sets):
        others = frozenset().union(*(c for i, c in enumerate(sets) if i != k))
        budgets.append(spin_us * 1e-6 if mine and not mine & others else 0.0)
    return budgets
