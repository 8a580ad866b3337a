"""`profile --target ALIAS` for a board reached over SSH: the runtime's probe measures on the
board (a real sshd on 127.0.0.1, the target's own interpreter), the samples, segment factors and
replica speed-ups land in that board's profile -- never this host's -- and `plan` uses it.
Every failure reaches the user as its documented exit code with a hint, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgedeploy import api, zoo
from edgedeploy.boards.catalog import load_target
from edgedeploy.cli.main import main
from edgedeploy.costmodel import profile as prof_mod
from edgedeploy.costmodel import shapes as shapes_mod
from edgedeploy.costmodel.configs import CoreConfig, core_configs
from edgedeploy.costmodel.profiling import shape_sample
from edgedeploy.costmodel.segments import (
    BATCH,
    REPLICA_BATCH,
    REPLICAS,
    load_factors,
    stored,
    whole_ms,
)
from edgedeploy.runtime.model_timing import short_replica_windows
from edgedeploy.runtime.stages import BATCH_SIZES
from edgedeploy.testing.sshd import free_port

pytestmark = pytest.mark.ssh

BUDGET_S = 3.0
#: One tiny calibration model keeps the whole-model runs to seconds.
CALIBRATION = [("squeezenet1_1", 32)]


def _board_yaml(path: Path, extra_cpus: int = 0) -> Path:
    """This machine's descriptor as a board of its own (another name and description, so
    another fingerprint: the loopback board is not "this host" to the profile store)."""
    board = load_target("local").model_dump(mode="json")
    board.pop("fingerprint", None)
    board.update(name=path.stem, description=f"{path.stem}: a board reached over ssh")
    if extra_cpus:
        cluster = board["clusters"][0]
        cluster["cpu_ids"] = list(range(max(os.sched_getaffinity(0)) + 1 + extra_cpus))
    path.write_text(json.dumps(board))  # JSON is YAML
    return path


def _target(sshd, name: str, board: str | None, python: str, tmp: Path,
            port: int | None = None) -> str:
    lines = [f"  {name}:", *([f"    board: {board}"] if board else []),
             "    host: 127.0.0.1", f"    port: {port or sshd.port}", f"    user: {sshd.user}",
             f"    identity_file: {sshd.identity_file}", f"    path: {tmp / 'board'}",
             f"    python: {python}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def home(sshd, tmp_path, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    """~/.ssh/known_hosts holds exactly the test server's key (strict host-key checking)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    return tmp_path


def _manifest(tmp: Path, targets: str) -> Path:
    zoo.export("squeezenet1_1", tmp / "sq.onnx", size=32)
    path = tmp / "edgedeploy.yaml"
    path.write_text(f"name: sq\nmodel: sq.onnx\ntargets:\n{targets}")
    return path


