"""Measured stage times back into the target's profile, so the next plan starts better.

Where the device reports per-layer times (``Measurement.layer_ms``: each stage alone, in-process,
one step per layer or per onnxruntime segment) they are the samples, as measured. Otherwise the
device measured whole stages while the cost model predicts layers: each measured stage is spread
over its layers in proportion to the model's own per-layer predictions (the stage's
measured/predicted ratio applied to every layer of it), and stored as ``tag="refine"`` samples --
the tag ``CostModel.for_target`` fits on beside ``fit``. Hand-over costs are taken out first
(they are not a layer's). A twin's samples go to the twin's own profile (its fingerprint is
``sim-<board>-v1``), never to the real board's.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgedeploy.refine.candidate import Candidate
from edgedeploy.refine.measure import Measurement


def stage_samples(problem, graph, cand: Candidate, meas: Measurement,
                  predict_layers) -> list:
    """``costmodel.Sample`` objects for every layer of every measured stage: from the
    per-layer timings where the device reported them, else the stage spread over its layers."""
    from edgedeploy.costmodel import CoreConfig, Sample

    if len(meas.stage_ms) != len(cand.stages):
        return []
    per_layer = meas.layer_ms if meas.layer_ms and len(meas.layer_ms) == len(cand.stages) \
        else [None] * len(cand.stages)
    out = []
    for s, measured, entries in zip(cand.stages, meas.stage_ms, per_layer, strict=True):
        layer_ms, hop = predict_layers(cand, s)
        ms_of = _from_steps(s, layer_ms, entries) if entries else None
        if ms_of is None:
            pred = sum(layer_ms)
            if pred <= 0 or measured <= hop:
                continue
            ratio = (measured - hop) / pred
            ms_of = {i: ms * ratio for i, ms in zip(range(s.start, s.stop), layer_ms,
                                                    strict=True)}
        for i, ms in ms_of.items():
            if 0 < ms < float("inf"):
                out.append(Sample(graph.layers[i].descriptor, cand.choices[i],
                                  CoreConfig(s.cluster, s.cores), ms, reps=1,
                                  spread=0.0, tag="refine"))
    return out


def _from_steps(s, layer_ms: Sequence[float], entries) -> dict[int, float] | None:
    """Layer index -> measured ms from per-step times; a step over several layers (an
    onnxruntime segment) is spread in proportion to the model's predictions."""
    out: dict[int, float] = {}
    for a, b, ms in entries:
        if not s.start <= a < b <= s.stop:
            return None
        pred = [layer_ms[i - s.start] for i in range(a, b)]
        tot = sum(pred)
        for i, p in zip(range(a, b), pred, strict=True):
            out[i] = ms * (p / tot if 0 < tot < float("inf") else 1.0 / (b - a))
    return out


def feed_profile(target, samples: Sequence) -> dict[str, object]:
    """Append samples to the target's stored profile (atomic save); what was written."""
    from edgedeploy.costmodel import open_profile

    prof = open_profile(target)
    before = len(prof.samples)
    prof.append(list(samples))
    path = prof.save()
    return {"profile": str(path), "samples_added": len(prof.samples) - before,
            "samples_total": len(prof.samples)}
