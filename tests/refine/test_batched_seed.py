"""A measured plan that micro-batches is refined from itself as deployed: its batch survives into
the seed, the runner variant and the cache key; a batched stage with a layer outside
onnxruntime is invalid."""

from __future__ import annotations

from edgedeploy.refine.candidate import Space, from_stages
from edgedeploy.runtime.vocab import ONNXRUNTIME


def test_the_seed_keeps_its_batch_and_is_measured_batched():
    names = [f"l{i}" for i in range(4)]
    space = Space(names, [(ONNXRUNTIME, "native")] * 4, {"cpu": (0, 1)})
    doc = [{"start": 0, "stop": 4, "cluster": "cpu", "cores": 1, "replicas": 2, "batch": 4}]
    batched = from_stages(space, doc, [ONNXRUNTIME] * 4)
    plain = from_stages(space, [{**doc[0], "batch": 1}], [ONNXRUNTIME] * 4)
    assert batched.stages[0].batch == 4 and space.is_valid(batched)
    assert batched.key != plain.key  # measured and cached apart
    assert space.variant(batched)["stages"][0]["batch"] == 4
    assert "batch" not in space.variant(plain)["stages"][0]
    native = from_stages(space, doc, [ONNXRUNTIME, "native", ONNXRUNTIME, ONNXRUNTIME])
    assert any("batches 4 frames" in v for v in space.violations(native))


def test_change_batch_only_touches_stages_wholly_in_onnxruntime_on_a_cpu():
    import numpy as np

    from edgedeploy.refine.candidate import GPU, Candidate, StageConf
    from edgedeploy.refine.operators import change_batch

    names = [f"l{i}" for i in range(4)]
    space = Space(names, [(ONNXRUNTIME, "native")] * 4, {"cpu": (0, 1), GPU: ()},
                  batches=(1, 2, 4))
    rng = np.random.default_rng(0)
    mixed = Candidate((StageConf(0, 2, "cpu", 1), StageConf(2, 4, "cpu", 1)),
                      (ONNXRUNTIME, "native", ONNXRUNTIME, ONNXRUNTIME))
    for _ in range(20):  # only the second stage may batch
        out = change_batch(mixed, space, rng)
        assert out is not None and out.stages[0].batch == 1 and out.stages[1].batch in (2, 4)
        assert space.is_valid(out)
    on_gpu = Candidate((StageConf(0, 4, GPU, 1),), (ONNXRUNTIME,) * 4)
    assert change_batch(on_gpu, space, rng) is None
    assert change_batch(mixed, Space(names, space.options, space.clusters), rng) is None
