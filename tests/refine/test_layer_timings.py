"""The runner's ``measure`` answer carries per-layer times, and the refiner reads them."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.generator.conftest import small_bundle

from edgedeploy.refine.measure import from_runner_json

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_bundle(tmp_path_factory, "layer_timings")


def test_measure_answers_per_layer_times_for_each_stage(bundle: Path, tmp_path: Path) -> None:
    config = json.loads((bundle / "app/config.json").read_text())
    n = config["plans"]["plan1"]["stages"][0]["stop"]
    variant = {"stages": [{"start": 0, "stop": 3, "cpus": [0]}, {"start": 3, "stop": n}]}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "EDGEDEPLOY_STATE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-I", "main.py", "measure", "--config-json",
                           json.dumps(variant), "--frames", "4", "--json"], cwd=bundle, env=env,
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "in-process" in data["layer_ms_source"]
    m = from_runner_json(data, 0.0)
    assert m.layer_ms is not None and len(m.layer_ms) == 2
    for (a, b), entries in zip([(0, 3), (3, n)], m.layer_ms, strict=True):
        assert entries[0][0] == a and entries[-1][1] == b
        assert all(lo < hi and ms > 0 for lo, hi, ms in entries)
        assert all(e[1] == f[0] for e, f in itertools.pairwise(entries))
