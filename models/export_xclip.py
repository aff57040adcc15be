#!/usr/bin/env python3
"""Build an X-CLIP model here and export it as the two ONNX graphs nvr-edge runs.

    xclip_text.onnx   input_ids i64 [P,77], attention_mask i64 [P,77]  ->  text_embeds f32 [P,D]
    xclip_video.onnx  pixel_values f32 [1,T,3,224,224], text_embeds f32 [P,D]  ->  logits_per_video f32 [1,P]

Together they compute XCLIPModel.forward(...).logits_per_video (checked here before
writing). Also writes golden fixtures (tokens, PyTorch outputs, preprocessing references)
and manifest.json (config, sha256, weights real or random, processor parameters).

No model hub is reachable from the build machines: `--weights random` builds the
architecture with seeded random weights (every report says so); `--weights DIR` loads a
local Hugging Face checkpoint directory (config.json + weights, and its
preprocessor_config.json when present).

Recipe (see models/README.md):
    python3 -m venv /tmp/xclip && /tmp/xclip/bin/pip install torch transformers onnx onnxruntime pillow numpy
    /tmp/xclip/bin/pip install --no-deps open_clip_torch     # only for its CLIP BPE vocabulary file
    /tmp/xclip/bin/python models/export_xclip.py --config tiny --out models/xclip-tiny
"""
import argparse
import datetime
import gzip
import hashlib
import importlib.util
import json
import os
import sys
import tempfile

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seeded import seeded_values  # noqa: E402  (shared with the Rust tests and benches)

CONTEXT = 77
BOS, EOS = 49406, 49407
FULL_VOCAB = 49408

# Processor parameters when the weights come without a preprocessor_config.json:
# CLIP's own (bicubic, CLIP mean/std), as the issue asks.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

CONFIGS = {
    # A small random model for tests: same graph structure as the real ones.
    "tiny": dict(
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
        vision=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            patch_size=32, image_size=224, num_frames=8,
            mit_hidden_size=64, mit_intermediate_size=128, mit_num_hidden_layers=1, mit_num_attention_heads=4,
        ),
        top=dict(projection_dim=64, prompt_layers=1, prompt_num_attention_heads=4),
        trim_vocab=True,
    ),
    "base-patch32": dict(text={}, vision=dict(patch_size=32, num_frames=8), top={}, trim_vocab=False),
    "base-patch16": dict(text={}, vision=dict(patch_size=16, num_frames=8), top={}, trim_vocab=False),
}


def prompts_from_config(path):
    """Every prompt of config/default.toml's [xclip] section, in order."""
    import tomllib

    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    out = []
    for cat in cfg["xclip"]["categories"]:
        out.extend(cat["prompts"])
    return out


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_tokenizer(weights_dir):
    """HF CLIPTokenizer: from the checkpoint when it has one, else built from OpenAI's BPE
    merges file (shipped in the open_clip_torch wheel), exactly as OpenAI's tokenizer
    builds its vocabulary."""
    from transformers import CLIPTokenizer

    if weights_dir and os.path.exists(os.path.join(weights_dir, "vocab.json")):
        return CLIPTokenizer.from_pretrained(weights_dir)
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        sys.exit("need the CLIP BPE vocabulary: pip install --no-deps open_clip_torch")
    bpe = os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tok = CLIPTokenizer(vocab=os.path.join(d, "vocab.json"), merges=os.path.join(d, "merges.txt"))
    assert tok("a person")["input_ids"][0] == BOS and tok("a person")["input_ids"][-1] == EOS
    return tok


class TextGraph(nn.Module):
    def __init__(self, model, remap):
        super().__init__()
        self.model = model
        self.remap = remap
        if remap is not None:
            self.register_buffer("remap_table", remap)

    def forward(self, input_ids, attention_mask):
        if self.remap is not None:
            input_ids = self.remap_table[input_ids].long()
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


