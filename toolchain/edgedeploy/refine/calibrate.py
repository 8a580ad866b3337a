"""Measured stage times back into the target's profile, so the next plan starts better.

The device measures whole stages, the cost model predicts layers. Each measured stage is spread
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
    """``costmodel.Sample`` objects for every layer of every measured stage."""
    from edgedeploy.costmodel import CoreConfig, Sample

    if len(meas.stage_ms) != len(cand.stages):
        return []
    out = []
    for s, measured in zip(cand.stages, meas.stage_ms, strict=True):
        layer_ms, hop = predict_layers(cand, s)
        pred = sum(layer_ms)
        if pred <= 0 or measured <= hop:
            continue
        ratio = (measured - hop) / pred
        for i, ms in zip(range(s.start, s.stop), layer_ms, strict=True):
            if ms > 0 and ms != float("inf"):
                out.append(Sample(graph.layers[i].descriptor, cand.choices[i],
                                  CoreConfig(s.cluster, s.cores), ms * ratio, reps=1,
                                  spread=0.0, tag="refine"))
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
