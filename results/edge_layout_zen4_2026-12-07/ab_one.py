"""One round of the A/B: a .tflite model whole through LiteRT as edgedeploy's runner runs it
(the code on PYTHONPATH), in two configurations a plan of it takes: two one-thread replicas and
one two-thread session, both inline (in the feeding process). Prints one JSON line per
configuration: frames over wall time of a window after a warm-up (``execute.run_stages``, the
frames each version's runner is fed: IR-layout before, the model's own after)."""

import json
import sys

from edgedeploy import execute
from edgedeploy.importers import load_model
from edgedeploy.runtime.stages import plan_stage_io
from edgedeploy.runtime.vocab import LITERT

path, frames = sys.argv[1], int(sys.argv[2])
graph = load_model(path)
io = plan_stage_io(graph, [])[0]
choices = {layer.name: LITERT for layer in graph.layers}
for name, stage in (("replicas2_inline", dict(replicas=2, inline=True)),
                    ("threads2_inline", dict(replicas=1, inline=True))):
    plans = [execute.stage_from_io(io=io, cpus=(0, 1), **stage)]
    report = execute.run_stages(graph, plans, choices,
                                execute.RunRequest(frames=frames, warmup=frames // 5), path)
    print(json.dumps({"model": path.rsplit("/", 1)[-1], "config": name,
                      "fps": report.result["throughput_fps"]}))
