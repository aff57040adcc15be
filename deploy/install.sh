#!/usr/bin/env bash
# Stage nvr-edge into a target root, or install it on a device over ssh.
#
#   deploy/install.sh --binary target/aarch64-unknown-linux-musl/release/nvr-edge --destdir /mnt/rootfs
#   deploy/install.sh --binary ... --ssh root@camera-box [--models /path/to/xclip]
#                     [--identity-models models/identity]
#
# Installs /usr/bin/nvr-edge, /etc/nvr-edge/config.toml (an existing one is kept; a new
# default that differs is left beside it as config.toml.new, as Debian packages do), the
# systemd units and sysusers entry, optionally an X-CLIP model directory under
# /usr/share/nvr-edge/models/xclip, and the identity models (face embedder fetched by
# models/identity/fetch.py, plate reader) under /usr/share/nvr-edge/models/identity.
# With --ssh it stages into a temporary root, streams the staged files (never the staging
# directory itself, whose mode would land on the device's /) as a tarball, and on the
# device creates the user, settles the config (0640 root:nvr-edge: it may hold the PIN's
# hash) and enables the units. NVR_INSTALL_SSH (default: ssh) and NVR_INSTALL_ROOT
# (default: /) let the tests run the device side against a scratch root.
set -euo pipefail
bin="" dest="" ssh_target="" models="" idmodels=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin=$2; shift 2 ;;
    --destdir) dest=$2; shift 2 ;;
    --ssh) ssh_target=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --identity-models) idmodels=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$bin" ] && [ -f "$bin" ] || { echo "--binary FILE is required (a static nvr-edge build)" >&2; exit 2; }
[ -n "$dest" ] || [ -n "$ssh_target" ] || { echo "give --destdir DIR or --ssh HOST" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
stage=${dest:-$(mktemp -d)}
# Directories created here are 0755 whatever the caller's umask; the staging root too
# (mktemp makes it 0700).
umask 022
[ -n "$dest" ] || chmod 0755 "$stage"

install -D -m 0755 "$bin" "$stage/usr/bin/nvr-edge"
install -D -m 0640 "$here/config.toml" "$stage/etc/nvr-edge/config.toml.new"
install -D -m 0644 "$here/nvr-edge.service" "$stage/usr/lib/systemd/system/nvr-edge.service"
install -D -m 0644 "$here/nvr-edge-selftest.service" "$stage/usr/lib/systemd/system/nvr-edge-selftest.service"
install -D -m 0644 "$here/nvr-edge.sysusers" "$stage/usr/lib/sysusers.d/nvr-edge.conf"
install -D -m 0644 "$here/60-nvr-edge.rules" "$stage/usr/lib/udev/rules.d/60-nvr-edge.rules"
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

# The config's settling, the same text for a staged root and on the device ($1: the
# root). Keeps the device's config; leaves a differing new default beside it.
settle='
set -e
cfg="$1/etc/nvr-edge/config.toml"
if [ -e "$cfg" ]; then
  if cmp -s "$cfg.new" "$cfg"; then
    rm -f "$cfg.new"
  else
    echo "kept $cfg; the new default is beside it as config.toml.new"
  fi
else
  mv "$cfg.new" "$cfg"
fi
chmod 0640 "$cfg"
gid=$(awk -F: "\$1 == \"nvr-edge\" { print \$3 }" "$1/etc/group" 2>/dev/null || true)
if [ -n "$gid" ] && [ "$(id -u)" = 0 ]; then chown "0:$gid" "$cfg"; fi
'
if [ -n "$dest" ]; then
  sh -c "$settle" settle "$dest"
  echo "staged into $dest"
fi

if [ -n "$ssh_target" ]; then
  root=${NVR_INSTALL_ROOT:-/}
  # On the device: unpack without touching existing directories' owners and modes, create
  # the user (sysusers), settle the config, enable the units, check the config.
  remote="set -e
root='$root'
tar --no-same-owner --no-overwrite-dir -C \"\$root\" -xzf -
systemd-sysusers --root=\"\$root\" nvr-edge.conf
sh -c '$(printf '%s' "$settle" | sed "s/'/'\\\\''/g")' settle \"\$root\"
if [ \"\$root\" = / ]; then systemctl daemon-reload; udevadm control --reload 2>/dev/null && udevadm trigger --subsystem-match=tty 2>/dev/null || true; fi
systemctl --root=\"\$root\" enable nvr-edge-selftest.service nvr-edge.service
\"\$root/usr/bin/nvr-edge\" check-config \"\$root/etc/nvr-edge/config.toml\""
  # Only the staged entries, so the staging directory's own mode never reaches the root.
  tar -C "$stage" --owner=0 --group=0 -czf - usr etc | ${NVR_INSTALL_SSH:-ssh} "$ssh_target" "$remote"
  echo "installed on $ssh_target; reboot or: systemctl start nvr-edge-selftest nvr-edge"
  [ -n "$dest" ] || rm -rf "$stage"
fi
