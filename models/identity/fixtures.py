#!/usr/bin/env python3
"""Golden outputs of the identity models under onnxruntime, for the tract parity tests.

Input: models/seeded.py's seeded_values(seed) scaled by 0.5 (into [-1, 1), the range both
models are fed), in each model's input shape. Output: every value of each output, as
`fixtures/<model>_seed<seed>.npy` (outputs concatenated in graph order, flattened; every
97th value for the OCR graphs and NanoDet).

usage: python models/identity/fixtures.py   (needs onnxruntime and numpy)
"""
import os
import sys

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from seeded import seeded_values  # noqa: E402

SEED = 77
os.makedirs(os.path.join(HERE, "fixtures"), exist_ok=True)
# The OCR graphs take any size: the sizes nvr-edge pins them to.
FIXED = {"ppocr_det": [1, 3, 480, 640], "ppocr_rec": [1, 3, 48, 320]}
# Their outputs are large: every 97th value is kept.
STRIDE = {"ppocr_det": 97, "ppocr_rec": 97, "nanodet": 97}
for name in ("blazeface_full", "mobilefacenet", "ppocr_det", "ppocr_rec", "nanodet"):
    path = os.path.join(HERE, f"{name}.onnx")
    if not os.path.exists(path):
        print(f"{name}: {path} missing (models/identity/fetch.py)", file=sys.stderr)
        continue
    sess = ort.InferenceSession(path)
    inp = sess.get_inputs()[0]
    shape = FIXED.get(name, inp.shape)
    n = int(np.prod(shape))
    x = (seeded_values(SEED, n) * np.float32(0.5)).reshape(shape)
    outs = sess.run(None, {inp.name: x})
    flat = np.concatenate([o.reshape(-1) for o in outs]).astype(np.float32)[:: STRIDE.get(name, 1)]
    np.save(os.path.join(HERE, "fixtures", f"{name}_seed{SEED}.npy"), flat)
    print(f"{name}: {flat.size} values", file=sys.stderr)
