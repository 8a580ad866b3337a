#!/bin/bash
# A/B of the runner's whole-model LiteRT stage, before and after the edges in the model's own
# layout: ROUNDS alternated rounds (the order swapped every round), each version in its own
# process. Usage: bash ab.sh OLD_CLONE NEW_CLONE OUT.jsonl ROUNDS FRAMES MODEL...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
old=$1 new=$2 out=$3 rounds=$4 frames=$5; shift 5
py=${PYTHON:-python}
: > "$out"
for model in "$@"; do
  for r in $(seq 1 "$rounds"); do
    if (( r % 2 )); then order="old new"; else order="new old"; fi
    for v in $order; do
      dir=$old; [[ $v == new ]] && dir=$new
      PYTHONPATH=$dir/toolchain $py "$here/ab_one.py" "$model" "$frames" 2>/dev/null \
        | sed "s/^{/{\"version\": \"$v\", \"round\": $r, /" >> "$out"
    done
  done
done
