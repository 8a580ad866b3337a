import sys, time, io, logging
t0 = time.perf_counter()
class TS(io.TextIOBase):
    def __init__(self, f): self.f = f
    def write(self, s):
        for part in s.replace("\r", "\n").splitlines(True):
            if part.strip():
                self.f.write(f"{time.perf_counter()-t0:7.1f} {part.rstrip()}\n")
        self.f.flush(); return len(s)
    def flush(self): self.f.flush()
    def isatty(self): return False
    @property
    def encoding(self): return "utf-8"
if __name__ == "__main__":
    out = TS(open(sys.argv[1], "w"))
    sys.stderr = out
    import edgedeploy.benchmarks.decide as D
    import edgedeploy.benchmarks.estimator as E
    real_open = D.LocalTrials.open
    def op(self, entries):
        out.write(f"open {len(entries)} contenders\n"); real_open(self, entries); out.write("opened\n")
    D.LocalTrials.open = op
    real_probe = D.probe_rate
    def pr(run, frames):
        t=time.perf_counter(); r = real_probe(run, frames); out.write(f"probe {time.perf_counter()-t:.2f}s rate {r:.1f}\n"); return r
    D.probe_rate = pr
    import edgedeploy.planner.winograd as W
    for name in dir(W):
        pass
    from edgedeploy.cli.main import main
    sys.argv = ["edgedeploy", "plan", sys.argv[2], "--target", "local"]
    try:
        main()
    finally:
        out.write("end\n")