class VideoGraph(nn.Module):
    """XCLIPModel.forward from the pixel values and precomputed text embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, text_embeds):
        m = self.model
        b, t, c, h, w = pixel_values.shape
        vo = m.vision_model(pixel_values=pixel_values.reshape(-1, c, h, w))
        video_embeds = m.visual_projection(vo[1])
        video_embeds = m.mit(video_embeds.view(b, t, -1))[1]
        img = m.prompts_visual_layernorm(vo[0][:, 1:, :]) @ m.prompts_visual_projection
        img = img.view(b, t, -1, video_embeds.shape[-1]).mean(dim=1)
        te = text_embeds.unsqueeze(0).expand(b, -1, -1)
        te = te + m.prompts_generator(te, img)
        ve = video_embeds / video_embeds.norm(p=2, dim=-1, keepdim=True)
        te = te / te.norm(p=2, dim=-1, keepdim=True)
        return torch.einsum("bd,bkd->bk", ve, m.logit_scale.exp() * te)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scene(w, h, k):
    """A small synthetic frame (RGB uint8) with edges and texture, for processor fixtures."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(100 + k)
    img = np.stack([(x * 255 // w), (y * 255 // h), ((x + y + 40 * k) % 256)], -1).astype(np.int32)
    img += rng.integers(-6, 7, size=img.shape)
    x0 = 20 + 30 * k
    img[h // 4 : 3 * h // 4, x0 : x0 + w // 8] = [30, 40, 50]
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--weights", default="random", help="'random' or a local Hugging Face checkpoint directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--prompts-from", default=os.path.join(os.path.dirname(__file__), "..", "config", "default.toml"))
    ap.add_argument("--fixtures", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()

    import transformers
    from PIL import Image
    from transformers import XCLIPConfig, XCLIPModel
    from transformers.models.videomae.image_processing_pil_videomae import (
        VideoMAEImageProcessorPil as VideoMAEImageProcessor,  # the PIL reference, not torchvision
    )

    os.makedirs(args.out, exist_ok=True)
    spec = CONFIGS[args.config]
    weights_dir = None if args.weights == "random" else args.weights
    tok = clip_tokenizer(weights_dir)
    prompts = prompts_from_config(args.prompts_from)
    enc = tok(prompts, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")

    torch.manual_seed(args.seed)
    remap = None
    vocab_note = "full CLIP vocabulary"
    if weights_dir:
        model = XCLIPModel.from_pretrained(weights_dir, attn_implementation="eager")
    else:
        text = dict(spec["text"])
        if spec["trim_vocab"]:
            # Keep only the tokens of the configured prompts (plus BOS/EOS) so the committed
            # file stays small; every other token id maps to one shared row. Order is kept,
            # so EOS stays the largest id, which X-CLIP's pooling (argmax) relies on.
            used = sorted(set(enc["input_ids"].flatten().tolist()) | {BOS, EOS})
            table = torch.zeros(FULL_VOCAB, dtype=torch.int32)
            for i, t in enumerate(used):
                table[t] = i + 1
            remap = table
            text["vocab_size"] = len(used) + 1
            vocab_note = f"trimmed to the {len(used)} tokens of the default prompts; other tokens share one row"
        cfg = XCLIPConfig(text_config=text, vision_config=spec["vision"], **spec["top"])
        model = XCLIPModel._from_config(cfg, attn_implementation="eager")
        # The library's init leaves every bias at 0 and every norm at weight 1, bias 0. A
        # runtime folds those away (tract drops the adds, turns LayerNorm into RmsNorm), so
        # a random model would run a lighter graph than a real checkpoint and the parity
        # tests would never see a bias. Real checkpoints have none of them trivial.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.normal_(0.0, 0.02)
                elif p.dim() == 1 and name.endswith(".weight") and bool((p == 1).all()):
                    p.add_(torch.randn_like(p) * 0.02)
    model.eval()
    num_frames = model.config.vision_config.num_frames
    image_size = model.config.vision_config.image_size

    text_graph = TextGraph(model, remap).eval()
    video_graph = VideoGraph(model).eval()
    text_path = os.path.join(args.out, "xclip_text.onnx")
    video_path = os.path.join(args.out, "xclip_video.onnx")
    pv = torch.from_numpy(seeded_values(1234, num_frames * 3 * image_size * image_size)).reshape(
        1, num_frames, 3, image_size, image_size
    )
    with torch.no_grad():
        te = text_graph(enc["input_ids"], enc["attention_mask"])
        logits = video_graph(pv, te)
        if remap is None:
            ref = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pv).logits_per_video
            assert torch.allclose(ref, logits, atol=1e-5), (ref - logits).abs().max()
        torch.onnx.export(
            text_graph, (enc["input_ids"], enc["attention_mask"]), text_path,
            input_names=["input_ids", "attention_mask"], output_names=["text_embeds"],
            dynamic_axes={"input_ids": {0: "P"}, "attention_mask": {0: "P"}, "text_embeds": {0: "P"}},
            opset_version=17, dynamo=False,
        )
        torch.onnx.export(
            video_graph, (pv, te), video_path,
            input_names=["pixel_values", "text_embeds"], output_names=["logits_per_video"],
            dynamic_axes={"text_embeds": {0: "P"}, "logits_per_video": {1: "P"}},
            opset_version=17, dynamo=False,
        )

    # Processor: the checkpoint's when it has one, else CLIP's.
    proc_cfg = None
    if weights_dir and os.path.exists(os.path.join(weights_dir, "preprocessor_config.json")):
        with open(os.path.join(weights_dir, "preprocessor_config.json")) as f:
            proc_cfg = json.load(f)
    if proc_cfg:
        size = proc_cfg.get("size", {})
        shortest = size.get("shortest_edge", 224) if isinstance(size, dict) else size
        crop = proc_cfg.get("crop_size", {"height": 224})
        crop = crop.get("height", 224) if isinstance(crop, dict) else crop
        resample = {2: "bilinear", 3: "bicubic"}.get(proc_cfg.get("resample", 2), "bilinear")
        mean, std = proc_cfg.get("image_mean", CLIP_MEAN), proc_cfg.get("image_std", CLIP_STD)
        rescale = proc_cfg.get("rescale_factor", 1 / 255)
    else:
        shortest, crop, resample, mean, std, rescale = 224, 224, "bicubic", CLIP_MEAN, CLIP_STD, 1 / 255
    processor = VideoMAEImageProcessor(
        size={"shortest_edge": shortest}, crop_size={"height": crop, "width": crop},
        resample={"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[resample],
        rescale_factor=rescale, image_mean=mean, image_std=std,
    )

    manifest = {
        "name": f"xclip-{args.config}",
        "config": args.config,
        "weights": "random" if weights_dir is None else "real",
        "weights_source": f"seeded random init (seed {args.seed})" if weights_dir is None else os.path.abspath(weights_dir),
        "source": f"transformers {transformers.__version__} XCLIPModel, torch {torch.__version__}, "
        f"torch.onnx.export opset 17 (models/export_xclip.py)",
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "num_frames": num_frames,
        "image_size": image_size,
        "context_length": CONTEXT,
        "embed_dim": int(te.shape[1]),
        "vocabulary": vocab_note,
        "preprocess": {
            "shortest_edge": shortest, "resample": resample, "crop": crop,
            "rescale": rescale, "mean": mean, "std": std,
        },
        "files": {},
    }
    for name, path in (("text", text_path), ("video", video_path)):
        manifest["files"][name] = {"file": os.path.basename(path), "sha256": sha256(path), "bytes": os.path.getsize(path)}
    manifest["files"]["text"].update(
        inputs={"input_ids": ["P", CONTEXT], "attention_mask": ["P", CONTEXT]}, outputs={"text_embeds": ["P", manifest["embed_dim"]]}
    )
    manifest["files"]["video"].update(
        inputs={"pixel_values": [1, num_frames, 3, image_size, image_size], "text_embeds": ["P", manifest["embed_dim"]]},
        outputs={"logits_per_video": [1, "P"]},
    )

    if args.fixtures:
        fx = os.path.join(args.out, "fixtures")
        os.makedirs(fx, exist_ok=True)
        with open(os.path.join(fx, "tokens.json"), "w") as f:
            json.dump({
                "prompts": prompts,
                "input_ids": enc["input_ids"].tolist(),
                "attention_mask": enc["attention_mask"].tolist(),
                "note": "HF CLIPTokenizer, padding=max_length 77 with <|endoftext|>",
            }, f)
        np.save(os.path.join(fx, "text_embeds.npy"), te.numpy().astype(np.float32))
        np.save(os.path.join(fx, "video_logits_seed1234.npy"), logits.numpy().astype(np.float32))
        # Preprocessing references: lossless PNG frames (decoded identically everywhere)
        # and JPEG versions of them (decoders may differ by a level or so).
        frames = []
        for k in range(3):
            img = scene(320, 240, k)
            Image.fromarray(img).save(os.path.join(fx, f"frame{k}.png"))
            Image.fromarray(img).save(os.path.join(fx, f"frame{k}.jpg"), quality=90)
            frames.append(img)
        ref = {}
        for kind in ("png", "jpg"):
            decoded = [np.asarray(Image.open(os.path.join(fx, f"frame{k}.{kind}")).convert("RGB")) for k in range(3)]
            px = processor(decoded, return_tensors="np")["pixel_values"].astype(np.float32)  # [3,3,224,224]
            flat = px.reshape(3, -1)
            np.save(os.path.join(fx, f"preprocess_{kind}_stride97.npy"), np.ascontiguousarray(flat[:, ::97]))
            ref[kind] = {
                "shape": list(px.shape),
                "stride": 97,
                "samples": f"preprocess_{kind}_stride97.npy",
                "mean": flat.mean(axis=1).tolist(),
                "decoded_rgb_sum": [int(d.astype(np.int64).sum()) for d in decoded],
            }
        with open(os.path.join(fx, "preprocess.json"), "w") as f:
            json.dump(ref, f)
        manifest["fixtures"] = {
            "tokens": "fixtures/tokens.json",
            "text_embeds": "fixtures/text_embeds.npy",
            "video_logits": "fixtures/video_logits_seed1234.npy (pixel_values = seeded_values(1234), text_embeds above)",
            "preprocess": "fixtures/preprocess.json + preprocess_{png,jpg}_stride97.npy: every 97th value of "
            "frame{0,1,2}.png/.jpg through the processor above",
        }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(json.dumps({k: manifest[k] for k in ("name", "weights", "embed_dim", "num_frames")}), manifest["files"]["text"]["bytes"], manifest["files"]["video"]["bytes"])


if __name__ == "__main__":
    main()
