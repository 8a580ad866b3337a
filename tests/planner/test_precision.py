"""int8 as a plan choice: a static QDQ int8 model of an ONNX source, planned only within the guard.

The model is a zoo network (SqueezeNet 1.1 at 32 px: Fire modules with Concat, a 1000-class
head) quantized for real by onnxruntime.quantization; every figure the lockfile records is
recomputed here independently with onnxruntime on the fp32 and int8 files.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgedeploy import zoo
from edgedeploy.cli.main import main
from edgedeploy.importers import load_model
from edgedeploy.planner import plan
from edgedeploy.schemas.plan import load_plan

SIZE = 32
FRAMES = 10  # the last 2 are held out for the guard

MANIFEST = """name: sq
model:
  path: sq.onnx
{extra}targets:
  local: {{board: local}}
measure: {{enabled: false}}
"""


def _manifest(folder: Path, **model: object) -> Path:
    extra = "".join(f"  {k}: {v}\n" for k, v in model.items())
    path = folder / "m.yaml"
    path.write_text(MANIFEST.format(extra=extra))
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    zoo.export("squeezenet1_1", folder / "sq.onnx", size=SIZE)
    rng = np.random.default_rng(7)
    np.savez(folder / "frames.npz",
             input=rng.random((FRAMES, 1, 3, SIZE, SIZE), dtype=np.float32))
    return folder


@pytest.fixture
def project(tmp_path: Path, source: Path) -> Path:
    for name in ("sq.onnx", "frames.npz"):
        shutil.copy(source / name, tmp_path / name)
    return tmp_path


@pytest.fixture(scope="module")
def int8_plan(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One int8 plan with a loose bound and real calibration frames (shared: it quantizes)."""
    folder = tmp_path_factory.mktemp("int8")
    for name in ("sq.onnx", "frames.npz"):
        shutil.copy(source / name, folder / name)
    manifest = _manifest(folder, precision="int8", calibration="frames.npz",
                         max_output_error=0.5)
    assert main(["plan", str(manifest), "--target", "local"]) == 0
    return folder / "sq.local.plan.json"


def _ort(model: Path, frames: list[np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"input": f})[0] for f in frames])


def test_int8_plan_records_precision_and_the_measured_error(int8_plan: Path) -> None:
    p = load_plan(int8_plan)
    assert p.precision is not None
    prec = p.precision
    assert (prec.requested, prec.chosen, prec.reason) == ("int8", "int8", None)
    # the plan is made for the int8 file, written under the build folder, not beside the model
    int8 = p.model_path(int8_plan)
    assert prec.model == p.model["path"] and int8.parent == int8_plan.parent / "build/precision"
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "int8" in _precisions(int8)  # descriptors carry the precision
    # the recorded guard figures, recomputed independently on the held-out frames
    frames = list(np.load(int8_plan.parent / "frames.npz")["input"])
    held = frames[-2:]
    want, got = _ort(int8_plan.parent / "sq.onnx", held), _ort(int8, held)
    error = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    assert prec.measured_error == pytest.approx(error, rel=1e-4) and 0 < error <= 0.5
    top1 = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    assert prec.top1_agreement == pytest.approx(top1)
    cal = prec.calibration
    assert (cal.source, cal.frames, cal.heldout_frames, cal.weak) == ("frames.npz", 10, 2, False)
    assert p.inputs["calibration"]["sha256"] == cal.sha256 and len(cal.sha256 or "") == 64


def _precisions(model: Path) -> list[str]:
    return [layer.descriptor.precision for layer in load_model(model).layers
            if layer.descriptor is not None]


