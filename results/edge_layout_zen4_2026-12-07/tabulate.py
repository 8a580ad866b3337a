"""The A/B's table: per model and configuration, the median of each version's rounds and the
median of the per-round ratios (new over old, the two versions of one round run back to back)."""

import collections
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
fps = collections.defaultdict(dict)
for r in rows:
    fps[(r["model"], r["config"])].setdefault(r["version"], {})[r["round"]] = r["fps"]
print("| model | configuration | before (fps, median) | after | after / before, median of rounds"
      " (min-max) |")
print("| --- | --- | --- | --- | --- |")
for (model, config), by in fps.items():
    rounds = sorted(set(by["old"]) & set(by["new"]))
    ratios = [by["new"][k] / by["old"][k] for k in rounds]
    print(f"| {model} | {config} | {statistics.median(by['old'].values()):.0f} | "
          f"{statistics.median(by['new'].values()):.0f} | {statistics.median(ratios):.3f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}) |")
