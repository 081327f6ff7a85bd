"""Side-by-side benchmarks: each measures pairflow's way and the baseline in the same run."""