def test_the_int8_plan_runs_and_matches_onnxruntime_on_the_int8_model(
        int8_plan: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", str(int8_plan), "--verify", "--sequential", "--frames", "3",
               "--warmup", "0", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["reference"] == "onnxruntime"
    assert out["max_rel_error"] <= 1e-4


def test_replanning_reuses_the_int8_model_and_is_byte_identical(int8_plan: Path) -> None:
    text = int8_plan.read_text()
    built = sorted((int8_plan.parent / "build/precision").iterdir())
    again = plan(int8_plan.parent / "m.yaml", "local")[0]
    assert not again.written and int8_plan.read_text() == text
    assert sorted((int8_plan.parent / "build/precision").iterdir()) == built


def test_a_fresh_checkout_quantizes_again_to_the_same_lockfile(
        int8_plan: Path, tmp_path: Path) -> None:
    """build/ is not committed: planning without it makes the same int8 file and lockfile."""
    folder = tmp_path / "clone"
    shutil.copytree(int8_plan.parent, folder, ignore=shutil.ignore_patterns("build"))
    again = plan(folder / "m.yaml", "local")[0]
    assert not again.written and again.text == int8_plan.read_text()
    int8 = load_plan(again.plan_file).model_path(again.plan_file)
    assert int8.read_bytes() == load_plan(int8_plan).model_path(int8_plan).read_bytes()


def test_measure_to_decide_times_the_int8_model(project: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The contenders are cut from the int8 file: cut from the fp32 one, a whole-model segment
    would silently time the fp32 model."""
    from edgedeploy import api
    from edgedeploy.benchmarks import decide

    timed: list[Path] = []

    class Spy(decide.LocalTrials):  # type: ignore[misc, valid-type]
        def __init__(self, graph: object, model_path: object, **kw: object) -> None:
            timed.append(Path(str(model_path)))
            super().__init__(graph, model_path, **kw)

    monkeypatch.setattr(decide, "LocalTrials", Spy)
    # the file the contenders are cut from is checked, not which contenders race: the plan and
    # the baselines, not their micro-batched variants besides (each a pipeline to start)
    monkeypatch.setattr(decide, "BATCH_SIZES", ())
    manifest = _manifest(project, precision="int8", calibration="frames.npz",
                         max_output_error=0.5)
    manifest.write_text(manifest.read_text().replace(
        "measure: {enabled: false}", "measure: {budget_s: 2, shortlist: 1, quick_profile_s: 0}"))
    path = api.plan(manifest, "local")[0].plan_file
    p = load_plan(path)
    assert p.decision is not None and p.decision.measured
    assert all(c.measured_fps for c in p.decision.contenders)
    assert p.precision is not None and p.precision.chosen == "int8"
    assert timed == [p.model_path(path)] and "build/precision" in p.model["path"]


def test_a_changed_calibration_file_makes_the_lockfile_stale(
        int8_plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(int8_plan.parent, folder)
    assert main(["plan", str(folder / "m.yaml"), "--target", "local", "--check"]) == 0
    frames = np.load(folder / "frames.npz")["input"]
    np.savez(folder / "frames.npz", input=frames[::-1].copy())
    assert main(["plan", str(folder / "m.yaml"), "--target", "local", "--check"]) == 7
    assert "calibration changed" in capsys.readouterr().out


def test_a_tight_bound_refuses_int8_naming_the_error(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(project, precision="int8", calibration="frames.npz",
                         max_output_error="1e-9")
    assert main(["plan", str(manifest), "--target", "local"]) == 3
    err = capsys.readouterr().err
    assert "max relative error" in err and "> max_output_error 1e-09" in err
    assert not (project / "sq.local.plan.json").exists()


def test_auto_keeps_fp32_when_the_bound_breaks(project: Path) -> None:
    manifest = _manifest(project, precision="auto", calibration="frames.npz",
                         max_output_error="1e-9")
    p = load_plan(plan(manifest, "local")[0].plan_file)
    assert p.precision is not None and p.precision.chosen == "fp32"
    assert p.model["path"] == "sq.onnx" and p.precision.model is None
    assert p.precision.measured_error is not None and p.precision.measured_error > 1e-9
    assert "int8 refused" in (p.precision.reason or "")


def _unquantizable(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedeploy.errors import ModelError
    from edgedeploy.planner import precision

    def refuse(model: Path, out: Path, frames: object, **kw: object) -> None:
        raise ModelError(f"onnxruntime.quantization could not quantize {model.name}: "
                         "NotImplemented: an op it has no int8 form of")

    monkeypatch.setattr(precision, "quantize", refuse)


def test_auto_keeps_fp32_when_no_int8_model_can_be_made(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _unquantizable(monkeypatch)
    manifest = _manifest(project, precision="auto", calibration="frames.npz")
    p = load_plan(plan(manifest, "local")[0].plan_file)
    assert p.precision is not None and p.precision.chosen == "fp32"
    assert p.precision.measured_error is None and p.model["path"] == "sq.onnx"
    assert "int8 not made" in (p.precision.reason or "")
    assert "could not quantize sq.onnx" in (p.precision.reason or "")


def test_int8_that_cannot_be_made_exits_2_naming_the_model(
        project: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _unquantizable(monkeypatch)
    manifest = _manifest(project, precision="int8", calibration="frames.npz")
    assert main(["plan", str(manifest), "--target", "local"]) == 2
    err = capsys.readouterr().err
    assert "could not quantize sq.onnx" in err and "Traceback" not in err


def _priced(monkeypatch: pytest.MonkeyPatch, int8_factor: float | None) -> None:
    """The board's cost model as a profile leaves it: ``int8_factor`` = its measured int8 /
    float time of whole models (None: its profile never ran int8)."""
    from edgedeploy.costmodel import CostModel
    from edgedeploy.planner import api as planner_api

    def cost_model(manifest: object, alias: str, target: object, path: object) -> CostModel:
        model = CostModel(target)  # type: ignore[arg-type]
        if int8_factor is not None:
            model.segment_factors = {"int8": {c.key: int8_factor for c in model.configs}}
        return model

    monkeypatch.setattr(planner_api, "cost_model", cost_model)


@pytest.mark.parametrize(("factor", "chosen", "words"), [
    (None, "int8", "taken unpriced"),
    (0.25, "int8", "int8 chosen"),
    (4.0, "fp32", "fp32 kept")])
def test_unmeasured_auto_takes_int8_where_the_board_prices_it_faster(
        project: Path, monkeypatch: pytest.MonkeyPatch, factor: float | None, chosen: str,
        words: str) -> None:
    _priced(monkeypatch, factor)
    manifest = _manifest(project, precision="auto", calibration="frames.npz",
                         max_output_error=0.5)
    p = load_plan(plan(manifest, "local")[0].plan_file)
    assert p.precision is not None and p.precision.chosen == chosen
    assert words in (p.precision.reason or "") and p.decision is not None
    assert not p.decision.measured
    # the plan is made for the file it names: the int8 variant, or the model as given
    model = p.model_path(project / "sq.local.plan.json")
    assert (model.name == "sq.onnx") == (chosen == "fp32") == (p.precision.model is None)
    assert len(p.layers) == len(load_model(model).layers)
    if factor is not None:  # both predictions are in the reason; less is better
        text = (p.precision.reason or "").split("speed: ", 1)[1]
        int8_ms, fp32_ms = (float(part.split()[1]) for part in text.split(", ")[:2])
        assert (int8_ms < fp32_ms) == (chosen == "int8")


def test_without_calibration_random_frames_are_called_weak(
        project: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = _manifest(project, precision="int8", max_output_error=0.5)
    with caplog.at_level(logging.WARNING, logger="edgedeploy.planner"):
        p = load_plan(plan(manifest, "local")[0].plan_file)
    assert "weak calibration" in caplog.text
    assert p.precision is not None
    cal = p.precision.calibration
    assert (cal.source, cal.weak, cal.sha256, cal.frames) == ("random", True, None, 10)
    assert "calibration" not in p.inputs


def test_an_fp32_plan_writes_no_precision_block(project: Path) -> None:
    doc = json.loads(plan(_manifest(project), "local")[0].plan_file.read_text())
    assert "precision" not in doc and doc["model"]["path"] == "sq.onnx"


@pytest.mark.parametrize(("arrays", "words"), [
    ({"image": (10, 1, 3, SIZE, SIZE)}, "do not match the model inputs"),
    ({"input": (10, 3, SIZE, SIZE)}, "expected [F, 1, 3, 32, 32]"),
    ({"input": (1, 1, 3, SIZE, SIZE)}, "at least 2"),
])
def test_calibration_frames_that_do_not_fit_the_model_exit_2(
        project: Path, capsys: pytest.CaptureFixture[str], arrays: dict[str, tuple[int, ...]],
        words: str) -> None:
    np.savez(project / "bad.npz", **{k: np.zeros(s, np.float32) for k, s in arrays.items()})
    manifest = _manifest(project, precision="int8", calibration="bad.npz")
    assert main(["plan", str(manifest), "--target", "local"]) == 2
    err = capsys.readouterr().err
    assert words in err and "hint:" in err and "Traceback" not in err


@pytest.mark.parametrize(("model", "words"), [
    ({"precision": "int8", "calibration": "frames.txt"}, "neither an .npz file nor a folder"),
    ({"precision": "fp16"}, "sq.onnx is an ONNX model; fp16 is computed by LiteRT"),
    ({"precision": "auto", "min_top1_agreement": "1.5"}, "min_top1_agreement"),
])
def test_manifest_precision_fields_are_validated(
        project: Path, capsys: pytest.CaptureFixture[str], model: dict[str, str],
        words: str) -> None:
    (project / "frames.txt").write_text("1 2 3\n")
    assert main(["plan", str(_manifest(project, **model)), "--target", "local"]) == 2
    assert words in capsys.readouterr().err


def _tflite(folder: Path) -> Path:
    from edgedeploy.testing.tflite_builder import TFLiteBuilder, he_weights

    rng = np.random.default_rng(0)
    b = TFLiteBuilder("tiny")
    x = b.input("image", (1, 16, 16, 3))
    y = b.conv2d(x, he_weights(rng, (8, 3, 3, 3), 27), np.zeros(8, np.float32),
                 activation="relu")
    b.output(b.mean(y, (1, 2)))
    return b.save(folder / "net.tflite")


def _tflite_manifest(folder: Path, extra: str, measure: str = "{enabled: false}") -> Path:
    """The test network as a .tflite in ``folder`` and a manifest planning it (``extra``: more
    model lines)."""
    _tflite(folder)
    manifest = folder / "m.yaml"
    manifest.write_text(MANIFEST.format(extra=extra)
                        .replace("path: sq.onnx", "path: net.tflite")
                        .replace("measure: {enabled: false}", f"measure: {measure}"))
    return manifest


def _litert(model: Path, frames: np.ndarray) -> np.ndarray:
    """The model's output under LiteRT for IR-layout (NCHW) frames."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    outs = []
    for f in frames:
        it.set_tensor(inp["index"], np.ascontiguousarray(f.transpose(0, 2, 3, 1)))
        it.invoke()
        outs.append(it.get_tensor(out["index"]).copy())
    return np.stack(outs)


def test_int8_of_a_tflite_source_is_quantized_for_litert(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The AI Edge Quantizer's int8 model is planned, cut into LiteRT stages that carry int8
    tensors, and the recorded error is LiteRT's on the held-out frames."""
    rng = np.random.default_rng(3)
    frames = rng.random((FRAMES, 1, 3, 16, 16), dtype=np.float32)
    np.savez(project / "img.npz", image=frames.transpose(0, 1, 3, 4, 2))  # the model's NHWC
    manifest = _tflite_manifest(
        project, "  precision: int8\n  calibration: img.npz\n  max_output_error: 0.5\n")
    assert main(["plan", str(manifest), "--target", "local"]) == 0
    assert "precision int8 (requested int8)" in "".join(capsys.readouterr())
    doc = json.loads((project / "sq.local.plan.json").read_text())
    record = doc["precision"]
    int8 = project / record["model"]
    assert record["chosen"] == "int8" and int8.suffix == ".tflite"
    assert int8.parent == project / "build" / "precision"
    want, got = _litert(project / "net.tflite", frames[-2:]), _litert(int8, frames[-2:])
    error = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    assert record["measured_error"] == pytest.approx(error, rel=1e-4, abs=1e-7)
    assert 0 < error <= 0.5
    from ai_edge_litert.interpreter import Interpreter

    kinds = {d["dtype"] for d in Interpreter(model_path=str(int8)).get_tensor_details()}
    assert np.int8 in kinds  # int8 kernels, not the float model under another name
    assert main(["run", str(project / "sq.local.plan.json"), "--verify", "--frames", "5",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["max_rel_error"] < 1e-5


def test_auto_keeps_a_tflite_source_fp32_when_int8_breaks_the_bound(
        project: Path) -> None:
    manifest = _tflite_manifest(project, "  precision: auto\n  max_output_error: 1e-7\n")
    doc = json.loads(plan(manifest, "local")[0].plan_file.read_text())
    record = doc["precision"]
    assert record["chosen"] == "fp32" and record["measured_error"] > 1e-7
    assert "with up to half the model kept fp32" in record["reason"]
    assert doc["model"]["path"] == "net.tflite"


def _images(folder: Path, count: int, seed: int = 3) -> list[np.ndarray]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(count)]
    for k, p in enumerate(pixels):
        Image.fromarray(p).save(folder / f"img{k:02d}.png")
    return pixels


PREPROCESS = {"scale": 0.00392, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_a_folder_of_images_calibrates_through_the_io_preprocessing(project: Path) -> None:
    """The frames are the images as the board's preprocessing makes them, keyed by the files'
    bytes and the preprocessing: either changing quantizes afresh."""
    from edgedeploy.importers import load_model
    from edgedeploy.planner.precision import load_frames
    from edgedeploy.runtime.preprocess import Preprocess
    from edgedeploy.schemas.loader import load_manifest

    pixels = _images(project / "cal", 6)
    manifest = project / "m.yaml"
    manifest.write_text(MANIFEST.format(extra="  precision: int8\n  calibration: cal\n"
                                              "  max_output_error: 0.5\n")
                        + f"io: {{preprocess: {json.dumps(PREPROCESS)}}}\n")
    p = load_plan(plan(manifest, "local")[0].plan_file)
    assert p.precision is not None and p.precision.chosen == "int8"
    cal = p.precision.calibration
    assert (cal.frames, cal.heldout_frames, cal.weak) == (6, 1, False)
    assert "6 images" in cal.source and len(cal.sha256 or "") == 64

    m = load_manifest(manifest)
    spec, prep_spec = m.model, m.io.preprocess.model_dump(exclude_none=True)
    graph = load_model(project / "sq.onnx")
    frames = load_frames(spec, graph, prep_spec)
    prep = Preprocess.for_input((1, 3, SIZE, SIZE), PREPROCESS)
    want = np.stack([prep(px) for px in pixels])
    np.testing.assert_allclose(frames.arrays["input"], want, rtol=1e-6)
    assert frames.sha256 == cal.sha256
    assert load_frames(spec, graph, {**prep_spec, "scale": 1.0}).sha256 != cal.sha256
    _images(project / "cal", 1, seed=4)  # img00.png replaced by another picture
    assert load_frames(spec, graph, prep_spec).sha256 != cal.sha256
    assert main(["plan", str(manifest), "--target", "local", "--check"]) == 7  # stale


def test_too_few_calibration_images_exit_2(project: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _images(project / "cal", 1)
    manifest = _manifest(project, precision="int8", calibration="cal")
    assert main(["plan", str(manifest), "--target", "local"]) == 2
    err = capsys.readouterr().err
    assert "1 image(s); at least 2" in err and "hint:" in err and "Traceback" not in err


def test_frames_split_into_arrays_a_scalar_input_too() -> None:
    """A scalar input (a sample rate) stacked over frames indexes back to numpy scalars, which
    onnxruntime's calibration refused ('Unable to handle object of type numpy.int64')."""
    from edgedeploy.planner.precision import Frames

    frames = Frames({"input": np.zeros((5, 1, 4), np.float32),
                     "sr": np.full(5, 16000, np.int64)}, "random", None)
    calib, held = frames.split()
    assert (len(calib), len(held)) == (4, 1)
    for frame in (*calib, *held):
        assert all(isinstance(v, np.ndarray) for v in frame.values())
        assert frame["sr"].shape == () and frame["sr"].dtype == np.int64


def test_an_already_quantized_model_is_planned_as_given(
        project: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Quantizing a quantized model again failed inside onnxruntime (a dynamically quantized
    VoiceFilter: KeyError on a scale) or stacked QDQ on QDQ: it is planned as it is."""
    from edgedeploy.importers.quantize import quantize

    frames = [{"input": f} for f in np.load(project / "frames.npz")["input"][:4]]
    quantize(project / "sq.onnx", project / "sq8.onnx", frames)
    manifest = _manifest(project, precision="int8", calibration="frames.npz")
    manifest.write_text(manifest.read_text().replace("path: sq.onnx", "path: sq8.onnx"))
    with caplog.at_level(logging.WARNING, logger="edgedeploy.planner"):
        path = plan(manifest, "local")[0].plan_file
    assert "quantized already" in caplog.text
    doc = json.loads(path.read_text())
    assert "precision" not in doc and doc["model"]["path"] == "sq8.onnx"
    assert any(layer.get("precision") == "int8" for layer in doc["layers"])
    assert not (project / "build" / "precision").exists()


@pytest.mark.parametrize("seven_bits", [False, True], ids=["full-range", "seven-bit"])
@pytest.mark.parametrize("saturates", [True, False], ids=["no-vnni", "vnni"])
def test_a_users_full_range_int8_model_is_flagged_where_x86_without_vnni_can_saturate_it(
        project: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        seven_bits: bool, saturates: bool) -> None:
    """A model quantized already is planned as given, whatever its weights: where this host's
    onnxruntime int8 kernels add uint8 x int8 pairs into 16 bits and clamp, weights that use
    the eighth bit can change its outputs, and the user is told which layers and what to do."""
    from edgedeploy.boards import detect
    from edgedeploy.importers.quantize import full_range_weights, quantize

    frames = [{"input": f} for f in np.load(project / "frames.npz")["input"][:4]]
    quantize(project / "sq.onnx", project / "sq8.onnx", frames, reduce_range=seven_bits)
    flagged = full_range_weights(project / "sq8.onnx")
    assert bool(flagged) is not seven_bits
    monkeypatch.setattr(detect, "saturates_u8s8", lambda: saturates)
    manifest = _manifest(project)
    manifest.write_text(manifest.read_text().replace("path: sq.onnx", "path: sq8.onnx"))
    with caplog.at_level(logging.WARNING, logger="edgedeploy.planner"):
        plan(manifest, "local")
    warned = "full-range int8 weights" in caplog.text
    assert warned is (saturates and not seven_bits)
    if warned:
        assert f"in {len(flagged)} layer(s) ({flagged[0]}" in caplog.text
        assert "this host (x86 without VNNI)" in caplog.text and "reduce_range" in caplog.text


def test_unmeasured_auto_keeps_a_tflite_source_as_given(project: Path) -> None:
    """No profile prices LiteRT's int8 kernels: without measurement, auto plans the model the
    user gave and says why, even where the guard accepts int8."""
    manifest = _tflite_manifest(project, "  precision: auto\n  max_output_error: 10\n")
    doc = json.loads(plan(manifest, "local")[0].plan_file.read_text())
    record = doc["precision"]
    assert record["chosen"] == "fp32" and record["measured_error"] <= 10
    assert "fp32 kept unmeasured" in record["reason"]
    assert doc["model"]["path"] == "net.tflite"


def test_measured_auto_times_a_tflite_source_int8_beside_fp32(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a target this host measures, auto times the LiteRT int8 plans beside the model as
    given; whichever wins is written with what both measured."""
    from edgedeploy import api
    from edgedeploy.benchmarks import decide

    # the precisions timed are checked, not which contenders of each: the plan and the
    # baselines, not their micro-batched variants besides (each a pipeline to start)
    monkeypatch.setattr(decide, "BATCH_SIZES", ())

    manifest = _tflite_manifest(project, "  precision: auto\n  max_output_error: 10\n",
                                measure="{budget_s: 2, shortlist: 1, quick_profile_s: 0}")
    path = api.plan(manifest, "local")[0].plan_file
    p = load_plan(path)
    assert p.decision is not None and p.decision.measured
    precisions = {c.precision for c in p.decision.contenders}
    from edgedeploy.boards.detect import detect_local

    half = any(c.fp16_arithmetic for c in detect_local().clusters)  # fp16 competes there too
    assert precisions == ({"int8", "fp16", "fp32"} if half else {"int8", "fp32"})
    assert p.precision is not None and "measured on the board" in (p.precision.reason or "")
    assert p.model_path(path).suffix == ".tflite"


def test_int8_weights_keep_7_bits_where_an_x86_kernel_may_saturate(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's x86 int8 kernels without VNNI add pairs of products in 16 bits and clamp.
    The int8 model keeps its weights in 7 bits where it is guarded on such a host, or may run
    on an x86 board (a descriptor does not say VNNI); for Arm boards from a VNNI host, 8."""
    from edgedeploy.boards import detect
    from edgedeploy.importers.quantize import quantize
    from edgedeploy.planner import precision
    from edgedeploy.resources import targets_dir
    from edgedeploy.schemas.loader import load_manifest

    x86 = project / "x86.yaml"
    x86.write_text((targets_dir() / "rpi4.yaml").read_text().replace("arch: aarch64",
                                                                      "arch: x86_64"))
    manifest = _manifest(project, precision="int8")
    arm_only = manifest.read_text().replace("{board: local}", "{board: rpi4}")
    manifest.write_text(arm_only)
    monkeypatch.setattr(detect, "saturates_u8s8", lambda: False)
    assert not precision.reduce_range(load_manifest(manifest))
    manifest.write_text(arm_only.replace("targets:\n", "targets:\n  box: {board: ./x86.yaml}\n"))
    assert precision.reduce_range(load_manifest(manifest))
    manifest.write_text(arm_only)
    monkeypatch.setattr(detect, "saturates_u8s8", lambda: True)
    assert precision.reduce_range(load_manifest(manifest))

    frames = [{"input": f} for f in np.load(project / "frames.npz")["input"][:4]]
    widest = {}
    for narrow in (True, False):
        out = project / f"sq.{narrow}.onnx"
        quantize(project / "sq.onnx", out, frames, reduce_range=narrow)
        weights = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
        widest[narrow] = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert widest[True] <= 64 < widest[False]
