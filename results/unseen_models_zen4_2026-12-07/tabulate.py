"""The table of a folder of `edgedeploy bench --out` reports: one row a model.

    python tabulate.py after/ > after/table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(path: Path) -> str:
    d = json.loads(path.read_text())
    plan = next(r for r in d["results"] if r["system"] == "edgedeploy")
    best = next(r for r in d["results"] if r["system"] == d["best_baseline"])
    same = "same configuration" if d.get("plan_is_best_baseline") else "other configuration"
    error = d.get("prediction_error")
    return (f"| {path.stem} | {plan['description'].removeprefix('planned: ')} | "
            f"{plan['throughput_fps']:.4g} | {d['best_baseline']} {best['throughput_fps']:.4g} | "
            f"**{d['ratio_vs_best_baseline']:.2f}x** | {d['ratio_vs_best_baseline_worst_round']:.2f}x "
            f"| {same} | {d['predicted_throughput_fps']:.4g} | "
            f"{'' if error is None else f'{error:+.0%}'} |")


def main(folder: str) -> None:
    print("| model | plan | fps | best baseline, fps | ratio (median) | worst round | plan is | "
          "predicted fps | prediction error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sorted(Path(folder).glob("*.json")):
        print(row(path))


if __name__ == "__main__":
    main(sys.argv[1])
