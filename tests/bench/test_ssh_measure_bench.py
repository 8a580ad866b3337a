"""Measure-to-decide through a board reached over SSH against the same decision made here.

The "board" is this machine behind a real sshd on 127.0.0.1 (loopback; no other address), so
the two decisions time the same contenders on the same cores: one through the host's pinned
pipelines, one through the board's runner (``main.py trials``) driven over SSH. Each model is
planned from an empty cache for ``local`` first (the quick profile included), then for the SSH
alias, which names this host's descriptor and so plans from the same profile and shortlist. The
Winograd trial is off in both (it stays on this host). Writes ``results/ssh_measure.json``:
every contender's rate both ways, the winners, and each plan's wall time (the board's includes
building and uploading the contenders' bundle). Reported, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgedeploy.testing import host

MODELS = (("resnet18", 224), ("mobilenet_v2", 224))
COMMAND = "python -m pytest -q tests/bench/test_ssh_measure_bench.py -p no:cacheprovider -s"
RESULTS = Path(__file__).resolve().parents[2] / "results"


def _project(sshd, folder: Path, name: str, size: int, measure: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A manifest planning ``name`` for this host (``local``) and for it as an SSH board
    (``edge``); the environment a new user's shell has (an empty cache)."""
    from edgedeploy import zoo

    folder.mkdir()
    zoo.export(name, folder / "m.onnx", size=size)
    (folder / "m.yaml").write_text(
        f"name: m\nmodel: m.onnx\nobjective: throughput\nmeasure: {measure}\n"
        "targets:\n  local: {}\n  edge:\n"
        f"    host: 127.0.0.1\n    port: {sshd.port}\n    user: {sshd.user}\n"
        f"    identity_file: {sshd.identity_file}\n    path: {folder / 'board'}\n"
        f"    python: {sys.executable}\n")
    return {**os.environ, "HOME": str(folder.parent), "XDG_CACHE_HOME": str(folder / "cache")}


def _plan(folder: Path, alias: str, env: dict[str, str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgedeploy.cli.main", "plan", "m.yaml", "--target",
                    alias], cwd=folder, env=env, check=True)
    return (json.loads((folder / f"m.{alias}.plan.json").read_text()),
            round(time.perf_counter() - t0, 1))


