#!/bin/bash
# The five smallest unseen models (calls of 7 us to 0.5 ms), run as run_all.sh runs them: one
# fresh cache for the run, `edgedeploy bench MODEL --target local` at defaults.
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
run onet.onnx --input-shape 1,48,48,3
run rnet.onnx --input-shape 1,24,24,3
run hey_jarvis_v0.1.tflite
run melspectrogram.tflite --input-shape 1,1280
run alexa.tflite
