#!/usr/bin/env bash
# Stage a build into a temporary root with deploy/install.sh and check what landed, then
# let systemd-analyze verify the units (where systemd is installed).
# usage: tests/deploy.sh path/to/nvr-edge
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "$1")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=$((fail + 1)); fi; }

"$here/deploy/install.sh" --binary "$bin" --destdir "$root" --models "$here/models/xclip-tiny" \
  --identity-models "$here/models/identity" >/dev/null
check "binary installed executable" '[ -x "$root/usr/bin/nvr-edge" ]'
check "config installed" '[ -f "$root/etc/nvr-edge/config.toml" ]'
check "units installed" '[ -f "$root/usr/lib/systemd/system/nvr-edge.service" ] && [ -f "$root/usr/lib/systemd/system/nvr-edge-selftest.service" ]'
check "sysusers entry installed" 'grep -q "^u nvr-edge" "$root/usr/lib/sysusers.d/nvr-edge.conf"'
check "models installed" '[ -f "$root/usr/share/nvr-edge/models/xclip/xclip_video.onnx" ]'
check "the installed device config is valid" '"$root/usr/bin/nvr-edge" check-config "$root/etc/nvr-edge/config.toml" >/dev/null'
check "the installed model loads" '"$root/usr/bin/nvr-edge" classify --models "$root/usr/share/nvr-edge/models/xclip" --frames "$here/models/xclip-tiny/fixtures/frame0.jpg" >/dev/null'
check "identity models installed" '[ -f "$root/usr/share/nvr-edge/models/identity/mobilefacenet.onnx" ] && [ -f "$root/usr/share/nvr-edge/models/identity/ppocr_rec.onnx" ]'
printf '[storage]\ndata_dir = "%s/data"\n[identity]\nmodels_dir = "%s/usr/share/nvr-edge/models/identity"\n' "$root" "$root" > "$root/id.toml"
check "the installed face models find and embed a face" '"$root/usr/bin/nvr-edge" --config "$root/id.toml" household identify --image "$here/tests/data/photos/obama.jpg" 2>/dev/null | grep -q "\"eye_distance_px\""'
rm -rf "$root/id.toml" "$root/data"
echo "# local edit" >> "$root/etc/nvr-edge/config.toml"
"$here/deploy/install.sh" --binary "$bin" --destdir "$root" >/dev/null
check "a second install keeps the device's config" 'grep -q "# local edit" "$root/etc/nvr-edge/config.toml"'
check "install.sh refuses to run without a target" '! "$here/deploy/install.sh" --binary "$bin" 2>/dev/null'

if command -v systemd-analyze >/dev/null 2>&1; then
  # verify resolves ExecStart= against the host, so point it at the staged binary.
  units=$(mktemp -d)
  for u in nvr-edge.service nvr-edge-selftest.service; do
    sed "s|/usr/bin/nvr-edge|$root/usr/bin/nvr-edge|g" "$here/deploy/$u" > "$units/$u"
  done
  out=$(systemd-analyze verify "$units"/*.service 2>&1 | grep -v -E "Cannot add dependency job|Failed to load configuration|systemd-udev-settle" || true)
  check "systemd-analyze verify finds nothing wrong${out:+: $out}" '[ -z "$out" ]'
  rm -rf "$units"
else
  echo "skip systemd-analyze (systemd not installed)"
fi
[ "$fail" -eq 0 ] && echo "deploy: all checks passed" || { echo "deploy: $fail failed"; exit 1; }
