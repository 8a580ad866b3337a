"""fp16 as a plan choice for TFLite models: LiteRT's XNNPACK computing in fp16, within the guard.

The model is a small TFLite network built here (three 3x3 convs, a mean); every figure the
lockfile records is recomputed with LiteRT on the same file in fp32 and in fp16. Tests that run
fp16 need a host whose cores compute it (x86 avx512_fp16, Arm asimdhp) and skip elsewhere; the
refusals run everywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgedeploy.boards.detect import detect_local
from edgedeploy.cli.main import main
from edgedeploy.runtime.engines.litert import LiteRTHalfModel, LiteRTModel
from edgedeploy.schemas.plan import load_plan
from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights

HOST_FP16 = any(c.fp16_arithmetic for c in detect_local().clusters)
needs_fp16 = pytest.mark.skipif(not HOST_FP16, reason="this host's cores compute no fp16")

FRAMES = 10  # the last 2 are held out for the guard
SIZE = 24

MANIFEST = """name: net
model:
  path: net.tflite
  precision: fp16
  calibration: img.npz
{extra}targets:
  local: {{board: local}}
  pi4: {{board: rpi4}}
  pi5: {{board: rpi5}}
measure: {measure}
"""


def _network(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    b = TFLiteBuilder("half")
    x = b.input("image", (1, SIZE, SIZE, 3))
    channels = 3
    for k, width in enumerate((16, 32, 32)):
        x = b.conv2d(x, he_weights(rng, (width, 3, 3, channels), 9 * channels),
                     rng.standard_normal(width).astype(np.float32) * 0.1, padding="SAME",
                     activation="relu", name=f"conv{k}")
        channels = width
    b.output(b.mean(x, (1, 2)))
    return b.save(folder / "net.tflite")


def _frames() -> np.ndarray:
    """IR layout (NCHW); the manifest's .npz holds them in the model's own (NHWC)."""
    return np.random.default_rng(3).random((FRAMES, 1, 3, SIZE, SIZE), dtype=np.float32)


def _project(folder: Path, extra: str = "", measure: str = "{enabled: false}") -> Path:
    _network(folder)
    np.savez(folder / "img.npz", image=_frames().transpose(0, 1, 3, 4, 2))  # NHWC, its own
    manifest = folder / "m.yaml"
    manifest.write_text(MANIFEST.format(extra=extra, measure=measure))
    return manifest


def _outputs(model: type, path: Path, frames: np.ndarray) -> np.ndarray:
    with model(path, num_threads=1) as m:
        return np.stack([m.run({"image": np.ascontiguousarray(f.transpose(0, 2, 3, 1))})[
            m.output_names[0]] for f in frames])


@needs_fp16
def test_the_half_engine_computes_in_fp16_close_to_fp32(tmp_path: Path) -> None:
    """Not the fp32 kernels under another name: the outputs differ by fp16 rounding, and no
    more; a new batch size resizes the model as the Interpreter's engine does."""
    path = _network(tmp_path)
    frames = _frames()[:3]
    want = _outputs(LiteRTModel, path, frames)
    got = _outputs(LiteRTHalfModel, path, frames)
    error = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    assert 0 < error < 0.02
    with LiteRTHalfModel(path, num_threads=1) as half, LiteRTModel(path, num_threads=1) as full:
        two = {"image": np.concatenate([frames[0], frames[1]]).transpose(0, 2, 3, 1).copy()}
        a, b = half.run(two)[half.output_names[0]], full.run(two)[full.output_names[0]]
    assert a.shape == b.shape == (2, 32)
    assert float(np.max(np.abs(a - b)) / np.max(np.abs(b))) < 0.02


def test_an_unreadable_model_is_a_model_error_for_the_half_engine() -> None:
    from edgedeploy.runtime.errors import ModelError

    with pytest.raises(ModelError, match="cannot compile the model bytes for fp16"):
        LiteRTHalfModel(b"not a flatbuffer" * 8)


