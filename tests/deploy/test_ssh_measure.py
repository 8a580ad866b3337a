"""`plan` measures to decide on a board reached over SSH (a real sshd on 127.0.0.1): the
contenders' bundle is uploaded beside the releases, the board's runner holds them open and times
them, the lockfile holds the board's figures, and nothing is left behind. A board that serves a
release, or cannot be reached, is planned from the model alone (the lockfile as `--no-measure`
writes it), saying why on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.benchmarks.test_decide import raced

from edgedeploy import zoo
from edgedeploy.cli.main import main
from edgedeploy.schemas.plan import Contender
from edgedeploy.testing.sshd import free_port

pytestmark = pytest.mark.ssh


def _manifest(tmp_path: Path, port: int, sshd) -> Path:  # type: ignore[no-untyped-def]
    zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    path = tmp_path / "edgedeploy.yaml"
    path.write_text(
        "name: sq\nmodel: sq.onnx\ntargets:\n  edge:\n"
        f"    host: 127.0.0.1\n    port: {port}\n    user: {sshd.user}\n"
        f"    identity_file: {sshd.identity_file}\n    path: {tmp_path / 'board'}\n"
        f"    python: {sys.executable}\n"
        "measure: {budget_s: 1, shortlist: 2}\n")  # a second: figures are not checked
    return path


@pytest.fixture
def home(sshd, tmp_path, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.ssh/known_hosts lives here for the CLI
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    return tmp_path


def _lock(home: Path) -> dict:
    return json.loads((home / "sq.edge.plan.json").read_text())


def _unmeasured_plan(manifest: Path, home: Path) -> str:
    out = home / "unmeasured.plan.json"
    assert main(["plan", str(manifest), "--target", "edge", "--no-measure", "-o", str(out)]) == 0
    return out.read_text()


def test_plan_measures_the_shortlist_on_the_board_and_leaves_nothing(sshd, home, capsys):
    manifest = _manifest(home, sshd.port, sshd)
    assert main(["plan", str(manifest), "--target", "edge"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "uploading the contenders' bundle" in err and "measure round" in err
    decision = _lock(home)["decision"]
    assert decision["measured"] and not decision["simulated"] and decision["target"] == "edge"
    names = {c["name"] for c in decision["contenders"]}
    assert "plan" in names  # beside what a user would run by hand: both baselines, as
    assert sum(c["baseline"] for c in decision["contenders"]) >= 2  # named or as the plan
    # every contender timed in every round, on the board, but those left behind after a pair
    raced([Contender.model_validate(c) for c in decision["contenders"]])
    assert all(r > 0 for c in decision["contenders"] for r in c["rounds_fps"])
    assert decision["winner"] in names
    assert _lock(home)["measured"]["source"] == "measure-to-decide"
    releases = home / "board" / "releases"
    assert not any(releases.iterdir()), "the measuring upload is removed"
    assert not (home / "board" / "current").exists(), "nothing was installed"


def test_a_serving_board_is_not_measured_and_the_lockfile_says_why(sshd, home, capsys):
    manifest = _manifest(home, sshd.port, sshd)
    # the lockfile from the model alone first: the push finds it up to date and deploys it
    # without measuring on the board (not what this test is about)
    assert main(["plan", str(manifest), "--target", "edge", "--no-measure"]) == 0
    capsys.readouterr()
    try:
        assert main(["push", "-m", str(manifest), "--target", "edge", "--no-refine",
                     "--json"]) == 0, capsys.readouterr().err
        running = json.loads(capsys.readouterr().out)["running"]
        assert main(["plan", str(manifest), "--target", "edge"]) == 0
        err = capsys.readouterr().err
        assert "not measured" in err and f"serves release {running}" in err
        assert not _lock(home)["decision"]["measured"]
        assert (home / "sq.edge.plan.json").read_text() == _unmeasured_plan(manifest, home)
        assert sorted(p.name for p in (home / "board" / "releases").iterdir()) == [running]
    finally:
        main(["stop", "-m", str(manifest), "--target", "edge"])


def test_an_unreachable_board_is_planned_from_the_model_alone(sshd, home, capsys):
    manifest = _manifest(home, free_port(), sshd)  # a closed local port
    assert main(["plan", str(manifest), "--target", "edge"]) == 0
    err = capsys.readouterr().err
    assert "not measured" in err and "cannot connect" in err
    # byte for byte the plan from the model alone: `plan --check` holds whatever the network did
    assert (home / "sq.edge.plan.json").read_text() == _unmeasured_plan(manifest, home)


def test_a_new_board_is_profiled_on_it_and_a_new_model_run_whole_there(sshd, home, capsys,
                                                                       monkeypatch):
    from edgedeploy import api
    from edgedeploy.benchmarks import decide
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import segments
    from edgedeploy.costmodel.profile import profile_path
    from edgedeploy.costmodel.profiling import has_own_factors
    from edgedeploy.costmodel.segments import OwnModel
    from edgedeploy.runtime import stages

    # the calibration model the quick profile runs on the board at 32 px: that the board is
    # profiled is checked here, not what its factors are
    monkeypatch.setattr(segments, "CALIBRATION_MODELS",
                        tuple((name, 32) for name, _ in segments.CALIBRATION_MODELS))
    # the plan and the baselines measured, not their micro-batched variants besides (each a
    # pipeline to start on the board): which contenders race is not what is checked here
    monkeypatch.setattr(decide, "BATCH_SIZES", ())
    monkeypatch.setattr(stages, "BATCH_SIZES", ())  # nor the model timed batched on the board

    board = load_target("local").model_dump(mode="json")  # this machine, as a board of its own
    board.pop("fingerprint", None)
    board.update(name="loopback-board", description="loopback-board: a board over ssh")
    (home / "loopback-board.yaml").write_text(json.dumps(board))  # JSON is YAML
    manifest = _manifest(home, sshd.port, sshd)
    manifest.write_text(manifest.read_text().replace(
        "  edge:\n", "  edge:\n    board: loopback-board.yaml\n").replace(
        "measure: {", "measure: {quick_profile_s: 2, ").replace(
        "shortlist: 2", "shortlist: 1"))  # the plan and the baselines
    assert main(["plan", str(manifest), "--target", "edge"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "the board has no profile yet" in err
    assert err.index("no profile yet") < err.index("quick profile of edge done in ") \
        < err.index("uploading the contenders' bundle")
    # the model run whole on the board first, then its layers for what the budget left
    assert err.index("no profile yet") < err.index("segments: sq on cpu:1") \
        < err.index("profile: models run whole in ") < err.index("quick profile of edge done in ")
    assert profile_path(load_target(str(home / "loopback-board.yaml"))).exists()
    assert _lock(home)["decision"]["measured"]
    assert not profile_path(load_target("local")).exists(), "this host's profile untouched"
    # another model on the profiled board is run whole there first, once
    zoo.export("squeezenet1_1", home / "sq.onnx", size=48)
    for first in (True, False):
        assert main(["plan", str(manifest), "--target", "edge"]) == 0
        err = capsys.readouterr().err
        assert ("first plan of sq.onnx on edge" in err) is first
        assert "no profile yet" not in err and _lock(home)["decision"]["measured"]
    graph = api.load_model(home / "sq.onnx")
    own = OwnModel.of(home / "sq.onnx", graph)
    board_profile = profile_path(load_target(str(home / "loopback-board.yaml")))
    assert own is not None and has_own_factors(board_profile, own)


def test_precision_auto_times_int8_against_the_model_as_given_on_the_board(sshd, home, capsys,
                                                                          monkeypatch):
    import numpy as np

    from edgedeploy.benchmarks import decide

    # both precisions timed on the board is checked, not which contenders of each: the plan
    # and the baselines, not their micro-batched variants besides (each a pipeline to start)
    monkeypatch.setattr(decide, "BATCH_SIZES", ())
    manifest = _manifest(home, sshd.port, sshd)
    rng = np.random.default_rng(7)
    np.savez(home / "frames.npz", input=rng.random((10, 1, 3, 32, 32), dtype=np.float32))
    manifest.write_text(manifest.read_text().replace(
        "model: sq.onnx\n", "model:\n  path: sq.onnx\n  precision: auto\n"
        "  calibration: frames.npz\n  max_output_error: 0.5\n").replace(
        "shortlist: 2", "shortlist: 1"))
    assert main(["plan", str(manifest), "--target", "edge"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert err.count("uploading the contenders' bundle") == 2  # one bundle a precision
    lock = _lock(home)
    contenders = lock["decision"]["contenders"]
    assert {c["precision"] for c in contenders} == {"int8", "fp32"}
    raced([Contender.model_validate(c) for c in contenders])
    assert lock["decision"]["winner"].split(":")[0] == lock["precision"]["chosen"]
    assert "measured on the board" in lock["precision"]["reason"]
    assert not any((home / "board" / "releases").iterdir())


def test_the_winograd_trial_times_layers_and_models_on_the_board(sshd, home, capsys,
                                                                 monkeypatch):
    import onnx

    from edgedeploy.benchmarks import decide
    from edgedeploy.benchmarks.winograd_trial import WinogradTrial
    from edgedeploy.planner import winograd
    from edgedeploy.testing.onnx_models import pytorch_style_resnet_block

    monkeypatch.setattr(winograd, "MIN_LAYER_GAIN", 0.0)  # every convolution taken on this
    monkeypatch.setattr(winograd, "MIN_LAYER_MACS", 0)  # side, tiny as they are and however
    monkeypatch.setattr(WinogradTrial, "saved", lambda *_: None)  # little they save:
    # (the trial against the winner is checked, not which contenders raced for it: the plan and
    # the baselines, not their micro-batched variants besides, each a pipeline on the board)
    monkeypatch.setattr(decide, "BATCH_SIZES", ())
    manifest = _manifest(home, sshd.port, sshd)  # what the board measures is what is tested
    onnx.save(pytorch_style_resnet_block(size=16), str(home / "block.onnx"))
    manifest.write_text(manifest.read_text().replace("model: sq.onnx", "model: block.onnx")
                        .replace("shortlist: 2", "shortlist: 1, quick_profile_s: 0"))
    assert main(["plan", str(manifest), "--target", "edge"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "winograd: timing 2 3x3 convolution shape(s)" in err
    # the decision's bundle, then the winner as given and rewritten, each in its own: one
    # rewritten model, or two where the core counts' faster layers differed (under load)
    rewritten = err.count("; measuring ")
    assert 1 <= rewritten <= 2
    assert 2 + 1 <= err.count("uploading the contenders' bundle") <= 2 + rewritten
    lock = _lock(home)
    trial = lock["winograd"]
    assert trial["layer_gains"] and all(g > 0 for g in trial["layer_gains"].values())
    assert trial["as_given_fps"] > 0 and trial["rewritten_fps"] > 0  # both run on the board
    if trial["chosen"]:
        assert (home / trial["model"]).is_file() and "rewritten" in trial["reason"]
    else:
        assert "model as given is kept" in trial["reason"]
    assert not any((home / "board" / "releases").iterdir())
