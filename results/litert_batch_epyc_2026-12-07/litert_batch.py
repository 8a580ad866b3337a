"""Does LiteRT run a TFLite model with its batch axis resized, and is a frame cheaper so?

usage: python litert_batch.py MODEL.tflite
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main() -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgedeploy.runtime.affinity import pin_process

    pin_process([0])
    path = sys.argv[1]
    for b in (1, 2, 4):
        it = Interpreter(model_path=path, num_threads=1)
        inp = it.get_input_details()[0]
        shape = list(inp["shape"])
        shape[0] = b
        try:
            it.resize_tensor_input(inp["index"], shape)
            it.allocate_tensors()
        except Exception as exc:  # a graph that spells its batch out
            print(b, "cannot:", exc)
            continue
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        outs = it.get_output_details()

        def run(it=it, inp=inp, x=x, outs=outs) -> list[np.ndarray]:
            it.set_tensor(inp["index"], x)
            it.invoke()
            return [it.get_tensor(o["index"]) for o in outs]

        r = run()
        ts = []
        for _ in range(30):
            t0 = time.perf_counter()
            run()
            ts.append(time.perf_counter() - t0)
        ms = sorted(ts)[:15]
        print(b, "out shapes", [a.shape for a in r],
              f"ms/frame {1e3 * float(np.median(ms)) / b:.3f}")
        if b > 1:  # frames kept apart? frame 0 of the batch against a batch-1 run
            one = Interpreter(model_path=path, num_threads=1)
            one.allocate_tensors()
            one.set_tensor(inp["index"], x[:1])
            one.invoke()
            a = one.get_tensor(outs[0]["index"])
            kept = (np.allclose(a, r[0][:1], atol=1e-4) if r[0].shape[0] == b
                    else f"shape {r[0].shape}")
            print("   frame0 agrees:", kept)


if __name__ == "__main__":
    main()
