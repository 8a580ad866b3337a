"""`edgedeploy bench` over a list of models on whatever host runs it, from a fresh cache.

A script, not a test (pytest does not collect it): it is how a board other than this project's
2-vCPU VM gets the same comparison. Usage::

    XDG_CACHE_HOME=$(mktemp -d) OUT=results/ python tests/bench/bench_models.py \
        yolov8n,zoo:resnet50@224,face_landmark 300

Names are third-party models of ``edgedeploy.testing.thirdparty`` (fetched, or read from
``EDGEDEPLOY_MODEL_CACHE`` on a machine without network) or ``zoo:NAME@SIZE``. Writes
``$OUT/bench16.json`` after every model, so a run cut short keeps what it measured; a model that
fails is recorded with its error and the run goes on.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path


def main() -> None:
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    names = sys.argv[1].split(",")
    frames = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    import onnxruntime as ort

    info = {"providers": ort.get_available_providers(), "ort": ort.__version__,
            "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()}
    print(info, flush=True)
    from edgedeploy import zoo
    from edgedeploy.benchmarks.compare import BenchRequest, bench
    from edgedeploy.testing.thirdparty import CORPUS, MODELS, fetch

    known = {**MODELS, **CORPUS}
    rows: dict[str, object] = {"_host": info}
    for name in names:
        t0 = time.perf_counter()
        if name.startswith("zoo:"):
            arch, size = name[4:].split("@")
            path = Path("/tmp") / f"{arch}_{size}.onnx"
            zoo.export(arch, path, size=int(size))
            shape: tuple[int, ...] | None = (1, 3, int(size), int(size))
        else:
            path = fetch(name)
            shape = known[name].input_shape
        try:
            data = bench(path, BenchRequest(frames=frames, rounds=4, input_shape=shape),
                         progress=print)
        except Exception as e:  # one model's failure is a finding, not the end of the run
            traceback.print_exc()
            rows[name] = {"error": repr(e)}
            continue
        data["wall_s"] = round(time.perf_counter() - t0, 1)
        rows[name] = data
        print(f"== {name}: x{data['ratio_vs_best_baseline']:.2f} vs {data['best_baseline']} "
              f"(worst round x{data['ratio_vs_best_baseline_worst_round']:.2f}) "
              f"in {data['wall_s']} s", flush=True)
        (out / "bench16.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
