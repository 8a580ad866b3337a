"""The configuration a refiner mutates, and the space that says which ones are valid.

A :class:`Candidate` is a full deployment choice: contiguous stages (layer range, cluster, cores
per replica, replicas) and one primitive per layer. :class:`Space` holds what makes one valid on a
board: per-layer options (the manifest's allow/deny lists already applied), cluster capacities
(a GPU is one unit, never replicated), the manifest's ``max_stages`` and ``allow_replication``.
Cores are disjoint across stages by construction: each cluster's cpu ids are handed out in
pipeline order (the planner's ``assign_cpus`` rule), so validity is "the counts fit".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edgedeploy.runtime.vocab import ONNXRUNTIME

GPU = "gpu"


@dataclass(frozen=True)
class StageConf:
    start: int
    stop: int
    cluster: str
    cores: int
    replicas: int = 1
    #: Frames per call (micro-batching, chosen by measure-to-decide). The operators build their
    #: neighbours unbatched; the seed keeps the measured plan's batch, so it is measured as
    #: deployed.
    batch: int = 1
    #: Run in the feeding process (``runtime.inline_pipeline``), as the stock runtime runs:
    #: only a candidate's one stage, over every CPU of the space. A seed keeps it, and so does a
    #: neighbour that changes primitives or the batch only; the other operators build worker
    #: stages, and ``toggle_inline`` moves between the two where the device measures both.
    inline: bool = False


@dataclass(frozen=True)
class Candidate:
    stages: tuple[StageConf, ...]
    choices: tuple[str, ...]

    @property
    def key(self) -> str:
        """Canonical text identity (the measurement cache's key)."""
        st = ";".join(f"{s.start}-{s.stop}@{s.cluster}:{s.cores}x{s.replicas}"
                      + (f"b{s.batch}" if s.batch > 1 else "") + ("i" if s.inline else "")
                      for s in self.stages)
        return st + "|" + ",".join(self.choices)

    def with_stages(self, stages: Sequence[StageConf]) -> Candidate:
        return replace(self, stages=tuple(stages))

    def with_choice(self, layer: int, choice: str) -> Candidate:
        ch = list(self.choices)
        ch[layer] = choice
        return replace(self, choices=tuple(ch))

    def stage_of(self, layer: int) -> int:
        return next(k for k, s in enumerate(self.stages) if s.start <= layer < s.stop)

    def as_tuples(self) -> list[tuple[int, int, str, int, int]]:
        return [(s.start, s.stop, s.cluster, s.cores, s.replicas) for s in self.stages]

    def describe(self) -> str:
        """The stages as a person reads them (layers first..last, as ``plan`` prints them):
        ``layers 0..38 on cpu:1 x2, batch 2, inline``."""
        return " | ".join(f"layers {s.start}..{s.stop - 1} on {s.cluster}:{s.cores} x{s.replicas}"
                          + (f", batch {s.batch}" if s.batch > 1 else "")
                          + (", inline" if s.inline else "") for s in self.stages)


@dataclass
class Space:
    """What a valid candidate may use on one board for one model."""

    layer_names: list[str]
    options: list[tuple[str, ...]]
    clusters: dict[str, tuple[int, ...]]  # name -> cpu ids ("gpu" -> ())
    max_stages: int = 4
    allow_replication: bool = True
    #: Frames per call the search may give an all-onnxruntime CPU stage (``change_batch``):
    #: (1,) unless the objective is throughput and the device runs segments free in the batch
    #: (never on a twin: it does not model batching). A seed keeps its own batch regardless.
    batches: tuple[int, ...] = (1,)
    #: Whether the search may move a one-stage candidate over every CPU between a worker
    #: process and inline (``toggle_inline``): where the device runs the runner's own executors
    #: (never on a twin, which does not model the worker hop). A seed keeps its own regardless.
    inline: bool = False
    #: Layer indices no stage may start at (``runtime.stages.unfused_cuts``).
    no_cut: frozenset[int] = frozenset()
    #: Clusters whose LiteRT stages compute fp16 (``planner.half``; empty unless the plan's
    #: precision is fp16).
    half: frozenset[str] = frozenset()
    #: What the device can run beyond the space's own rules (e.g. only the segments a deployed
    #: bundle ships): reasons a candidate cannot run there, empty when it can.
    runnable: Callable[[Candidate], list[str]] | None = field(default=None, repr=False,
                                                               compare=False)

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    def capacity(self, cluster: str) -> int:
        return 1 if cluster == GPU else len(self.clusters[cluster])

    def options_on(self, layer: int, cluster: str) -> tuple[str, ...]:
        """A GPU runs only onnxruntime kernels (numpy code cannot)."""
        opts = self.options[layer]
        return tuple(o for o in opts if o == ONNXRUNTIME) if cluster == GPU else opts

    def fallback(self, layer: int, cluster: str, current: str) -> str | None:
        """``current`` if it runs on ``cluster``, else the first option that does."""
        opts = self.options_on(layer, cluster)
        if current in opts:
            return current
        return opts[0] if opts else None

    def violations(self, cand: Candidate) -> list[str]:
        """Why a candidate is invalid (empty: valid)."""
        out: list[str] = []
        st = cand.stages
        if not st or len(st) > self.max_stages:
            out.append(f"{len(st)} stages (1..{self.max_stages} allowed)")
        if len(cand.choices) != self.n_layers:
            out.append("one choice per layer needed")
            return out
        expect = 0
        used: dict[str, int] = {}
        for k, s in enumerate(st):
            if s.start != expect or s.stop <= s.start:
                out.append(f"stage {k} is not contiguous ({s.start}..{s.stop})")
            if k and s.start in self.no_cut:
                out.append(f"stage {k} starts at layer {s.start}, between a DequantizeLinear "
                           "and its consumer")
            expect = s.stop
            if s.cluster not in self.clusters:
                out.append(f"stage {k}: unknown cluster {s.cluster!r}")
                continue
            if s.cores < 1 or s.replicas < 1:
                out.append(f"stage {k}: cores and replicas must be >= 1")
            if s.cluster == GPU and (s.cores != 1 or s.replicas != 1):
                out.append(f"stage {k}: a GPU stage is one unit, not replicated")
            if s.replicas > 1 and not self.allow_replication:
                out.append(f"stage {k}: replication is not allowed")
            used[s.cluster] = used.get(s.cluster, 0) + s.cores * s.replicas
            for i in range(max(0, s.start), min(s.stop, self.n_layers)):
                if cand.choices[i] not in self.options_on(i, s.cluster):
                    out.append(f"layer {i}: {cand.choices[i]!r} cannot run on {s.cluster}")
            if s.batch > 1 and (s.cluster == GPU or any(
                    c != ONNXRUNTIME for c in cand.choices[s.start:s.stop])):
                out.append(f"stage {k}: batches {s.batch} frames, so every layer must run "
                           "in onnxruntime on a CPU")
            if s.inline and (len(st) > 1 or s.cluster == GPU
                             or s.cores * s.replicas != len(self.cpu_ids)):
                out.append(f"stage {k}: runs inline, in the feeding process, so it must be "
                           f"the only stage, over all {len(self.cpu_ids)} CPUs")
        if expect != self.n_layers:
            out.append(f"stages cover {expect} of {self.n_layers} layers")
        for cl, n in used.items():
            if cl in self.clusters and n > self.capacity(cl):
                out.append(f"cluster {cl}: {n} cores used, {self.capacity(cl)} available")
        if not out and self.runnable is not None:
            out += self.runnable(cand)
        return out

    @property
    def cpu_ids(self) -> tuple[int, ...]:
        """Every CPU a stage may use (a GPU's cluster has none)."""
        return tuple(sorted(i for c, ids in self.clusters.items() if c != GPU for i in ids))

    def is_valid(self, cand: Candidate) -> bool:
        return not self.violations(cand)

    def free(self, cand: Candidate, cluster: str, skip: int | None = None) -> int:
        """Units of ``cluster`` not used by the candidate's stages (except stage ``skip``)."""
        used = sum(s.cores * s.replicas for k, s in enumerate(cand.stages)
                   if s.cluster == cluster and k != skip)
        return self.capacity(cluster) - used

    def cpus(self, cand: Candidate) -> list[list[int]]:
        """Concrete cpu ids per stage: each cluster's ids handed out in pipeline order."""
        taken: dict[str, int] = {}
        out = []
        for s in cand.stages:
            ids = self.clusters[s.cluster]
            n = 0 if s.cluster == GPU else s.cores * s.replicas
            k = taken.get(s.cluster, 0)
            out.append(list(ids[k:k + n]))
            taken[s.cluster] = k + n
        return out

    def fp16(self, cand: Candidate, stage: StageConf) -> bool:
        """Whether ``stage`` of ``cand`` computes fp16 (``planner.half.computes_fp16``)."""
        from edgedeploy.planner.half import computes_fp16

        return computes_fp16(stage.cluster, cand.choices[stage.start:stage.stop], self.half)

    def variant(self, cand: Candidate, predicted: dict[str, float] | None = None
                ) -> dict[str, Any]:
        """The runner's ``--config-json`` plan object for this candidate."""
        stages = [{"name": f"stage{k}", "start": s.start, "stop": s.stop, "cpus": ids,
                   "replicas": s.replicas, "cluster": s.cluster, "cores": s.cores,
                   **({"batch": s.batch} if s.batch > 1 else {}),
                   **({"inline": True} if s.inline else {}),
                   **({"fp16": True} if self.fp16(cand, s) else {})}
                  for k, (s, ids) in enumerate(zip(cand.stages, self.cpus(cand), strict=True))]
        return {"stages": stages, "choices": dict(zip(self.layer_names, cand.choices,
                                                      strict=True)),
                "predicted": dict(predicted or {})}


def internal_choice(choice: str) -> str:
    """The search's name for a lockfile choice: a GPU engine is onnxruntime priced on ``gpu``
    (the planner names the GPU's engine only when it writes the plan)."""
    from edgedeploy.runtime.engines import ENGINES

    spec = ENGINES.get(choice)
    return ONNXRUNTIME if spec is not None and spec.on_gpu else choice


def from_stages(space: Space, stages: Sequence[dict[str, Any]], choices: Sequence[str]
                ) -> Candidate:
    """A candidate from plan-document stage entries (``start, stop, cluster, cores, replicas``,
    ``batch``, ``inline``)."""
    return Candidate(tuple(StageConf(int(s["start"]), int(s["stop"]), str(s["cluster"]),
                                     int(s["cores"]), int(s.get("replicas", 1)),
                                     int(s.get("batch", 1)), s.get("inline") is True)
                           for s in stages), tuple(choices))


def seeds_from_plan(space: Space, doc: dict[str, Any], limit: int = 4) -> list[Candidate]:
    """The guided start (Soomro et al. 2021): the plan, then its Pareto neighbours (valid,
    distinct), fastest predicted first."""
    plan = from_stages(space, doc["stages"], [internal_choice(layer["choice"])
                                              for layer in doc["layers"]])
    out = [plan]
    for point in doc.get("pareto", []):
        ch = [internal_choice(c) for s in point["stages"] for c in s["choices"]]
        cand = from_stages(space, point["stages"], ch)
        if space.is_valid(cand) and cand.key not in {c.key for c in out}:
            out.append(cand)
        if len(out) >= limit:
            break
    return out


def baselines_from_plan(space: Space, doc: dict[str, Any]
                        ) -> tuple[list[tuple[str, Candidate]], dict[str, str]]:
    """The lockfile's runnable baselines (what a user would run instead: the whole model through
    one engine, threaded or replicated) as candidates, by name, and why each other runnable one
    cannot be measured here (``space.violations``: a segment the deployed bundle lacks). Where
    the device measures inline (``space.inline``), each one over every CPU also as a user runs
    it, in the process that feeds it (``<name>_inline``), as measure-to-decide and the bench
    measure them."""
    out: list[tuple[str, Candidate]] = []
    skipped: dict[str, str] = {}
    for name, base in sorted((doc.get("baselines") or {}).items()):
        if not base.get("stages"):
            continue  # a figure-only baseline (one session over several clusters)
        ch = [internal_choice(c) for s in base["stages"] for c in s["choices"]]
        cand = from_stages(space, base["stages"], ch)
        why = space.violations(cand)
        if why:
            skipped[name] = why[0]
            continue
        out.append((name, cand))
        inline = cand.with_stages([replace(s, inline=True) for s in cand.stages])
        if space.inline and space.is_valid(inline):
            out.append((f"{name}_inline", inline))
    return out, skipped