@pytest.mark.slow
@pytest.mark.ssh
def test_the_board_path_decides_as_the_host_does(sshd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    rows = []
    for name, size in MODELS:
        folder = tmp_path / name
        env = _project(sshd, folder, name, size, "{winograd: false}")
        row = {"model": f"{name} {size}x{size}"}
        for alias in ("local", "edge"):
            lock, wall = _plan(folder, alias, env)
            decision = lock["decision"]
            row[alias] = {"wall_s": wall,
                          "winner": decision["winner"], "measured": decision["measured"],
                          "seconds": decision.get("seconds"),
                          "contenders": {c["name"]: c["measured_fps"]
                                         for c in decision["contenders"]}}
        both = sorted(set(row["local"]["contenders"]) & set(row["edge"]["contenders"]))
        row["board_over_host"] = {c: round(row["edge"]["contenders"][c]
                                           / row["local"]["contenders"][c], 3) for c in both}
        rows.append(row)
        print(f"\n{row['model']}: local {row['local']['winner']} ({row['local']['wall_s']} s), "
              f"over ssh {row['edge']['winner']} ({row['edge']['wall_s']} s); board/host per "
              f"contender: {row['board_over_host']}")
    (RESULTS / "ssh_measure.json").write_text(json.dumps({
        "command": COMMAND,
        "host": f"{host.describe()}; the SSH board is this machine behind sshd on 127.0.0.1",
        "note": "each model from an empty cache: plan --target local (quick profile included), "
                "then plan --target edge from the same profile; Winograd trial off in both",
        "rows": rows, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")},
        indent=1, sort_keys=True) + "\n")
    assert all(r["edge"]["measured"] for r in rows)  # the figures are reported, not asserted


@pytest.mark.slow
@pytest.mark.ssh
def test_the_winograd_trial_on_the_board_as_on_this_host(sshd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """VGG-16 224, the model whose 3x3 layers run faster as Winograd here: its trial made on
    this host and through the board's probe and trials sessions (the same machine), from the
    same profile. Writes ``results/ssh_measure_winograd.json``."""
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    folder = tmp_path / "vgg16"
    env = _project(sshd, folder, "vgg16", 224, "{}")
    row: dict = {"model": "vgg16 224x224"}
    for alias in ("local", "edge"):
        lock, wall = _plan(folder, alias, env)
        trial = lock.get("winograd") or {}
        row[alias] = {"wall_s": wall, "winner": lock["decision"]["winner"],
                      "measured_fps": lock["measured"]["throughput_fps"],
                      "winograd": {k: trial.get(k) for k in (
                          "chosen", "layers", "cores", "as_given_fps", "rewritten_fps",
                          "reason", "layer_gains")}}
        print(f"\nvgg16 --target {alias}: {wall} s, winner {row[alias]['winner']}, "
              f"winograd chosen {trial.get('chosen')} ({len(trial.get('layers') or [])} "
              f"layers), as given {trial.get('as_given_fps')}, rewritten "
              f"{trial.get('rewritten_fps')}")
    (RESULTS / "ssh_measure_winograd.json").write_text(json.dumps({
        "command": COMMAND + " -k winograd",
        "host": f"{host.describe()}; the SSH board is this machine behind sshd on 127.0.0.1",
        "note": "from an empty cache: plan --target local (quick profile included), then "
                "plan --target edge from the same profile; defaults otherwise",
        "row": row, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")},
        indent=1, sort_keys=True) + "\n")
    assert row["edge"]["winograd"]["layer_gains"]  # the figures are reported, not asserted


@pytest.mark.slow
@pytest.mark.ssh
def test_a_board_of_its_own_is_profiled_and_priced_from_the_board(sshd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The SSH alias names a board descriptor of its own (this machine under another name), so
    nothing measured here prices it: `plan` takes the board's quick profile through the probe,
    runs the model whole there (batched, and its replicas batched where one core gained), and
    measures the shortlist there. Each contender's prediction beside its measurement. Writes
    ``results/ssh_plan_prediction.json``."""
    from edgedeploy.boards.catalog import load_target

    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    board = load_target("local").model_dump(mode="json")
    board.pop("fingerprint", None)
    board.update(name="loopback", description="this machine as a board reached over ssh")
    rows = []
    for name, size in (("alexnet", 224), ("squeezenet1_1", 224)):
        folder = tmp_path / name
        env = _project(sshd, folder, name, size, "{winograd: false}")
        (folder / "loopback.yaml").write_text(json.dumps(board))  # JSON is YAML
        manifest = (folder / "m.yaml").read_text().replace(
            "  edge:\n", "  edge:\n    board: loopback.yaml\n")
        (folder / "m.yaml").write_text(manifest)
        lock, wall = _plan(folder, "edge", env)
        decision = lock["decision"]
        contenders = {c["name"]: {"predicted_fps": c["predicted"]["throughput_fps"],
                                  "measured_fps": c["measured_fps"],
                                  "error": round(c["predicted"]["throughput_fps"]
                                                 / c["measured_fps"] - 1.0, 3)}
                      for c in decision["contenders"] if c["measured_fps"]}
        winner = contenders[decision["winner"]]
        rows.append({"model": f"{name} {size}x{size}", "wall_s": wall,
                     "winner": decision["winner"], "winner_error": winner["error"],
                     "contenders": contenders})
        print(f"\n{name}: over ssh, its own board, {wall} s: {decision['winner']} predicted "
              f"{winner['predicted_fps']:.4g} fps, measured {winner['measured_fps']:.4g} "
              f"({winner['error']:+.1%})")
    (RESULTS / "ssh_plan_prediction.json").write_text(json.dumps({
        "command": COMMAND + " -k of_its_own",
        "host": f"{host.describe()}; the SSH board is this machine behind sshd on 127.0.0.1, "
                "under a descriptor of its own (board: loopback.yaml)",
        "note": "each model from an empty cache: plan --target edge profiles the board through "
                "the probe, runs the model whole there and measures the shortlist there; "
                "Winograd trial off; error = predicted / measured - 1",
        "rows": rows, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")},
        indent=1, sort_keys=True) + "\n")
    assert all(r["contenders"] for r in rows)  # the figures are reported, not asserted
