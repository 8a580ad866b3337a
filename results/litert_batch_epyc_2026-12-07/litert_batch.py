"""Does LiteRT run a TFLite model with its batch axis resized, and is a frame cheaper so?"""
import sys, time
import numpy as np

def main():
    from ai_edge_litert.interpreter import Interpreter
    from edgedeploy.runtime.affinity import pin_process
    pin_process([0])
    path = sys.argv[1]
    for b in (1, 2, 4):
        it = Interpreter(model_path=path, num_threads=1)
        inp = it.get_input_details()[0]
        shape = list(inp["shape"]); shape[0] = b
        try:
            it.resize_tensor_input(inp["index"], shape)
            it.allocate_tensors()
        except Exception as exc:
            print(b, "cannot:", exc); continue
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        outs = it.get_output_details()
        def run():
            it.set_tensor(inp["index"], x); it.invoke()
            return [it.get_tensor(o["index"]) for o in outs]
        r = run()
        ts = []
        for _ in range(30):
            t0 = time.perf_counter(); run(); ts.append(time.perf_counter() - t0)
        ms = sorted(ts)[:15]
        print(b, "out shapes", [a.shape for a in r], "ms/frame %.3f" % (1e3 * float(np.median(ms)) / b))
        if b > 1:  # frames kept apart? compare frame 0 of the batch with a batch-1 run
            it1 = Interpreter(model_path=path, num_threads=1); it1.allocate_tensors()
            it1.set_tensor(inp["index"], x[:1]); it1.invoke()
            a = it1.get_tensor(outs[0]["index"]); print("   frame0 agrees:", np.allclose(a, r[0][:1], atol=1e-4) if r[0].shape[0] == b else "shape " + str(r[0].shape))

if __name__ == "__main__":
    main()
