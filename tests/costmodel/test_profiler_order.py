"""The profiler's task order: a short budget sees many shapes, a long one everything."""

from __future__ import annotations

from collections import Counter

from edgedeploy.costmodel import evaluate as ev
from edgedeploy.costmodel.model import CostModel
from edgedeploy.costmodel.profile import open_profile
from edgedeploy.costmodel.profiler import FIRST_PASS_CONFIGS, measurable, run_profile, tasks_for
from edgedeploy.costmodel.shapes import designed_sample
from edgedeploy.twins import twin_target
from edgedeploy.twins.profile import TwinMeasure


def test_every_task_once_each_shape_first_on_two_configurations_covering_all():
    target = twin_target("jetson-tx2")  # six CPU configurations
    shapes = designed_sample()[:12]
    tasks = list(tasks_for(target, shapes))
    cfgs = [c for c in CostModel(target).configs if not c.is_gpu]
    want = {(d, p, c) for d in shapes for p in measurable(d) for c in cfgs}
    assert len(tasks) == len(set(tasks)) and set(tasks) == want
    # the first pass: each shape on FIRST_PASS_CONFIGS configurations, before any second-pass
    # task, and every configuration reached within it
    seen: dict[object, set[object]] = {}
    first = []
    for d, _, c in tasks:
        if d in seen and c not in seen[d] and len(seen[d]) >= FIRST_PASS_CONFIGS:
            break
        seen.setdefault(d, set()).add(c)
        first.append((d, c))
    assert set(seen) == set(shapes)
    assert all(len(v) == FIRST_PASS_CONFIGS for v in seen.values())
    assert {c for _, c in first} == set(cfgs)
    assert Counter(c for v in seen.values() for c in v).most_common()[-1][1] >= 2


def test_a_short_profile_of_a_board_twin_sees_many_shapes_and_ranks_better_than_the_prior():
    target = twin_target("rpi4")
    twin = TwinMeasure(target)
    fit = run_profile(target, designed_sample(), 60.0, twin, "fit", clock=twin.clock)
    assert len({s.descriptor for s in fit}) >= 15

    profile = open_profile(target)
    ev.measure_heldout(target, profile, 2000.0, twin, clock=twin.clock)
    layers = ev.heldout_layers(profile.select("heldout"))
    fitted = ev.metrics(ev._groups(CostModel.fit(target, fit), layers))
    prior = ev.metrics(ev._groups(CostModel(target), layers))
    assert fitted["mape"] < prior["mape"] and fitted["kendall_tau"] > prior["kendall_tau"] + 0.1
