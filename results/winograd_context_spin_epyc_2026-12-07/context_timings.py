"""Each 3x3 convolution shape of a model timed in context (planner.winograd.layer_timings) on
1 and 2 cores.

usage: python context_timings.py MODEL.onnx
"""

from __future__ import annotations

import sys
import time


def main() -> None:
    import onnx

    from edgedeploy.importers.onnx_prep import name_nodes
    from edgedeploy.importers.onnx_winograd import conv_sites
    from edgedeploy.planner import winograd as w

    proto = onnx.load(sys.argv[1])
    name_nodes(proto)
    found = [s for s in conv_sites(proto) if w.macs(s) >= w.MIN_LAYER_MACS]
    t0 = time.monotonic()
    out = w.layer_timings(found, [1, 2], 60.0)
    for site, nodes in w.conv_shapes(found):
        row = [f"{site.c_in}x{site.c_out}@{site.h} n={len(nodes)}"]
        for c in (1, 2):
            if nodes[0] in out[c]:
                g, r = out[c][nodes[0]]
                row.append(f"c{c}: given {g:.2f} rew {r:.2f} gain {g / r:.2f} saved {g - r:.2f}")
        print(" | ".join(row), flush=True)
    for c in (1, 2):
        print(c, "total saved over gain>=1.05:",
              sum(g - r for n, (g, r) in out[c].items() if g / r >= 1.05))
    print("took", time.monotonic() - t0)


if __name__ == "__main__":
    main()
