"""Score the cost model of the toolchain on PYTHONPATH on a stored profile's held-out layers.

Fits on the profile's fit samples (held-out shapes left out, as ``costmodel eval`` does) and
scores the held-out layers' measurements: no new measurement. Prints one JSON object: the
figures of ``costmodel eval``, the same per kind of layer and core count, and the median log
ratio of predicted to measured time per core count (the part of mape that is one level shift).

    PYTHONPATH=<revision>/toolchain python score.py profile_1.json.gz
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgedeploy.costmodel import shapes as shapes_mod
from edgedeploy.costmodel.evaluate import _groups, heldout_layers, metrics, retest
from edgedeploy.costmodel.model import CostModel
from edgedeploy.costmodel.profile import profile_target, read_profile


def score(path: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "profile.json"
        plain.write_bytes(gzip.decompress(path.read_bytes()))
        prof = read_profile(plain)
    target = profile_target(prof)
    fit = [s for s in prof.select("fit") if not shapes_mod.is_heldout(s.descriptor)]
    model = CostModel.fit(target, fit)
    layers = heldout_layers(prof.select("heldout"))
    groups = _groups(model, layers)
    out: dict[str, object] = {"profile": path.name, "n_fit": len(fit), **metrics(groups),
                              "retest": retest(layers)}
    kinds: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    shift: dict[str, list[np.ndarray]] = {}
    for h, g in zip(layers, groups, strict=True):
        d = h.descriptor
        kind = "depthwise" if d.groups > 1 else f"{d.kernel_h}x{d.kernel_w}"
        kinds.setdefault(f"{kind} {h.config.key}", []).append(g)
        shift.setdefault(h.config.key, []).append(np.log(g[0] / g[1]))
    out["by_kind"] = {k: {"layers": len(v), **metrics(v)} for k, v in sorted(kinds.items())}
    out["median_log_pred_over_meas"] = {k: float(np.median(np.concatenate(v)))
                                        for k, v in sorted(shift.items())}
    return out


if __name__ == "__main__":
    print(json.dumps(score(Path(sys.argv[1])), indent=1))
