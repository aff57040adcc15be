"""Peer for benches/household.rs: the same gallery and probes through faiss IndexFlatIP
on one thread. Invoked by the Rust bench when NVR_FAISS_PYTHON is set:

    python -m venv /tmp/faiss && /tmp/faiss/bin/pip install faiss-cpu numpy
    NVR_FAISS_PYTHON=/tmp/faiss/bin/python cargo bench --bench household

Arguments: DIR DIM ITERS; DIR holds rows.f32 and probes.f32 (little-endian f32).
Prints "p50_us p99_us" of one single-probe search (k=1), as nvr-edge measures a match.
"""
import sys
import time

import faiss
import numpy as np

d, dim, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
faiss.omp_set_num_threads(1)
rows = np.fromfile(f"{d}/rows.f32", dtype="<f4").reshape(-1, dim)
probes = np.fromfile(f"{d}/probes.f32", dtype="<f4").reshape(-1, dim)
index = faiss.IndexFlatIP(dim)
index.add(rows)
for i in range(min(iters, 200)):
    index.search(probes[i % len(probes)][None, :], 1)
lat = []
for i in range(iters):
    q = probes[i % len(probes)][None, :]
    t = time.perf_counter_ns()
    index.search(q, 1)
    lat.append(time.perf_counter_ns() - t)
lat.sort()
q = lambda p: lat[round((len(lat) - 1) * p)] / 1e3
print(f"{q(0.5):.3f} {q(0.99):.3f}")
