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