def test_a_board_over_ssh_is_profiled_on_the_board_into_its_own_profile_and_plan_uses_it(
        sshd, home, tmp_path) -> None:
    board = _board_yaml(tmp_path / "loopback.yaml")
    manifest = _manifest(tmp_path, _target(sshd, "edge", board.name, sys.executable, tmp_path))
    local_profile = prof_mod.profile_path(load_target("local"))

    ticks: list[tuple[float, float, int]] = []
    infos: list[str] = []
    answer = api.profile("edge", manifest=manifest, budget_s=BUDGET_S, shapes="space",
                         calibration=CALIBRATION, info=infos.append,
                         progress=lambda el, b, n, eta, label: ticks.append(
                             (time.monotonic(), el, n)))

    # measured there: by the probe of the runtime package uploaded under the target's path,
    # run by the target's interpreter
    assert answer["alias"] == "edge" and "127.0.0.1" in answer["host"]
    assert answer["probe"].startswith(f"{tmp_path / 'board'}/probe/runtime-")
    assert answer["probe"].endswith(".zip/edgedeploy/runtime/probe.py")
    assert answer["python"] == sys.executable
    # the board's profile, keyed by its descriptor -- this host's profile untouched
    target = load_target(str(board))
    assert answer["fingerprint"] == prof_mod.target_fingerprint(target)
    assert Path(answer["profile"]) == prof_mod.profile_path(target) != local_profile
    assert not local_profile.exists()
    assert sorted(p.name for p in Path(answer["profile"]).parent.iterdir()) == sorted(
        [f"{answer['fingerprint']}.json", f"{answer['fingerprint']}.segments.json"])
    profile = prof_mod.read_profile(answer["profile"], answer["fingerprint"])
    assert profile.target_name == "loopback" and profile.descriptor["name"] == "loopback"
    assert len(profile.samples) == answer["samples"] == answer["new_samples"] >= 12
    requested = {shapes_mod.shape_key(d) for d in shape_sample("space")}
    configs = set(core_configs(target))
    assert all(shapes_mod.shape_key(s.descriptor) in requested and s.config in configs
               and s.ms > 0 for s in profile.samples)
    assert profile.runtime["onnxruntime"] and profile.runtime["numpy"]
    # the budget was spent on the board, and its progress streamed while it was
    assert [n for _, _, n in ticks] == list(range(1, len(profile.samples) + 1))
    # a task starts only while the budget lasts, so only the last one may end after it
    ends = [el for _, el, _ in ticks]
    assert ends == sorted(ends) and ends[-2] <= BUDGET_S, ends
    assert ticks[-1][0] - ticks[0][0] > 1.0, "progress arrived only at the end"
    # whole-model runs on the board: segment factors per engine and replica speed-ups
    factors = load_factors(Path(answer["profile"]))
    assert factors == answer["segment_factors"]
    assert set(factors["onnxruntime"]) == set(factors["native"]) == {c.key for c in configs}
    # and its int8 variant beside it: the board's integer kernels price int8 plans
    assert set(factors["int8"]) == {c.key for c in configs}
    assert all(v > 0 for v in factors["int8"].values())
    multi = [c for c in configs if c.cores > 1]
    assert all(factors[REPLICAS][c.cluster][str(c.cores)] > 0 for c in multi)
    assert any(line.startswith("segments: squeezenet1_1") for line in infos)

    # plan for that target now prices with the board's profile (it was the prior before)
    doc = api.plan(manifest, "edge", measure=False, write=False)[0].doc
    assert doc["inputs"]["costmodel"]["source"] == f"profile:{profile.digest()[:16]}"

    # the board's profile travels like any other: export through the same alias
    exported = tmp_path / "board-profile.json"
    api.profile("edge", manifest=manifest, export=exported)
    assert prof_mod.read_profile(exported).digest() == profile.digest()

    # again: the runtime already on the board is reused, samples are appended
    again = api.profile("edge", manifest=manifest, budget_s=1.0, shapes="space",
                        calibration=[])
    assert again["samples"] == answer["samples"] + again["new_samples"]
    assert again["segment_factors"] == factors  # no calibration asked: kept as they were
    assert len(list((tmp_path / "board" / "probe").glob("runtime-*"))) == 1
    assert not list((tmp_path / "board" / "probe" / "requests").iterdir())
    assert not local_profile.exists()


def _python_without_numpy() -> str | None:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= "
                                "(3, 10); import numpy"], capture_output=True, text=True)
        if "No module named 'numpy'" in probe.stderr:
            return candidate
    return None


def _faulty_python(tmp: Path) -> str:
    """The board's interpreter with a fault injected into the probe's layer timer: how a
    crash on the board (a bug, a broken BLAS) reaches the user."""
    code = ("import runpy, sys; import edgedeploy.runtime.layer_timing as t\n"
            "def boom(*a): raise RuntimeError('injected fault in the layer timer')\n"
            "t.LayerTimer.__call__ = boom\n"
            "sys.argv = ['probe', *sys.argv[1:]]\n"
            "runpy.run_module('edgedeploy.runtime.probe', run_name='__main__')\n")
    script = tmp / "faultypython"
    script.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} -c \"{code}\" \"$@\"\n")
    script.chmod(0o755)
    return str(script)


CASES = {
    "unreachable": (4, ["cannot connect"]),
    "nonumpy": (2, ["lacks numpy", "pip install numpy", "targets.nonumpy.python"]),
    "faulty": (1, ["probe failed on the board", "injected fault in the layer timer"]),
    "wide": (2, ["are not available on this board", "board descriptor does not match"]),
    "noboard": (2, ["names no board descriptor", "targets.noboard.board"]),
}


@pytest.mark.parametrize("alias", sorted(CASES))
def test_failures_reach_the_user_as_their_exit_code_with_a_hint(sshd, home, tmp_path, capsys,
                                                                alias: str) -> None:
    board = _board_yaml(tmp_path / "loopback.yaml").name
    python = {"nonumpy": _python_without_numpy(),
              "faulty": _faulty_python(tmp_path) if alias == "faulty" else None}.get(alias)
    if alias == "nonumpy" and python is None:
        pytest.skip("no Python >= 3.10 without numpy on this machine")
    targets = _target(sshd, alias, None if alias == "noboard" else board,
                      python or sys.executable, tmp_path,
                      port=free_port() if alias == "unreachable" else None)
    if alias == "wide":
        targets = targets.replace(board, _board_yaml(tmp_path / "wide.yaml", 6).name)
    manifest = _manifest(tmp_path, targets)
    code, needles = CASES[alias]
    capsys.readouterr()
    rc = main(["profile", "-m", str(manifest), "--target", alias, "--budget-s", "1",
               "--shapes", "space"])
    err = capsys.readouterr().err
    assert rc == code, err
    assert all(n in err for n in needles), err
    assert "hint:" in err and "Traceback" not in err
    assert not prof_mod.profile_path(load_target("local")).exists()


