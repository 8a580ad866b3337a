"""Profiling a twin like a real board: deterministic, labelled simulated, budget on the simulated
clock, into the twin's own profile, and it calibrates the cost model towards the twin."""

from __future__ import annotations

import json

import numpy as np

from edgedeploy.costmodel import CostModel
from edgedeploy.costmodel.shapes import model_shapes
from edgedeploy.twins import twin_target
from edgedeploy.twins.profile import TwinMeasure, profile_twin, twin_shapes


def _key(samples):
    return [(json.dumps(s.descriptor.to_dict(), sort_keys=True), s.primitive, s.config.key,
             s.ms) for s in samples]


def test_twin_profiling_is_deterministic_for_a_seed():
    tgt = twin_target("rpi4")
    a = profile_twin(tgt, 5.0, shapes=twin_shapes("space"))
    b = profile_twin(tgt, 5.0, shapes=twin_shapes("space"))
    assert a and _key(a) == _key(b)
    c = profile_twin(tgt, 5.0, seed=1, shapes=twin_shapes("space"))
    assert _key(c) != _key(a)


def test_budget_counts_simulated_device_seconds():
    tgt = twin_target("jetson-tx2")
    measure = TwinMeasure(tgt)
    from edgedeploy.costmodel.profiler import run_profile

    samples = run_profile(tgt, twin_shapes("space"), 3.0, measure, gpu=True,
                          clock=measure.clock)
    assert 3.0 <= measure.clock() < 3.0 + 1.0  # stops at the simulated budget, not wall time
    assert any(s.config.is_gpu for s in samples)  # a twin profiles its GPU (ort) too
    assert all(s.primitive == "onnxruntime" for s in samples if s.config.is_gpu)


def test_cli_profiles_a_twin_into_its_own_simulated_profile(tmp_path, monkeypatch, capsys):
    from edgedeploy.cli.main import main
    from edgedeploy.costmodel import open_profile

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rc = main(["profile", "--target", "sim:rpi4", "--budget-s", "4", "--shapes", "space",
               "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["simulated"] is True and data["fingerprint"] == "sim-rpi4-v1"
    assert data["budget_clock"] == "simulated device seconds" and data["new_samples"] > 10
    assert len(open_profile(twin_target("rpi4")).select("fit")) == data["new_samples"]


def test_a_profile_of_the_models_shapes_brings_the_model_closer_to_the_twin(small_graph):
    """Calibrated on a short simulated profile, the cost model's error on the model's own
    layers (vs the twin's hidden truth) shrinks -- the twin's truth stays different from it."""
    from edgedeploy.twins import GroundTruth

    tgt = twin_target("hikey970")
    samples = profile_twin(tgt, 30.0, shapes=model_shapes(small_graph))
    cal, prior = CostModel.fit(tgt, samples), CostModel(tgt)
    truth = GroundTruth(tgt, small_graph, 0)
    errs = {"prior": [], "cal": []}
    for i, layer in enumerate(small_graph.layers):
        if layer.op != "conv2d":
            continue
        for prim in truth.options[i]:
            t = truth.layer_time(i, prim, "big", 2)
            for name, m in (("prior", prior), ("cal", cal)):
                from edgedeploy.costmodel import CoreConfig

                p = m.predict([layer.descriptor], [prim], [CoreConfig("big", 2)])[0]
                errs[name].append(abs(np.log(p / t)))
    assert np.median(errs["cal"]) < 0.5 * np.median(errs["prior"])
    assert np.median(errs["cal"]) > 0.0
