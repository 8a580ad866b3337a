"""CostModel: predicted milliseconds for every (layer, primitive, core configuration).

``prediction = prior(descriptor, primitive, configuration) * exp(correction(features))``; the
prior comes from the board descriptor (prior.py), the correction from the board's profile
(fit.py). Without a profile the correction is zero and the prior stands alone.

Where a primitive runs another's GEMM on the same operands plus passes of its own
(``CostTerms.same_gemm``: im2col and direct on a 1x1 conv are gemm_1x1 plus a copy), a calibrated
model prices it as that primitive's prediction plus the prior's passes times a scale the profile
measured: a per-primitive correction a few per cent off on a 1 ms GEMM would otherwise outweigh
the 5-40 us copy that separates them, and rank them at random (held-out 1x1 layers of two
profiles of the 2-vCPU Xeon: Kendall tau 0.57-0.58 -> 0.60-0.64).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgedeploy.costmodel import prior as prior_mod
from edgedeploy.costmodel.configs import CoreConfig, config_matrix, core_configs
from edgedeploy.costmodel.features import (
    CPU_ENGINE_FAMILIES,
    DF,
    NATIVE,
    descriptor_matrix,
    feature_matrix,
    neighbour_coords,
    primitive_key,
)
from edgedeploy.costmodel.fit import Correction, NeighbourResidual, fine_tune, fit_correction
from edgedeploy.costmodel.profile import Profile, Sample
from edgedeploy.runtime import ir
from edgedeploy.runtime.vocab import FP16, INT8
from edgedeploy.schemas.target import Target

#: A profile with fewer usable samples than this is not used for calibration.
MIN_FIT_SAMPLES = 12
#: Layers a primitive and the one whose GEMM it runs must both have been measured on before the
#: calibration prices the first as the second plus its passes, and the largest scale of the
#: prior's passes it accepts (a larger one says the two do not share the GEMM after all).
SAME_GEMM_MIN_PAIRS = 3
SAME_GEMM_MAX_SCALE = 3.0
#: ``CostModel.log_span``'s entry for every sample (primitive keys are never negative).
ANY_KEY = -1


class _SampleRows(NamedTuple):
    """A profile's usable samples as the calibration fits them, row by row."""

    x: np.ndarray  # features.feature_matrix
    y: np.ndarray  # log(measured / prior)
    groups: np.ndarray  # one id per layer shape: its rows never straddle a CV fold
    coords: np.ndarray  # features.neighbour_coords
    nkeys: np.ndarray  # primitive key * 1000 + configuration row
    dm: np.ndarray
    keys: np.ndarray
    cfg_rows: np.ndarray
    prior_ms: np.ndarray
    ms: np.ndarray
    spread: np.ndarray  # how much each sample's repetitions disagreed (_noise_weights)


def _fit_same_gemm(rows: _SampleRows) -> dict[int, float]:
    """Per primitive and configuration, the scale from the prior's extra time over the
    primitive whose GEMM it runs (``CostTerms.same_gemm``) to the measured one: the median of
    the layers' ratios, on the layers where the profile measured both, at least
    :data:`SAME_GEMM_MIN_PAIRS`. Not least squares in milliseconds, where the largest layer
    outweighs the rest: on a 2-core profile one 1024-channel layer whose gemm_1x1 read 1.6x
    slow set the scale of im2col and direct to 0, so they were predicted to tie with gemm_1x1
    on every 1x1 layer, where they measured 5-30 % slower."""
    ref = prior_mod.same_gemm_keys(rows.dm, rows.keys)
    at = {(int(g), int(k)): i for i, (g, k) in enumerate(zip(rows.groups, rows.nkeys,
                                                             strict=True))}
    wanted = {int(i): (int(rows.groups[i]), int(ref[i] * 1000 + rows.cfg_rows[i]))
              for i in np.flatnonzero(ref >= 0)}
    pairs = [(i, at[w]) for i, w in wanted.items() if w in at]
    if not pairs:
        return {}
    mine, theirs = (np.array(side) for side in zip(*pairs, strict=True))
    extra = rows.prior_ms[mine] - rows.prior_ms[theirs]
    gap = rows.ms[mine] - rows.ms[theirs]
    group = rows.nkeys[mine]
    out = {}
    for g in np.unique(group):
        sel = (group == g) & (extra > 0)
        if sel.sum() >= SAME_GEMM_MIN_PAIRS:
            scale = float(np.median(gap[sel] / extra[sel]))
            out[int(g)] = float(np.clip(scale, 0.0, SAME_GEMM_MAX_SCALE))
    return out


