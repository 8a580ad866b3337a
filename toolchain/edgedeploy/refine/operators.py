"""Mutations of a candidate (Soomro et al. 2021, section 4: the evolutionary search's moves).

Each operator returns a new *valid* candidate or None when the move does not apply (every result
goes through :meth:`Space.is_valid`, so no caller ever sees an invalid configuration). ``focus``
names a stage (the measured bottleneck) the operator should act on; otherwise it picks one.
Moves: shift a stage boundary by one layer, change a stage's core count, move a stage to another
cluster, change one layer's primitive (among those that run there, onnxruntime's and the native
ones included) or one primitive family across a stage, replicate or unreplicate a stage, swap two
stages' units, split/merge stages (what changes the stage count, within ``max_stages``),
change the frames per call of a stage that runs wholly in onnxruntime (``Space.batches``), and
run a one-stage candidate over every CPU inline or in worker processes (``Space.inline``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from edgedeploy.refine.candidate import GPU, Candidate, Space, StageConf
from edgedeploy.runtime.vocab import ONNXRUNTIME

Operator = Callable[[Candidate, Space, np.random.Generator, "int | None"], "Candidate | None"]


def _pick(cand: Candidate, rng: np.random.Generator, focus: int | None) -> int:
    return focus if focus is not None and focus < len(cand.stages) else int(
        rng.integers(len(cand.stages)))


def _refit(cand: Candidate, space: Space, stages: list[StageConf]) -> Candidate | None:
    """Stages replaced; each layer's choice kept where it runs, else the first that does."""
    ch = list(cand.choices)
    for s in stages:
        for i in range(s.start, s.stop):
            c = space.fallback(i, s.cluster, ch[i])
            if c is None:
                return None
            ch[i] = c
    out = Candidate(tuple(stages), tuple(ch))
    return out if space.is_valid(out) else None


def move_boundary(cand: Candidate, space: Space, rng: np.random.Generator,
                  focus: int | None = None) -> Candidate | None:
    """Shift one boundary by one layer (toward shrinking the focus stage when given)."""
    n = len(cand.stages)
    if n < 2:
        return None
    k = _pick(cand, rng, focus)
    if focus is not None:  # shrink the bottleneck: move one of its edges inward
        sides = [b for b in (k - 1, k) if 0 <= b < n - 1]
        b = sides[int(rng.integers(len(sides)))]
        delta = 1 if b == k - 1 else -1
    else:
        b = int(rng.integers(n - 1))
        delta = 1 if rng.random() < 0.5 else -1
    st = list(cand.stages)
    cut = st[b].stop + delta
    if not st[b].start < cut < st[b + 1].stop:
        return None
    st[b] = StageConf(st[b].start, cut, st[b].cluster, st[b].cores, st[b].replicas)
    st[b + 1] = StageConf(cut, st[b + 1].stop, st[b + 1].cluster, st[b + 1].cores,
                          st[b + 1].replicas)
    return _refit(cand, space, st)


def change_cores(cand: Candidate, space: Space, rng: np.random.Generator,
                 focus: int | None = None) -> Candidate | None:
    k = _pick(cand, rng, focus)
    s = cand.stages[k]
    if s.cluster == GPU:
        return None
    delta = 1 if focus is not None or rng.random() < 0.5 else -1
    cores = s.cores + delta
    if cores < 1 or cores * s.replicas > space.free(cand, s.cluster, skip=k):
        return None
    st = list(cand.stages)
    st[k] = StageConf(s.start, s.stop, s.cluster, cores, s.replicas)
    return _refit(cand, space, st)


def change_cluster(cand: Candidate, space: Space, rng: np.random.Generator,
                   focus: int | None = None) -> Candidate | None:
    k = _pick(cand, rng, focus)
    s = cand.stages[k]
    others = [c for c in space.clusters if c != s.cluster and space.free(cand, c, skip=k) >= 1]
    if not others:
        return None
    cl = others[int(rng.integers(len(others)))]
    free = space.free(cand, cl, skip=k)
    cores = 1 if cl == GPU else int(rng.integers(1, free + 1))
    st = list(cand.stages)
    st[k] = StageConf(s.start, s.stop, cl, cores, 1)
    return _refit(cand, space, st)


def change_primitive(cand: Candidate, space: Space, rng: np.random.Generator,
                     focus: int | None = None) -> Candidate | None:
    """Another primitive for one layer of the (bottleneck) stage that has a choice."""
    s = cand.stages[_pick(cand, rng, focus)]
    layers = [i for i in range(s.start, s.stop) if len(space.options_on(i, s.cluster)) > 1]
    if not layers:
        return None
    i = layers[int(rng.integers(len(layers)))]
    opts = [o for o in space.options_on(i, s.cluster) if o != cand.choices[i]]
    out = cand.with_choice(i, opts[int(rng.integers(len(opts)))])
    return out if space.is_valid(out) else None


