#!/usr/bin/env bash
# Stage nvr-edge into a target root, or install it on a device over ssh.
#
#   deploy/install.sh --binary target/aarch64-unknown-linux-musl/dist/nvr-edge --destdir /mnt/rootfs
#   deploy/install.sh --binary ... --ssh root@camera-box [--models /path/to/xclip]
#                     [--identity-models models/identity]
#
# Installs /usr/bin/nvr-edge, /etc/nvr-edge/config.toml (kept if present), the systemd
# units and sysusers entry, optionally an X-CLIP model directory under
# /usr/share/nvr-edge/models/xclip, and the identity models (face embedder fetched by
# models/identity/fetch.py, plate reader) under /usr/share/nvr-edge/models/identity. With --ssh it stages into a temporary root, streams it
# over as a tarball, then creates the user and enables the units on the device.
set -euo pipefail
bin="" dest="" ssh_target="" models="" idmodels=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin=$2; shift 2 ;;
    --destdir) dest=$2; shift 2 ;;
    --ssh) ssh_target=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --identity-models) idmodels=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$bin" ] && [ -f "$bin" ] || { echo "--binary FILE is required (a static nvr-edge build)" >&2; exit 2; }
[ -n "$dest" ] || [ -n "$ssh_target" ] || { echo "give --destdir DIR or --ssh HOST" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
stage=${dest:-$(mktemp -d)}

install -D -m 0755 "$bin" "$stage/usr/bin/nvr-edge"
if [ ! -e "$stage/etc/nvr-edge/config.toml" ]; then
  install -D -m 0644 "$here/config.toml" "$stage/etc/nvr-edge/config.toml"
fi
install -D -m 0644 "$here/nvr-edge.service" "$stage/usr/lib/systemd/system/nvr-edge.service"
install -D -m 0644 "$here/nvr-edge-selftest.service" "$stage/usr/lib/systemd/system/nvr-edge-selftest.service"
install -D -m 0644 "$here/nvr-edge.sysusers" "$stage/usr/lib/sysusers.d/nvr-edge.conf"
install -D -m 0644 "$here/../README.md" "$stage/usr/share/doc/nvr-edge/README.md"
if [ -n "$models" ]; then
  for f in manifest.json xclip_text.onnx xclip_video.onnx; do
    install -D -m 0644 "$models/$f" "$stage/usr/share/nvr-edge/models/xclip/$f"
  done
fi
if [ -n "$idmodels" ]; then
  [ -f "$idmodels/mobilefacenet.onnx" ] || { echo "$idmodels/mobilefacenet.onnx missing: run models/identity/fetch.py" >&2; exit 2; }
  for f in mobilefacenet.onnx mobilefacenet.json ppocr_det.onnx ppocr_rec.onnx ppocr_keys.txt ppocr.json; do
    install -D -m 0644 "$idmodels/$f" "$stage/usr/share/nvr-edge/models/identity/$f"
  done
fi
echo "staged into $stage"

if [ -n "$ssh_target" ]; then
  tar -C "$stage" -czf - . | ssh "$ssh_target" 'tar --no-same-owner -C / -xzf - &&
    systemd-sysusers nvr-edge.conf &&
    systemctl daemon-reload &&
    systemctl enable nvr-edge-selftest.service nvr-edge.service &&
    nvr-edge check-config /etc/nvr-edge/config.toml'
  echo "installed on $ssh_target; reboot or: systemctl start nvr-edge-selftest nvr-edge"
  [ -n "$dest" ] || rm -rf "$stage"
fi
