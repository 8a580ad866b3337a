"""``main.py trials``, the board's side of measure-to-decide, spoken to as the host speaks to
it: contenders started once, each window timed on request (whole periods of the contender's
completions, three at least), in any order and as often as asked;
one that cannot start (a malformed plan, memory the board cannot spare for an optional one) says
why without ending the session; end of input closes everything and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.generator.conftest import small_bundle

from edgedeploy.runtime.metrics import timed_frames

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_bundle(tmp_path_factory, "trials")


def _session(bundle: Path, requests: list[dict], tmp: Path) -> list[dict]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
           "EDGEDEPLOY_STATE_DIR": str(tmp)}
    proc = subprocess.run([sys.executable, "-I", "main.py", "trials"], cwd=bundle, env=env,
                          input="".join(json.dumps(r) + "\n" for r in requests),
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_contenders_start_once_and_are_timed_on_request(bundle: Path, tmp_path: Path) -> None:
    config = json.loads((bundle / "app" / "config.json").read_text())
    plans = {"two": config["plans"]["plan0"], "one": config["plans"]["plan1"],
             "broken": {"stages": [{"start": 0}]}, "greedy": config["plans"]["plan1"]}
    answers = _session(bundle, [
        {"plans": plans, "optional": ["greedy"], "start_bytes": {"greedy": 2.0**60}},
        {"measure": "two", "frames": 8, "warmup": 1},
        {"measure": "one", "frames": 8, "warmup": 1, "latency_samples": 3},
        {"measure": "two", "frames": 16, "warmup": 0},
        {"measure": "one", "frames": 5, "warmup": 1},
        {"measure": "broken", "frames": 4},
        {"measure": "nobody", "frames": 4},
    ], tmp_path)
    opened = answers[0]["opened"]
    assert opened["two"] is None and opened["one"] is None
    assert "malformed" in opened["broken"]
    assert opened["greedy"].startswith("MemoryError") and "GiB to spare" in opened["greedy"]
    two, one, again, odd, broken, nobody = answers[1:]
    assert odd["frames"] == 6  # two replicas: whole periods of two, three at least
    assert [two["plan"], one["plan"], again["plan"]] == ["two", "one", "two"]
    assert [two["frames"], one["frames"], again["frames"]] == [8, 8, 16]
    assert all(a["throughput_fps"] > 0 and a["wall_s"] > 0 for a in (two, one, again))
    assert one["latency_ms_p50"] > 0 and two["latency_ms_p50"] is None  # where samples asked
    assert "power_w" in two  # the board's meter, null and saying why here
    assert "malformed" in broken["error"] and "no contender" in nobody["error"]


def test_an_empty_session_starts_nothing_and_exits_cleanly(bundle: Path, tmp_path: Path) -> None:
    assert _session(bundle, [], tmp_path) == []


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 64))
def test_timed_runs_hold_whole_periods_three_at_least(frames: int, period: int) -> None:
    n = timed_frames(frames, period)
    assert n >= frames and n % period == 0
    assert n >= 3 * period if period > 1 else n == frames
    assert n - frames < period or n == 3 * period  # no more than needed
