"""A stateful model (resource variables: its state is the stream of frames it has seen) is never
replicated -- by the planner, its baselines, its Pareto set or the bench's baselines -- since
each replica would keep a state of every other frame."""

from __future__ import annotations

from pathlib import Path

from edgedeploy import zoo
from edgedeploy.planner.api import model_graph, plan
from edgedeploy.schemas import load_manifest

MANIFEST = """name: sq
model:
  path: sq.onnx
targets:
  local: {board: local}
  pi: {board: rpi4, transport: sim}
measure: {enabled: false}
"""


def _replicas(doc: dict) -> set[int]:
    stages = [*doc["stages"], *(s for b in doc["baselines"].values() for s in b["stages"] or []),
              *(s for p in doc["pareto"] for s in p["stages"])]
    return {s["replicas"] for s in stages}


def test_a_stateful_model_is_planned_without_replicas(tmp_path: Path) -> None:
    zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    m = load_manifest(tmp_path / "m.yaml")
    graph = model_graph(m)
    for alias in ("local", "pi"):
        free = plan(tmp_path / "m.yaml", alias, write=False, manifest=m, graph=graph)[0].doc
        assert max(_replicas(free)) > 1  # the same model without state is replicated
    graph.source["stateful"] = True
    for alias in ("local", "pi"):
        doc = plan(tmp_path / "m.yaml", alias, write=False, manifest=m, graph=graph)[0].doc
        assert _replicas(doc) == {1}, alias


def test_the_bench_runs_a_stateful_model_only_as_a_user_would(tmp_path: Path) -> None:
    from edgedeploy.benchmarks.compare import _baselines
    from edgedeploy.importers import load_model

    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    graph = load_model(path)
    systems = _baselines(graph, path)
    try:
        assert [s.name for s in systems] == ["ort_default", "ort_replicas"]
    finally:
        for s in systems:
            s.close()
    graph.source["stateful"] = True
    systems = _baselines(graph, path)
    try:
        assert [s.name for s in systems] == ["ort_default"]
    finally:
        for s in systems:
            s.close()
