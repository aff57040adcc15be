"""Peer for benches/identity_models.rs: one identity graph through onnxruntime.

    NVR_ORT_PYTHON=<python with onnxruntime numpy> cargo bench --bench identity_models

Arguments: GRAPH SHAPE THREADS ITERS SEED, SHAPE as 1,3,416,416. The input is the seeded
values the Rust side generates too (models/seeded.py, `seeded_values(SEED, n)`), so both
run the same graph on the same numbers. Prints "p50_ms p99_ms" of one run.
"""
import os
import sys

import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from seeded import seeded_values  # noqa: E402
from ort_timing import print_p50_p99  # noqa: E402

graph, shape, threads, iters, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
shape = [int(d) for d in shape.split(",")]
n = 1
for d in shape:
    n *= d
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
sess = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
x = seeded_values(seed, n).reshape(shape)
feeds = {sess.get_inputs()[0].name: x}
print_p50_p99(sess, feeds, iters, warm=3)
