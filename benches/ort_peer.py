"""Peer for benches/xclip.rs: the same video graph and inputs through onnxruntime.

    NVR_ORT_PYTHON=<python with onnxruntime numpy> cargo bench --bench xclip

Arguments: MODEL_DIR THREADS ITERS PROMPTS. pixel_values are the seeded values both sides
generate (models/export_xclip.py seeded_values(1234)); text_embeds are seeded too.
Prints "p50_ms p99_ms" of one video-graph run.
"""
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from seeded import seeded_values  # noqa: E402
from ort_timing import print_p50_p99  # noqa: E402

d, threads, iters, prompts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import json

m = json.load(open(os.path.join(d, "manifest.json")))
t, s, dim = m["num_frames"], m["image_size"], m["embed_dim"]
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
sess = ort.InferenceSession(os.path.join(d, "xclip_video.onnx"), so, providers=["CPUExecutionProvider"])
px = seeded_values(1234, t * 3 * s * s).reshape(1, t, 3, s, s)
te = seeded_values(99, prompts * dim).reshape(prompts, dim) * np.float32(0.1)
feeds = {"pixel_values": px, "text_embeds": te}
print_p50_p99(sess, feeds, iters, warm=2)
