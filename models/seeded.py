"""Seeded test inputs that nvr-edge's Rust tests and benches reproduce bit for bit."""
import numpy as np


def seeded_values(seed, n):
    """splitmix64 of 1..n offset by `seed`, mapped to float32 in [-2, 2)."""
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)).astype(np.float32) / np.float32(16777216.0)) * np.float32(4.0) - np.float32(2.0)
