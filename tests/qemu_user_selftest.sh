#!/usr/bin/env bash
# Run the aarch64 binary's self-test on synthetic cameras under qemu-aarch64-static and
# check its JSON report. The rates are scaled for emulation (~10x slower than native; the
# models' convolutions ~50x). The identity models run too, so their aarch64 (NEON) kernels
# are checked for results, not only speed: the built-in portrait must give a face, and the
# built-in X-CLIP's logits must match PyTorch's (xclip_parity). The
# plate reader is left out here (~14 s a read under emulation); x86_64 covers it.
here=$(cd "$(dirname "$0")/.." && pwd)
# usage: tests/qemu_user_selftest.sh path/to/aarch64/nvr-edge
set -euo pipefail
bin=$(realpath "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/c.toml" <<TOML
[ring]
frames = 300
max_bytes = 16777216
[targets]
capture_fps = 10.0
xclip_clip_p99_ms = 20000.0
xclip_clips_per_sec = 0.2
face_detect_ms = 10000.0
face_embed_ms = 20000.0
object_detect_ms = 30000.0
identity_fps = 0.05
[identity]
models_dir = "$here/models/identity"
required = true
plates = false
[selftest]
ring_stress_frames = 150
[storage]
data_dir = "$work/data"
[[cameras]]
id = "synth"
source = "synthetic"
width = 320
height = 240
fps = 10.0
TOML
qemu-aarch64-static "$bin" --version
set +e
qemu-aarch64-static "$bin" --config "$work/c.toml" --self-test --json --seconds 3 > "$work/report.json" 2> "$work/stderr"
rc=$?
set -e
python3 - "$work/report.json" "$rc" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rc = int(sys.argv[2])
fails = 0
def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what)
    fails += not ok
check(r["system"]["arch"] == "aarch64", f"ran as aarch64 ({r['system']['arch']}, SIMD {r['system']['simd_kernel']})")
check(r["system"]["simd_kernel"] == "neon", "NEON kernel selected")
check(r["system"]["dense_kernel"] == "tract", "dense layers and 1x1 convolutions on tract's kernels (no AVX-512 on aarch64)")
check(r["verdict"] == "PASS" and rc == 0, f"verdict {r['verdict']}, exit status {rc}: " +
      ", ".join(f"{c['name']}={c['measured']}" for c in r["checks"] if not c["pass"]))
check(any(m["placeholder"] for m in r["models"]), "the placeholder model is reported as such")
rows = {c["name"]: c for c in r["checks"]}
check(rows.get("identity_faces_found", {}).get("measured", 0) >= 1,
      f"the face models find the built-in portrait's face on aarch64 ({r.get('identity')})")
parity = rows.get("xclip_parity", {})
check(parity.get("pass") is True,
      f"X-CLIP logits on aarch64 (tract's NEON kernels and nvr-edge's ops) match PyTorch's: max diff {parity.get('measured')}")
import re
detail = rows.get("identity_fps", {}).get("detail") or ""
m = re.search(r"(\d+) face embeddings", detail)
check(m is not None and int(m.group(1)) >= 1, f"the identity path finds and embeds faces on aarch64: {detail}")
sys.exit(1 if fails else 0)
PY
