"""Side-by-side benchmarks: measured as ratios in one run, never asserted as times."""
