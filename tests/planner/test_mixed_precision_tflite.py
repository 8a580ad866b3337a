"""A TFLite int8 model that breaks the accuracy guard is mended by keeping its worst regions float.

The TFLite twin of ``test_mixed_precision``: the input carries one huge value a frame on a
channel the first conv ignores, so the int8 scale of the input swamps every other value, while
the tensors after the first conv quantize well. The AI Edge Quantizer makes the int8 models, and
the guard figures are recomputed here with LiteRT on the files the lockfile names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from tests.planner.test_mixed_precision import BOUND, FRAMES

from edgedeploy.cli.main import main
from edgedeploy.importers.tflite_quantize import op_scopes, quantize_tflite
from edgedeploy.planner.sensitivity_tflite import added_errors
from edgedeploy.schemas.plan import load_plan
from edgedeploy.testing.tflite_builder import TFLiteBuilder

CONVS = 6

MANIFEST = """name: net
model:
  path: net.tflite
  precision: int8
  calibration: frames.npz
targets:
  local: {board: local}
measure: {enabled: false}
"""


def _network() -> bytes:
    """Channels 1 and 2 spread over 8 by the first conv (channel 0, the outlier's, ignored),
    then identity 3x3 convs with relu, each with its own bias."""
    b = TFLiteBuilder("outlier")
    x = b.input("image", (1, 16, 16, 3))
    for k in range(CONVS):
        w = np.zeros((8, 3, 3, 3 if k == 0 else 8), np.float32)  # OHWI
        if k == 0:
            for c in range(4):
                w[c, 1, 1, 1] = (c + 1) / 4
                w[c + 4, 1, 1, 2] = (c + 1) / 4
        else:
            w[np.arange(8), 1, 1, np.arange(8)] = 1.0
        x = b.conv2d(x, w, np.full(8, 0.01 * (k + 1), np.float32), padding="SAME",
                     activation="relu", name=f"conv{k}")
    b.output(x)
    return b.to_bytes()


def _frames() -> np.ndarray:
    """IR layout (NCHW); the manifest's .npz holds them in the model's own (NHWC)."""
    frames = np.random.default_rng(1).random((FRAMES, 1, 3, 16, 16), dtype=np.float32)
    frames[:, 0, 0, 0, 0] = 1000.0
    return frames


def _nhwc(frames: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{"image": np.ascontiguousarray(f.transpose(0, 2, 3, 1))} for f in frames]


def _outputs(data: bytes, frames: np.ndarray) -> np.ndarray:
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    (out,) = it.get_output_details()
    got = []
    for frame in _nhwc(frames):
        it.set_tensor(it.get_input_details()[0]["index"], frame["image"])
        it.invoke()
        got.append(it.get_tensor(out["index"]).copy())
    return np.stack(got)


def _error(model: bytes, reference: bytes, frames: np.ndarray) -> float:
    got, want = _outputs(model, frames), _outputs(reference, frames)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.fixture(scope="module")
def mixed_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mixed_tflite")
    (folder / "net.tflite").write_bytes(_network())
    np.savez(folder / "frames.npz", image=_frames().transpose(0, 1, 3, 4, 2))  # NHWC, its own
    (folder / "m.yaml").write_text(MANIFEST)
    assert main(["plan", str(folder / "m.yaml"), "--target", "local"]) == 0
    return folder / "net.local.plan.json"


def test_the_first_conv_adds_the_most_error() -> None:
    data, frames = _network(), _frames()
    int8 = quantize_tflite(data, _nhwc(frames[:8]))
    added = added_errors(data, int8, _nhwc(frames[:4]))
    scopes = op_scopes(data)
    assert set(added) <= set(scopes) and added
    assert max(added, key=added.__getitem__) == scopes[0] == "conv0;"


def test_the_guard_keeps_the_ruinous_region_float_and_the_rest_int8(mixed_plan: Path) -> None:
    p = load_plan(mixed_plan)
    prec = p.precision
    assert prec is not None and (prec.requested, prec.chosen) == ("int8", "int8")
    assert "conv0;" in prec.fp32_nodes and len(prec.fp32_nodes) <= CONVS // 2
    assert "wholly int8 refused" in (prec.reason or "")
    folder, held = mixed_plan.parent, _frames()[-2:]
    source = (folder / "net.tflite").read_bytes()
    mixed = p.model_path(mixed_plan)
    assert mixed.suffix == ".tflite"
    whole = next((folder / "build/precision").glob("net.int8.*.tflite"))
    # the wholly int8 model breaks the bound; the planned one, recomputed, keeps it
    assert _error(whole.read_bytes(), source, held) > BOUND
    error = _error(mixed.read_bytes(), source, held)
    assert prec.measured_error == pytest.approx(error, rel=1e-4) and error <= BOUND


def test_the_mixed_tflite_plan_runs_and_matches_litert(
        mixed_plan: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", str(mixed_plan), "--verify", "--sequential", "--frames", "3",
               "--warmup", "0", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["max_rel_error"] <= 1e-4


def test_a_failed_tflite_search_is_refused_naming_both_errors(
        tmp_path: Path, mixed_plan: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("net.tflite", "frames.npz"):
        shutil.copy(mixed_plan.parent / name, tmp_path / name)
    (tmp_path / "m.yaml").write_text(MANIFEST.replace(
        "  calibration: frames.npz\n", "  calibration: frames.npz\n  max_output_error: 1e-9\n"))
    assert main(["plan", str(tmp_path / "m.yaml"), "--target", "local"]) == 3
    err = capsys.readouterr().err
    assert "breaks the accuracy bound" in err and "half the model kept fp32" in err
