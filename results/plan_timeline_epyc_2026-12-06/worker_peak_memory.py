import sys, time, os
def hwm():
    me = os.getpid(); out = {}; parent = {}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            st = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()
            parent[int(p)] = int(st[1])
        except Exception: pass
    def desc(p):
        while p in parent:
            if parent[p] == me: return True
            p = parent[p]
        return False
    for p in parent:
        if not desc(p): continue
        try:
            for line in open(f'/proc/{p}/status'):
                if line.startswith('VmHWM'): out[p] = int(line.split()[1]) / 2**20
        except Exception: pass
    return out
def main():
    from edgedeploy.importers.onnx import import_onnx
    from edgedeploy.runtime.model_timing import whole_model_spec
    from edgedeploy.runtime.pipeline import Pipeline
    path = sys.argv[1]
    g = import_onnx(path)
    spec, frame = whole_model_spec(g, path, [0], 1)
    t0 = time.time()
    with Pipeline([spec]) as pipe:
        print("started", round(time.time() - t0, 1), flush=True)
        pipe.stream(lambda k: frame, 3)
        print("peak GiB", {k: round(v, 2) for k, v in hwm().items()}, "weights GiB", round(os.path.getsize(path) / 2**30, 2), flush=True)
if __name__ == "__main__":
    main()