def _log_span(rows: _SampleRows) -> dict[int, tuple[float, float]]:
    """The least and most ``log(measured / prior)`` of each primitive's fit samples, and of
    all of them under :data:`ANY_KEY`."""
    def span(y: np.ndarray) -> tuple[float, float]:
        return float(y.min()), float(y.max())

    return {ANY_KEY: span(rows.y),
            **{int(k): span(rows.y[rows.keys == k]) for k in np.unique(rows.keys)}}


def _kinds(dm: np.ndarray) -> np.ndarray:
    """Each descriptor row's kind of layer: 1 a convolution, 2 a dense layer, 0 another."""
    return (dm[:, DF["is_conv"]] + 2 * dm[:, DF["is_dense"]]).astype(int)


def _noise_weights(spread: np.ndarray) -> np.ndarray:
    """A sample whose repetitions disagreed (load from elsewhere) counts for less."""
    return 1.0 / (1.0 + (spread / 0.25) ** 2)


def ring_hop_ms(target: Target, nbytes: int) -> float:
    """Handing ``nbytes`` from one process to another on the same cluster of ``target``: the
    ring's hand-over (queue + wake-up) and a copy at half the memory bandwidth."""
    return target.inter_cluster.latency_us / 1000.0 + nbytes / (target.memory_bw_gbps * 0.5 * 1e6)


def candidates(d: ir.Descriptor) -> list[str]:
    """Choices a layer can run with: applicable conv primitives (other ops: ``native``), plus
    the CPU segment engines. Which engines a board and a model format allow is the planner's
    filter (``planner.adapter``); the GPU is priced as onnxruntime's kernels on ``gpu:1``."""
    from edgedeploy.runtime.engines import segment_engines

    engines = [*CPU_ENGINE_FAMILIES, *(s.name for s in segment_engines(device="cpu")
                                       if s.name not in CPU_ENGINE_FAMILIES)]
    if d.op == ir.CONV2D:
        from edgedeploy.runtime import primitives

        return [p.name for p in primitives.applicable(d)] + engines
    if d.op == ir.OPAQUE:
        return engines
    return [NATIVE, *engines]


#: LiteRT's time computing fp16 over its fp32 time (XNNPACK's FORCE_FP16): 1 / the geometric mean
#: of its speed-ups on four float TFLite models of the third-party corpus, one thread of this
#: project's x86 host with avx512_fp16 (1.44, 1.20, 1.44, 1.06x:
#: results/precision_fp16_litert.json). Arm cores with fp16 vectors double their lanes as well.
HALF_PRIOR = 0.785


@dataclass
class PredictionTable:
    """Dense predictions: ``ms[layer, primitive, config]``, ``inf`` where a primitive does not
    apply to the layer (or cannot run on that configuration, e.g. numpy code on a GPU)."""

    layers: list[str]
    primitives: list[str]
    configs: list[CoreConfig]
    ms: np.ndarray

    def get(self, layer: str | int, primitive: str, config: CoreConfig) -> float:
        li = layer if isinstance(layer, int) else self.layers.index(layer)
        return float(self.ms[li, self.primitives.index(primitive), self.configs.index(config)])

    def candidates(self, layer: int) -> list[str]:
        """Primitives with a finite time on some configuration for layer index ``layer``."""
        ok = np.isfinite(self.ms[layer]).any(axis=1)
        return [p for p, k in zip(self.primitives, ok, strict=False) if k]

    def best(self, layer: int, config: CoreConfig) -> tuple[str, float]:
        col = self.ms[layer, :, self.configs.index(config)]
        j = int(np.argmin(col))
        return self.primitives[j], float(col[j])

    def to_dict(self) -> dict[str, object]:
        """{layer: {config key: {primitive: ms}}} with only finite entries (for JSON)."""
        out: dict[str, object] = {}
        for i, name in enumerate(self.layers):
            out[name] = {
                c.key: {p: round(float(self.ms[i, j, k]), 6) for j, p in enumerate(self.primitives)
                        if np.isfinite(self.ms[i, j, k])}
                for k, c in enumerate(self.configs)
            }
        return out


