#!/usr/bin/env bash
# One `edgedeploy plan` from an empty cache, every line it prints prefixed with the seconds since
# start. Run from a folder holding MANIFEST (and its model); VERBOSE=-v adds the INFO log lines.
# usage: timestamped_plan.sh MANIFEST.yaml > LOG.txt
set -euo pipefail
cache=$(mktemp -d)
start=$(date +%s.%N)
XDG_CACHE_HOME="$cache" python -m edgedeploy.cli.main ${VERBOSE:-} plan "$1" --target local 2>&1 |
  while IFS= read -r line; do
    printf '%6.1f %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$line"
  done
rm -rf "$cache"
