#!/bin/bash
# The ten unseen .tflite models (run_all.sh's lines for them), `edgedeploy bench MODEL --target
# local` at defaults, one fresh cache for the whole run, in the folder ../fetch.sh filled:
#   git clone -q <repo> /tmp/unseen_bench && git -C /tmp/unseen_bench checkout -q ca1f3b0
#   PYTHONPATH=/tmp/unseen_bench/toolchain PYTHON=.venv/bin/python ./run_tflite.sh models
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
