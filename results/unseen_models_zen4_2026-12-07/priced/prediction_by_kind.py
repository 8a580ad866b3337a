"""Measured over predicted throughput of every contender measure-to-decide timed, by kind of
contender (the engine's name left out), over the bench reports in a folder: how the cost model's
figures fall for each way of running a model. Usage: python prediction_by_kind.py DIR [DIR...]"""

import collections
import glob
import json
import math
import re
import sys


def decisions(x):
    if isinstance(x, dict):
        if isinstance(x.get("contenders"), list):
            yield x
            return
        for v in x.values():
            yield from decisions(v)
    elif isinstance(x, list):
        for v in x:
            yield from decisions(v)


for folder in sys.argv[1:]:
    rows = collections.defaultdict(list)
    for f in sorted(glob.glob(f"{folder}/*.json")):
        try:
            doc = json.load(open(f))
        except ValueError:
            continue
        for d in list(decisions(doc))[:1]:
            for c in d["contenders"]:
                p, m = (c.get("predicted") or {}).get("throughput_fps"), c.get("measured_fps")
                if p and m:
                    kind = re.sub(r"pareto\d+", "pareto",
                                  re.sub(r"^(onnxruntime|litert)_", "", c["name"]))
                    rows[kind].append(m / p)
    print(f"## {folder}\n\n| contender | n | geometric mean measured / predicted | within 15 % |")
    print("| --- | --- | --- | --- |")
    for kind, r in sorted(rows.items()):
        g = math.exp(sum(map(math.log, r)) / len(r))
        near = sum(1 for x in r if abs(1 / x - 1) <= 0.15)
        print(f"| {kind} | {len(r)} | {g:.2f} | {near} of {len(r)} |")
    print()