def test_a_profile_over_ssh_for_a_model_measures_its_shapes_first_and_runs_it_on_the_board(
        sshd, home, tmp_path) -> None:
    """``profile --target ALIAS --model M``: the model's conv shapes go first in the task list
    the board spends its budget on, and the model travels with the calibration models and is
    run whole there (onnxruntime only), its opaque layers timed alone there too, its own
    factors kept under its digest."""
    import onnx

    from edgedeploy.costmodel.segments import LAYERS, MODELS
    from edgedeploy.importers.onnx import import_onnx
    from edgedeploy.runtime import ir
    from edgedeploy.testing.onnx_models import unknown_op_model

    board = _board_yaml(tmp_path / "loopback.yaml")
    manifest = _manifest(tmp_path, _target(sshd, "edge", board.name, sys.executable, tmp_path))
    model = tmp_path / "unk.onnx"  # a conv, then LRN and Einsum: operators the IR cannot run
    onnx.save(unknown_op_model(), model)
    infos: list[str] = []
    answer = api.profile("edge", manifest=manifest, budget_s=1.0, shapes="space",
                         calibration=CALIBRATION, info=infos.append, model=model)
    graph = import_onnx(model)
    mine = [shapes_mod.shape_key(d) for d in shapes_mod.model_shapes(graph)
            if d.op == ir.CONV2D]
    profile = prof_mod.read_profile(answer["profile"], answer["fingerprint"])
    seen = list(dict.fromkeys(shapes_mod.shape_key(s.descriptor) for s in profile.samples))
    n = min(len(seen), len(mine))
    assert n > 0 and seen[:n] == mine[:n]
    assert any(line.startswith("segments: unk on") for line in infos)
    target = load_target(str(board))
    configs = {c.key for c in core_configs(target) if not c.is_gpu}
    own = load_factors(Path(answer["profile"]))[MODELS][graph.source["sha256"]]
    assert set(own["onnxruntime"]) == configs and "native" not in own
    assert all(v > 0 for v in own["onnxruntime"].values())
    opaque = {layer.name for layer in graph.layers if layer.op == ir.OPAQUE}
    assert len(opaque) == 2 and set(own[LAYERS]) == opaque  # timed on the board, not priced
    assert all(set(t) == configs and all(v > 0 for v in t.values())
               for t in own[LAYERS].values())
    if any(c.cores > 1 for c in core_configs(target)):
        assert own[REPLICAS]
    # its frames stay apart, so it was timed batched there; a frame of it is short enough for
    # its replicas' windows to hold more than the frames' floor, so they were timed at every
    # batch, gained on one core or not, against its replicas at one frame
    assert set(own[BATCH]) == configs
    assert all(set(t) == {str(b) for b in BATCH_SIZES} and all(v > 0 for v in t.values())
               for t in own[BATCH].values())
    ones = [r for r in stored(Path(answer["profile"]))[1] if r["model"] == model.stem
            and CoreConfig.parse(r["config"]).cores == 1]
    assert ones and all(short_replica_windows(whole_ms(r), 2) for r in ones)
    clusters = {c.cluster for c in core_configs(target) if c.cores > 1}
    timed = {(cl, b) for cl, t in (own.get(REPLICA_BATCH) or {}).items() for b in t}
    assert timed == {(cl, str(b)) for cl in clusters for b in BATCH_SIZES}
    assert all(0.05 < g < 20.0 for t in (own.get(REPLICA_BATCH) or {}).values()
               for g in t.values())
    # its stage's own cost a frame, streamed on the board on its most cores where a call is
    # short, as this host measures it for a model planned here
    from edgedeploy.runtime.model_timing import FRAME, FRAME_MAX_CALL_MS

    most = max((c for c in core_configs(target) if not c.is_gpu), key=lambda c: c.cores)
    (run,) = [r for r in stored(Path(answer["profile"]))[1] if r["model"] == model.stem
              and r["config"] == most.key]
    assert (FRAME in own) == (whole_ms(run) < FRAME_MAX_CALL_MS)
    if FRAME in own:
        assert list(own[FRAME]) == [most.key] and own[FRAME][most.key] >= 0