@needs_fp16
def test_an_fp16_plan_records_the_guard_and_runs_its_litert_stages_in_fp16(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _project(tmp_path)
    assert main(["plan", str(manifest), "--target", "local"]) == 0
    assert "precision fp16 (requested fp16)" in "".join(capsys.readouterr())
    path = tmp_path / "net.local.plan.json"
    doc = json.loads(path.read_text())
    record = doc["precision"]
    assert record["chosen"] == "fp16" and record["model"] is None
    assert doc["model"]["path"] == "net.tflite"  # the model's own file, computed in fp16
    held = _frames()[-2:]
    want = _outputs(LiteRTModel, tmp_path / "net.tflite", held)
    got = _outputs(LiteRTHalfModel, tmp_path / "net.tflite", held)
    error = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    assert record["measured_error"] == pytest.approx(error, rel=1e-4, abs=1e-7)
    assert 0 < error <= record["max_output_error"]
    stages = doc["stages"]
    assert all(s["fp16"] == ("litert" in s["engines"]) for s in stages)
    assert any(s["fp16"] for s in stages)
    assert all(s["verified"] for s in stages)  # this host: what it planned, it can run
    for name, base in doc["baselines"].items():  # the stock runtime as it runs in fp16
        for s in base.get("stages") or []:
            assert s["fp16"] == ("litert" in s["choices"]), name
    # the runner computes fp16: its output differs from LiteRT's fp32 by the guard's order
    assert main(["run", str(path), "--verify", "--frames", "4", "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["reference"] == "litert"
    assert 0 < verified["max_rel_error"] <= record["max_output_error"]


@needs_fp16
def test_fp16_breaking_the_bound_exits_3_naming_the_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _project(tmp_path, extra="")
    manifest.write_text(manifest.read_text().replace(
        "  calibration: img.npz\n", "  calibration: img.npz\n  max_output_error: 1e-9\n"))
    assert main(["plan", str(manifest), "--target", "local"]) == 3
    err = capsys.readouterr().err
    assert "breaks the accuracy bound" in err and "> max_output_error 1e-09" in err
    assert "Traceback" not in err and not (tmp_path / "net.local.plan.json").exists()


def test_a_board_without_fp16_arithmetic_is_refused_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Raspberry Pi 4's Cortex-A72 computes no fp16: exit 2 naming its cores, before the
    model is guarded (so on any host)."""
    manifest = _project(tmp_path)
    assert main(["plan", str(manifest), "--target", "pi4", "--no-measure"]) == 2
    err = capsys.readouterr().err
    assert "no core of pi4 (rpi4: cortex-a72) computes fp16" in err and "hint:" in err
    assert not (tmp_path / "net.pi4.plan.json").exists()


@needs_fp16
def test_a_board_with_fp16_cores_gets_fp16_litert_stages_priced_faster(tmp_path: Path) -> None:
    """The Raspberry Pi 5's Cortex-A76 computes fp16: planned from the cost model, its LiteRT
    stages compute fp16 and are priced at HALF_PRIOR of their fp32 time."""
    from edgedeploy.costmodel.model import HALF_PRIOR

    manifest = _project(tmp_path)
    assert main(["plan", str(manifest), "--target", "pi5", "--no-measure"]) == 0
    half = load_plan(tmp_path / "net.pi5.plan.json")
    from edgedeploy import api

    assert any("computes fp16 on a76: unverified" in w
               for w in api.validate(tmp_path / "net.pi5.plan.json")["warnings"])
    manifest.write_text(manifest.read_text().replace("precision: fp16", "precision: fp32"))
    assert main(["plan", str(manifest), "--target", "pi5", "--no-measure"]) == 0
    full = load_plan(tmp_path / "net.pi5.plan.json")
    assert half.precision is not None and half.precision.chosen == "fp16"
    assert full.precision is None and not any(s.fp16 for s in full.stages)
    # its fp16 kernels never ran here: unverified until measured on the board, and said so
    assert [s.verified for s in half.stages] == [not s.fp16 for s in half.stages]
    assert all(s.verified for s in full.stages)
    threads = half.baselines["litert_threads"]
    assert threads.stages and all(s.fp16 for s in threads.stages)
    assert threads.predicted.latency_ms < full.baselines["litert_threads"].predicted.latency_ms
    # each LiteRT option is priced at exactly HALF_PRIOR of its fp32 time; the others as fp32
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.costmodel import CostModel
    from edgedeploy.planner.adapter import build_problem
    from edgedeploy.planner.api import model_graph
    from edgedeploy.schemas import load_manifest

    target = load_target("rpi5")
    model = CostModel.for_target(target)
    problems = {}
    for precision in ("fp16", "fp32"):
        manifest.write_text(manifest.read_text().replace("precision: fp32", "precision: fp16")
                            .replace("precision: fp16", f"precision: {precision}"))
        problems[precision] = build_problem(model_graph(load_manifest(manifest)), target, model)
    for a, b in zip(problems["fp16"].layers, problems["fp32"].layers, strict=True):
        assert a.options == b.options
        ratio = a.ms / b.ms
        for k, option in enumerate(a.options):
            assert ratio[k] == pytest.approx(HALF_PRIOR if option == "litert" else 1.0), option


@needs_fp16
def test_measure_to_decide_times_the_fp16_stages(tmp_path: Path) -> None:
    """On this host the contenders run as the lockfile will: their LiteRT stages in fp16."""
    from edgedeploy import api

    manifest = _project(tmp_path, measure="{budget_s: 2, shortlist: 1, quick_profile_s: 0}")
    path = api.plan(manifest, "local")[0].plan_file
    p = load_plan(path)
    assert p.decision is not None and p.decision.measured
    assert p.precision is not None and p.precision.chosen == "fp16"
    assert all(s.fp16 == ("litert" in s.engines) for s in p.stages)
    measured = [c for c in p.decision.contenders if c.measured_fps]
    assert measured and all(c.measured_fps > 0 for c in measured)


def test_an_fp16_cpu_stage_reaches_the_runner_config_and_the_refiners_variants() -> None:
    """A CPU stage's fp16 travels through config.json to its engines' options, and refinement
    measures its candidates as the plan runs them: LiteRT stages on fp16 clusters only."""
    from edgedeploy.refine.candidate import Candidate, Space, StageConf
    from edgedeploy.runtime.runner_config import StageConfig, parse_plan

    stage = StageConfig("stage0", 0, 3, cpus=(0,), fp16=True)
    back = parse_plan("p", {"stages": [stage.to_dict()]}).stages[0]
    assert back.fp16 and back.engine_options().fp16
    assert "fp16" not in StageConfig("stage0", 0, 3, cpus=(0,)).to_dict()
    space = Space(["a", "b"], [("litert", "native")] * 2, {"big": (0, 1), "little": (2, 3)},
                  half=frozenset({"big"}))
    split = (StageConf(0, 1, "big", 1, 1), StageConf(1, 2, "little", 1, 1))
    for choices, fp16 in ((("litert", "litert"), [True, False]),
                          (("native", "litert"), [False, False])):
        stages = space.variant(Candidate(split, choices))["stages"]
        assert [s.get("fp16", False) for s in stages] == fp16


@needs_fp16
def test_measured_auto_times_fp16_beside_fp32_and_int8(tmp_path: Path) -> None:
    """``auto`` on a target this host measures: the model computed in fp16 competes with the
    model as given and its int8 model; the lockfile keeps the winner's precision, says what
    each measured, and the winner's stages compute as they were timed."""
    from edgedeploy import api

    manifest = _project(tmp_path, measure="{budget_s: 3, shortlist: 1, quick_profile_s: 0}")
    manifest.write_text(manifest.read_text().replace("precision: fp16", "precision: auto")
                        .replace("calibration: img.npz", "calibration: img.npz\n"
                                 "  max_output_error: 10"))
    path = api.plan(manifest, "local")[0].plan_file
    p = load_plan(path)
    assert p.decision is not None and p.decision.measured
    by = {c.precision for c in p.decision.contenders}
    assert by == {"int8", "fp16", "fp32"}
    assert p.precision is not None
    reason = p.precision.reason or ""
    assert re.search(r"int8 \(error [\d.e-]+\) and fp16 \(error [\d.e-]+\) accepted by "
                     r"the guard", reason) and "fp16 best" in reason
    winner = next(c for c in p.decision.contenders if c.name == p.decision.winner)
    assert p.precision.chosen == winner.precision
    assert all(s.fp16 == (winner.precision == "fp16" and "litert" in s.engines)
               for s in p.stages)
    assert main(["run", str(path), "--verify", "--frames", "4", "--json"]) == 0


@needs_fp16
def test_bench_of_an_fp16_plan_runs_the_stock_runtime_in_fp32_and_in_fp16(tmp_path: Path) -> None:
    """The best baseline is the model the user has run the stock ways (fp32); LiteRT computing
    fp16 the same ways is reported beside it, all over the same rounds."""
    from edgedeploy.benchmarks.compare import BenchRequest, bench

    manifest = _project(tmp_path)
    answer = bench(manifest, BenchRequest(frames=40, rounds=2, measure_budget_s=0))
    names = [r["system"] for r in answer["results"]]
    assert names == ["edgedeploy", "litert", "litert_replicas", "litert_fp16",
                     "litert_replicas_fp16"]
    ours = answer["results"][0]["throughput_fps"]
    fp32 = max(answer["results"][1:3], key=lambda r: r["throughput_fps"])
    half = max(answer["results"][3:], key=lambda r: r["throughput_fps"])
    assert answer["best_baseline"] == fp32["system"]
    assert answer["ratio_vs_best_baseline"] == pytest.approx(ours / fp32["throughput_fps"])
    assert answer["best_fp16_baseline"] == half["system"]
    assert answer["ratio_vs_best_fp16_baseline"] == pytest.approx(ours / half["throughput_fps"])
    assert "computing fp16" in answer["results"][3]["description"]
    assert answer["precision"]["chosen"] == "fp16"
    assert len({len(r["rounds_fps"]) for r in answer["results"]}) == 1


@needs_fp16
def test_a_pushed_fp16_plan_is_health_checked_against_fp16_within_the_bound(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The deployed runner computes fp16: its health check compares it with LiteRT computing
    fp16 here, within the guard's bound (against fp32 at 1e-3 it would roll back)."""
    manifest = _project(tmp_path)
    manifest.write_text(manifest.read_text().replace("local: {board: local}",
                                                     "local: {board: local, path: board}"))
    try:
        assert main(["push", "-m", str(manifest), "--target", "local", "--no-refine",
                     "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["deploy"]["hosts"][0]["outcome"] == "deployed"
        config = json.loads((tmp_path / "board" / "current" / "app" / "config.json")
                            .read_text())
        assert config["tolerance"] == 0.05
        assert config["reference"]["runtime"] == "litert-fp16"
        assert any(s.get("fp16") for p in config["plans"].values() for s in p["stages"])
        # the reference is fp16's answer, not fp32's, and the runner's check gave the same
        with np.load(tmp_path / "board" / "current" / "app" / "reference.npz") as ref:
            frame, want = ref["in0"], ref["out0"]
        full = _outputs(LiteRTModel, tmp_path / "net.tflite", frame[None])[0]
        assert np.max(np.abs(full - want)) > 0
        assert answer["deploy"]["hosts"][0]["health"]["max_rel_error"] < 1e-5
    finally:
        main(["stop", "-m", str(manifest), "--target", "local"])


def test_validate_names_the_fp16_refusals(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`validate` refuses what `plan` would: an ONNX model at the manifest's line, a board
    without fp16 cores by its alias (boards of the catalogue only: this host may have none)."""
    from edgedeploy import zoo

    manifest = _project(tmp_path)
    manifest.write_text(manifest.read_text().replace("  local: {board: local}\n", ""))
    assert main(["validate", str(manifest)]) == 2
    assert "no core of pi4 (rpi4: cortex-a72) computes fp16" in capsys.readouterr().err
    zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    manifest.write_text(manifest.read_text().replace("net.tflite", "sq.onnx")
                        .replace("  pi4: {board: rpi4}\n", ""))
    assert main(["validate", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "m.yaml:2:1: model: precision fp16: sq.onnx is an ONNX model" in err
    assert "hint:" in err and "Traceback" not in err


@needs_fp16
def test_the_half_engine_names_tensors_as_the_interpreter_does(tmp_path: Path) -> None:
    """A signature may name a model's inputs and outputs apart from their tensors (TF's
    converter: 'input_1' for 'serving_default_input_1:0'); both engines go by tensor names."""
    from edgedeploy.importers import tflite_quantize as tq

    data = _network(tmp_path).read_bytes()
    model = tq._parse(data)
    signature = tq._signature(model.subgraphs[0])
    for k, entry in enumerate([*signature.inputs, *signature.outputs]):
        entry.name = f"signature_name_{k}".encode()
    model.signatureDefs = [signature]
    path = tmp_path / "signed.tflite"
    path.write_bytes(tq._packed(model, len(data)))
    with LiteRTHalfModel(path) as half, LiteRTModel(path) as full:
        assert half.input_names == full.input_names == ["image"]
        assert half.output_names == full.output_names
        frame = {"image": _frames()[0].transpose(0, 2, 3, 1).copy()}
        assert set(half.run(frame)) == set(full.output_names)