class CostModel:
    """Predicts layer times on one target; see the module docstring."""

    def __init__(self, target: Target, correction: Correction | None = None,
                 source: str = "prior") -> None:
        self.target = target
        self.configs = core_configs(target)
        self._cm = config_matrix(target, self.configs)
        self._cfg_index = {c: i for i, c in enumerate(self.configs)}
        self.correction = correction
        self.neighbours: NeighbourResidual | None = None
        #: {primitive key * 1000 + configuration row: scale}: measured over predicted extra time
        #: of a primitive that runs another's GEMM plus passes (``CostTerms.same_gemm``).
        self.same_gemm_scale: dict[int, float] = {}
        #: {primitive key: (least, most) log(measured / prior) of its fit samples}, and under
        #: ANY_KEY those of every sample: how far the calibration may correct a layer.
        self.log_span: dict[int, tuple[float, float]] = {}
        #: The kinds of layer (``_kinds``) the fit samples hold: the correction was learnt on
        #: them, and a layer of another kind keeps the prior.
        self.fit_kinds: frozenset[int] = frozenset()
        #: What calibrated it: "prior", "profile:<digest>", "transfer:<digest>+<k>".
        self.source = source
        #: {engine: {config key: factor}}: whole-run vs per-layer time (costmodel.segments).
        self.segment_factors: dict[str, dict[str, float]] = {}

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def for_target(cls, target: Target, profile: Profile | None = None) -> CostModel:
        """The target's model: calibrated from ``profile`` (default: the stored one, if any)."""
        if profile is None:
            from edgedeploy.costmodel.profile import open_profile, profile_path

            if not profile_path(target).exists():
                return cls(target)
            profile = open_profile(target)
        from edgedeploy.costmodel.segments import load_factors

        model = cls.fit(target, profile.select("fit") + profile.select("refine"),
                        source=f"profile:{profile.digest()[:16]}")
        if profile.path is not None:
            model.segment_factors = load_factors(Path(profile.path))
        return model

    def for_model(self, sha256: str | None) -> CostModel:
        """This model with the segment factors a profile measured on the model file of digest
        ``sha256`` (run whole for them, ``costmodel.segments``) in place of the board's."""
        import copy

        from edgedeploy.costmodel.segments import for_model

        factors = for_model(self.segment_factors, sha256)
        if factors is self.segment_factors:
            return self
        out = copy.copy(self)
        out.segment_factors = factors
        return out

    def segment_factor(self, engine: str, config: CoreConfig) -> float:
        """Multiplier for per-layer predictions of ``engine`` run whole (a CPU segment engine
        never measured here takes onnxruntime's: both fuse inside a segment)."""
        from edgedeploy.costmodel.segments import factor

        if engine in CPU_ENGINE_FAMILIES and engine not in self.segment_factors:
            engine = CPU_ENGINE_FAMILIES[0]
        return factor(self.segment_factors, engine, config)

    def frame_ms(self) -> float:
        """A stage's own cost a frame around its layers, as a profile measured it on this
        model (``segments.FRAME``; for :meth:`for_model`'s model), else 0."""
        from edgedeploy.costmodel.segments import FRAME

        return max((float(v) for v in (self.segment_factors.get(FRAME) or {}).values()),
                   default=0.0)

    def timed_ms(self, layer: str, config: CoreConfig) -> float | None:
        """Layer ``layer``'s milliseconds alone in onnxruntime on ``config``, where a profile
        for its model timed it (an opaque layer: ``costmodel.segments``), else None."""
        from edgedeploy.costmodel.segments import LAYERS

        ms = (self.segment_factors.get(LAYERS) or {}).get(layer, {}).get(config.key)
        return None if ms is None else float(ms)

    def prices(self, precision: str) -> bool:
        """Whether this model knows what ``precision`` costs here: float always; int8 once the
        profile's calibration ran quantized models whole on this board."""
        return precision != INT8 or bool(self.segment_factors.get(INT8))

    def half_factor(self, config: CoreConfig) -> float:
        """Multiplier for a LiteRT layer's float prediction where it computes fp16 on
        ``config``: the measured fp16 / fp32 time of the model whole (a profile for a TFLite
        model times it both ways), else :data:`HALF_PRIOR`."""
        from edgedeploy.costmodel.segments import factor

        return factor(self.segment_factors, FP16, config) if self.segment_factors.get(FP16) \
            else HALF_PRIOR

    def precision_factor(self, precision: str, config: CoreConfig) -> float:
        """Multiplier for a float prediction of a layer computed in ``precision``: for int8 the
        measured int8 / float time of whole calibration models (1 where not :meth:`prices`)."""
        from edgedeploy.costmodel.segments import factor

        if precision != INT8 or not self.prices(INT8):
            return 1.0
        return factor(self.segment_factors, INT8, config)

    @classmethod
    def fit(cls, target: Target, samples: Sequence[Sample], source: str = "samples") -> CostModel:
        """Calibrate on ``samples`` of this target (prior only when there are too few)."""
        model = cls(target, source="prior")
        rows = model._sample_rows(samples)
        if rows is None or len(rows.x) < MIN_FIT_SAMPLES:
            return model
        model.correction = fit_correction(rows.x, rows.y, rows.groups,
                                          weights=_noise_weights(rows.spread), pooled=True)
        # clipped: a preempted measurement must not drag its neighbourhood along
        resid = np.clip(rows.y - model.correction.predict_log(rows.x), -0.5, 0.5)
        model.neighbours = NeighbourResidual(rows.coords, rows.nkeys, resid)
        model.same_gemm_scale = _fit_same_gemm(rows)
        model.log_span = _log_span(rows)
        model.fit_kinds = frozenset(int(k) for k in np.unique(_kinds(rows.dm)))
        model.source = source
        return model

    def transferred(self, target: Target, samples: Sequence[Sample]) -> CostModel:
        """This model (fitted on another board) fine-tuned with a few ``samples`` of ``target``."""
        model = CostModel(target, source=f"transfer:{self.source}+{len(samples)}")
        # what the correction was learnt on carries over; how far it reached does not (the
        # new board may be slower or faster everywhere)
        model.fit_kinds = self.fit_kinds
        base = self.correction or Correction(np.zeros(0), 0.0, np.zeros(0), np.ones(0),
                                             np.zeros(0, int))
        rows = model._sample_rows(samples)
        if rows is None:
            model.correction = base
            return model
        model.correction = fine_tune(base, rows.x, rows.y, weights=_noise_weights(rows.spread))
        return model

    def _sample_rows(self, samples: Sequence[Sample]) -> _SampleRows | None:
        usable = [s for s in samples if s.config in self._cfg_index and s.ms > 0]
        if not usable:
            return None
        dm = descriptor_matrix([s.descriptor for s in usable])
        keys = np.array([primitive_key(s.primitive) for s in usable])
        cm = self._cm[[self._cfg_index[s.config] for s in usable]]
        base = prior_mod.prior_ms(dm, keys, cm)
        ms = np.array([s.ms for s in usable])
        ids: dict[str, int] = {}
        groups = np.array([ids.setdefault(json.dumps(s.descriptor.to_dict(), sort_keys=True),
                                          len(ids)) for s in usable])
        cfg_rows = np.array([self._cfg_index[s.config] for s in usable])
        return _SampleRows(feature_matrix(dm, keys, cm, base), np.log(ms / base), groups,
                           neighbour_coords(dm), keys * 1000 + cfg_rows, dm, keys, cfg_rows,
                           base, ms, np.array([s.spread for s in usable]))

    # ---- prediction -----------------------------------------------------------------------
    def _predict_rows(self, dm: np.ndarray, keys: np.ndarray, cm: np.ndarray,
                      cfg_rows: np.ndarray) -> np.ndarray:
        base = prior_mod.prior_ms(dm, keys, cm)
        if self.correction is None or not len(base):
            return base
        out = self._corrected(dm, keys, cm, cfg_rows, base)
        if self.same_gemm_scale:
            # a primitive that runs another's GEMM plus passes: that one's time plus the passes
            ref = prior_mod.same_gemm_keys(dm, keys)
            rows = np.flatnonzero((ref >= 0) & np.isfinite(base))
            scale = np.array([self.same_gemm_scale.get(int(g), np.nan)
                              for g in keys[rows] * 1000 + cfg_rows[rows]])
            rows, scale = rows[np.isfinite(scale)], scale[np.isfinite(scale)]
            if len(rows):
                ref_base = prior_mod.prior_ms(dm[rows], ref[rows], cm[rows])
                ref_ms = self._corrected(dm[rows], ref[rows], cm[rows], cfg_rows[rows], ref_base)
                out[rows] = ref_ms + np.maximum(base[rows] - ref_base, 0.0) * scale
        return out

    def _corrected(self, dm: np.ndarray, keys: np.ndarray, cm: np.ndarray,
                   cfg_rows: np.ndarray, base: np.ndarray) -> np.ndarray:
        """The prior's ``base`` times the calibration's correction (and the neighbours')."""
        assert self.correction is not None
        finite = np.isfinite(base)
        out = base.copy()
        if finite.any():
            x = feature_matrix(dm[finite], keys[finite], cm[finite], base[finite])
            log_corr = self.correction.predict_log(x)
            if self.neighbours is not None:
                log_corr = log_corr + self.neighbours.predict_log(
                    neighbour_coords(dm[finite]), keys[finite] * 1000 + cfg_rows[finite])
            lo, hi = self._span(keys[finite])
            if self.fit_kinds:
                seen = np.isin(_kinds(dm[finite]), list(self.fit_kinds))
                log_corr = np.where(seen, log_corr, 0.0)
            out[finite] = base[finite] * np.exp(np.clip(log_corr, lo, hi))
        return out

    def _span(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's primitive's ``log_span`` (every sample's where it has none). The
        correction is linear in the features, so a layer unlike every sample is extrapolated:
        a quick profile of convolutions once corrected AlexNet's fully connected layers 17x in
        onnxruntime and 0.55x natively, where the prior was within 30 % of both, and its plan
        read 212 fps that measured 81. So a layer of a kind no sample was keeps the prior, and
        none is corrected by more than its primitive's samples were."""
        default = self.log_span.get(ANY_KEY, (-5.0, 5.0))
        uniq, at = np.unique(keys, return_inverse=True)  # a lookup per primitive, not per row
        spans = np.array([self.log_span.get(int(k), default) for k in uniq]).reshape(-1, 2)[at]
        return spans[:, 0], spans[:, 1]

    def predict(self, descriptors: Sequence[ir.Descriptor], primitive_names: Sequence[str],
                configs: Sequence[CoreConfig]) -> np.ndarray:
        """Milliseconds of each aligned row (descriptor i with primitive i on config i)."""
        if not (len(descriptors) == len(primitive_names) == len(configs)):
            raise ValueError("predict: descriptors, primitive_names and configs differ in length")
        dm = descriptor_matrix(descriptors)
        keys = np.array([primitive_key(p) for p in primitive_names], dtype=int)
        rows = np.array([self._cfg_index[c] for c in configs], dtype=int)
        ms = self._predict_rows(dm, keys, self._cm[rows], rows)
        opaque = np.array([d.op == ir.OPAQUE and p == NATIVE
                           for d, p in zip(descriptors, primitive_names, strict=False)], dtype=bool)
        return np.where(opaque, np.inf, ms)

    def predict_table(self, graph: ir.Graph | Sequence[ir.Layer],
                      configs: Sequence[CoreConfig] | None = None) -> PredictionTable:
        """Every (layer, candidate primitive, configuration) at once, vectorised."""
        layers = list(graph.layers if isinstance(graph, ir.Graph) else graph)
        configs = list(configs) if configs is not None else list(self.configs)
        cand = [candidates(layer.descriptor) for layer in layers]
        prims = sorted({p for c in cand for p in c})
        pidx = {p: j for j, p in enumerate(prims)}
        li = np.array([i for i, c in enumerate(cand) for _ in c], dtype=int)
        pj = np.array([pidx[p] for c in cand for p in c], dtype=int)
        keys = np.array([primitive_key(p) for c in cand for p in c], dtype=int)
        dm_layers = descriptor_matrix([layer.descriptor for layer in layers])
        ci = np.array([self._cfg_index[c] for c in configs], dtype=int)
        n_rows, n_cfg = len(li), len(ci)
        dm = np.repeat(dm_layers[li], n_cfg, axis=0)
        cm = np.tile(self._cm[ci], (n_rows, 1))
        ms = self._predict_rows(dm, np.repeat(keys, n_cfg), cm, np.tile(ci, n_rows))
        table = np.full((len(layers), len(prims), n_cfg), np.inf)
        table[np.repeat(li, n_cfg), np.repeat(pj, n_cfg), np.tile(np.arange(n_cfg), n_rows)] = ms
        return PredictionTable([layer.name for layer in layers], prims, configs, table)

    def layout_transform_ms(self, tensor_elems: int, config: CoreConfig) -> float:
        """An NCHW <-> NHWC transform of ``tensor_elems`` float32 elements on ``config``."""
        cm = self._cm[[self._cfg_index[config]]]
        return float(prior_mod.layout_ms(np.array([float(tensor_elems)]), cm)[0])

    def transfer_ms(self, nbytes: int, from_config: CoreConfig, to_config: CoreConfig) -> float:
        """Handing a tensor between stages: zero within one configuration; the GPU's copy
        latency and bandwidth when either side is the GPU; the board's inter-cluster
        hand-over (shared-memory queue + wake-up) otherwise."""
        if from_config == to_config:
            return 0.0
        if (from_config.is_gpu or to_config.is_gpu) and self.target.gpu is not None:
            g = self.target.gpu
            return g.transfer_latency_us / 1000.0 + nbytes / (g.transfer_gbps * 1e6)
        ic = self.target.inter_cluster
        return ic.latency_us / 1000.0 + nbytes / (ic.bandwidth_gbps * 1e6)

    def hop_ms(self, nbytes: int, from_cluster: str, to_cluster: str) -> float:
        """Handing a tensor from one stage to the next: across clusters (or to and from the
        GPU) as :meth:`transfer_ms`; within one cluster the stages are still two processes, so
        the ring's hand-over (queue + wake-up) and a copy at half the memory bandwidth, as a
        board twin pays it (it cost nothing, and a split of one cluster's cores looked free)."""
        a, b = CoreConfig(from_cluster, 1), CoreConfig(to_cluster, 1)
        if a != b or a.is_gpu:
            return self.transfer_ms(nbytes, a, b)
        return ring_hop_ms(self.target, nbytes)

    def digest(self) -> str:
        """Identity of this model (prior version + correction) for plan lockfile hashes."""
        identity = {"version": prior_mod.PRIOR_VERSION, "source": self.source,
                    "correction": None if self.correction is None
                    else self.correction.to_dict(),
                    "neighbours": None if self.neighbours is None else self.neighbours.to_dict(),
                    "segments": self.segment_factors}
        if self.log_span:
            identity["log_span"] = {str(k): [round(v, 8) for v in span]
                                    for k, span in sorted(self.log_span.items())}
            identity["fit_kinds"] = sorted(self.fit_kinds)
        if self.same_gemm_scale:
            identity["same_gemm"] = {str(k): round(v, 8) for k, v in self.same_gemm_scale.items()}
        blob = json.dumps(identity, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()