def replicate(cand: Candidate, space: Space, rng: np.random.Generator,
              focus: int | None = None) -> Candidate | None:
    """One more (or, without focus, sometimes one fewer) replica of a stage."""
    k = _pick(cand, rng, focus)
    s = cand.stages[k]
    if s.cluster == GPU or not space.allow_replication:
        return None
    r = s.replicas + (1 if focus is not None or rng.random() < 0.6 else -1)
    if r < 1 or s.cores * r > space.free(cand, s.cluster, skip=k):
        return None
    st = list(cand.stages)
    st[k] = StageConf(s.start, s.stop, s.cluster, s.cores, r)
    return _refit(cand, space, st)


def split_stage(cand: Candidate, space: Space, rng: np.random.Generator,
                focus: int | None = None) -> Candidate | None:
    """Split a stage in two; the second half goes to free cores (or shares the first's)."""
    if len(cand.stages) >= space.max_stages:
        return None
    k = _pick(cand, rng, focus)
    s = cand.stages[k]
    if s.stop - s.start < 2:
        return None
    cut = int(rng.integers(s.start + 1, s.stop))
    free = {c: space.free(cand, c) for c in space.clusters}
    pool = [c for c, f in free.items() if f >= 1]
    if pool:
        cl = pool[int(rng.integers(len(pool)))]
        first = StageConf(s.start, cut, s.cluster, s.cores, s.replicas)
        second = StageConf(cut, s.stop, cl, 1, 1)
    elif s.cores * s.replicas >= 2 and s.cluster != GPU:
        half = max(1, s.cores * s.replicas // 2)
        first = StageConf(s.start, cut, s.cluster, half, 1)
        second = StageConf(cut, s.stop, s.cluster, s.cores * s.replicas - half, 1)
    else:
        return None
    st = [*cand.stages[:k], first, second, *cand.stages[k + 1:]]
    return _refit(cand, space, st)


def merge_stages(cand: Candidate, space: Space, rng: np.random.Generator,
                 focus: int | None = None) -> Candidate | None:
    """Merge a stage with its successor (on the first one's cluster and cores)."""
    if len(cand.stages) < 2:
        return None
    k = min(_pick(cand, rng, focus), len(cand.stages) - 2)
    a, b = cand.stages[k], cand.stages[k + 1]
    st = [*cand.stages[:k], StageConf(a.start, b.stop, a.cluster, a.cores, a.replicas),
          *cand.stages[k + 2:]]
    return _refit(cand, space, st)


def stage_primitive(cand: Candidate, space: Space, rng: np.random.Generator,
                    focus: int | None = None) -> Candidate | None:
    """Every layer of one stage that uses primitive family A switches to family B where B
    applies (a layout or algorithm preference is usually a property of the core, not a layer)."""
    s = cand.stages[_pick(cand, rng, focus)]
    used = sorted({cand.choices[i] for i in range(s.start, s.stop)})
    src = used[int(rng.integers(len(used)))]
    alts = sorted({o for i in range(s.start, s.stop) if cand.choices[i] == src
                   for o in space.options_on(i, s.cluster) if o != src})
    if not alts:
        return None
    dst = alts[int(rng.integers(len(alts)))]
    ch = list(cand.choices)
    for i in range(s.start, s.stop):
        if ch[i] == src and dst in space.options_on(i, s.cluster):
            ch[i] = dst
    out = Candidate(cand.stages, tuple(ch))
    return out if space.is_valid(out) else None


def swap_units(cand: Candidate, space: Space, rng: np.random.Generator,
               focus: int | None = None) -> Candidate | None:
    """Two stages exchange their (cluster, cores, replicas): reorders clusters in the pipeline."""
    n = len(cand.stages)
    if n < 2:
        return None
    a = _pick(cand, rng, focus)
    b = int(rng.integers(n - 1))
    b = b + 1 if b >= a else b
    st = list(cand.stages)
    sa, sb = st[a], st[b]
    st[a] = StageConf(sa.start, sa.stop, sb.cluster, sb.cores, sb.replicas)
    st[b] = StageConf(sb.start, sb.stop, sa.cluster, sa.cores, sa.replicas)
    return _refit(cand, space, st)


def change_batch(cand: Candidate, space: Space, rng: np.random.Generator,
                 focus: int | None = None) -> Candidate | None:
    """Another batch size for a stage whose layers all run in onnxruntime on a CPU
    (micro-batching: more frames per call where the device gains by it; measured, not priced)."""
    if len(space.batches) < 2:
        return None
    ok = [k for k, s in enumerate(cand.stages)
          if s.cluster != GPU and all(c == ONNXRUNTIME for c in cand.choices[s.start:s.stop])]
    if not ok:
        return None
    k = focus if focus in ok else ok[int(rng.integers(len(ok)))]
    s = cand.stages[k]
    others = [b for b in space.batches if b != s.batch]
    st = list(cand.stages)
    st[k] = replace(s, batch=others[int(rng.integers(len(others)))])  # inline stays inline
    out = cand.with_stages(st)
    return out if space.is_valid(out) else None


def toggle_inline(cand: Candidate, space: Space, rng: np.random.Generator,
                  focus: int | None = None) -> Candidate | None:
    """The one stage over every CPU run inline (in the feeding process) or in worker
    processes, whichever it is not: which is faster is measured, not priced (the hop to a worker
    costs more than a tiny model; a worker process keeps a stage's Python off the feeder's)."""
    if not space.inline or len(cand.stages) != 1:
        return None
    s = cand.stages[0]
    out = cand.with_stages([replace(s, inline=not s.inline)])
    return out if space.is_valid(out) else None


OPERATORS: dict[str, Operator] = {
    "stage_primitive": stage_primitive, "swap_units": swap_units,
    "move_boundary": move_boundary, "change_cores": change_cores,
    "change_cluster": change_cluster, "change_primitive": change_primitive,
    "replicate": replicate, "split_stage": split_stage, "merge_stages": merge_stages,
    "change_batch": change_batch, "toggle_inline": toggle_inline,
}
WEIGHTS = {"stage_primitive": 1.5, "swap_units": 1.0, "move_boundary": 3.0, "change_cores": 1.5,
           "change_cluster": 1.0,
           "change_primitive": 2.0, "replicate": 1.5, "split_stage": 0.7, "merge_stages": 0.7,
           "change_batch": 1.0, "toggle_inline": 1.0}


def mutate(cand: Candidate, space: Space, rng: np.random.Generator, focus: int | None = None,
           tries: int = 12, weights: dict[str, float] | None = None) -> Candidate | None:
    """One random applicable move (``weights``: WEIGHTS by default, 0 switches a move off);
    None when ``tries`` draws all fail."""
    w = weights or WEIGHTS
    names = [n for n in OPERATORS if w.get(n, 0) > 0]
    p = np.array([w[n] for n in names])
    p /= p.sum()
    for _ in range(tries):
        op = OPERATORS[names[int(rng.choice(len(names), p=p))]]
        out = op(cand, space, rng, focus)
        if out is not None and out.key != cand.key:
            return out
    return None


def random_candidate(space: Space, rng: np.random.Generator,
                     base_choices: tuple[str, ...] | None = None, *,
                     draw_primitives: bool = True) -> Candidate:
    """A uniformly drawn configuration: stage count, cuts, units, and per layer a primitive
    drawn uniformly among those its stage's unit runs (``space.options_on``) -- the whole
    space, as an unguided search sees it. With ``draw_primitives=False`` layers keep
    ``base_choices`` where they run there (the structure alone is random)."""
    if not draw_primitives and base_choices is None:
        raise ValueError("base_choices are needed when primitives are not drawn")
    for _ in range(200):
        stages = _random_stages(space, rng)
        if stages is None:
            continue
        if draw_primitives:
            ch = [""] * space.n_layers
            for s in stages:
                for i in range(s.start, s.stop):
                    opts = space.options_on(i, s.cluster)
                    ch[i] = opts[int(rng.integers(len(opts)))] if opts else ""
            out: Candidate | None = Candidate(tuple(stages), tuple(ch))
            out = out if space.is_valid(out) else None
        else:
            out = _refit(Candidate((), tuple(base_choices or ())), space, stages)
        if out is not None:
            return out
    raise RuntimeError("could not draw a valid random candidate")


def _random_stages(space: Space, rng: np.random.Generator) -> list[StageConf] | None:
    """Stage count, cut points and (cluster, cores, replicas) per stage, uniformly drawn;
    None when the clusters ran out of cores."""
    k = int(rng.integers(1, min(space.max_stages, space.n_layers) + 1))
    cuts = sorted(rng.choice(np.arange(1, space.n_layers), size=k - 1, replace=False)) \
        if k > 1 else []
    bounds = [0, *map(int, cuts), space.n_layers]
    stages, used = [], {c: 0 for c in space.clusters}
    for a, b in itertools.pairwise(bounds):
        pool = [c for c in space.clusters if space.capacity(c) - used[c] >= 1]
        if not pool:
            return None
        cl = pool[int(rng.integers(len(pool)))]
        free = space.capacity(cl) - used[cl]
        cores = 1 if cl == GPU else int(rng.integers(1, free + 1))
        r = 1 if cl == GPU or not space.allow_replication else int(
            rng.integers(1, free // cores + 1))
        used[cl] += cores * r
        stages.append(StageConf(a, b, cl, cores, r))
    return stages
