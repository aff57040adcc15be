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
check "udev rule for the hvc console installed" 'grep -q "hvc" "$root/usr/lib/udev/rules.d/60-nvr-edge.rules"'
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
check "... and leaves the new default beside it as config.toml.new" 'cmp -s "$here/deploy/config.toml" "$root/etc/nvr-edge/config.toml.new"'
check "the config is not world-readable (0640: it may hold the PIN hash)" '[ "$(stat -c %a "$root/etc/nvr-edge/config.toml")" = 640 ]'

# The --ssh path as a device runs it: the tarball streamed into the device side's shell
# (here a local sh instead of ssh) over a root that is a device's: / at 0755 with a
# config of the owner's. Once, / became 0700 (the staging directory's mode) and the
# device's config was overwritten.
dev=$(mktemp -d)
fake_ssh=$(mktemp)
trap 'rm -rf "$root" "$dev" "$fake_ssh"' EXIT
printf '#!/bin/sh\nshift\nexec sh -c "$1"\n' > "$fake_ssh"
chmod 0755 "$fake_ssh" "$dev"
mkdir -p "$dev/etc/nvr-edge" "$dev/usr"
chmod 0755 "$dev/etc" "$dev/etc/nvr-edge" "$dev/usr"
printf '[log]\nfilter = "debug"\n# the owner'"'"'s config\n' > "$dev/etc/nvr-edge/config.toml"
touch "$dev/etc/passwd" "$dev/etc/group"
# A strict umask on the installing machine, as a careful admin has.
out=$(umask 077; NVR_INSTALL_SSH="$fake_ssh" NVR_INSTALL_ROOT="$dev" "$here/deploy/install.sh" --binary "$bin" --ssh device 2>&1) || true
check "ssh install: the device side ran to its end${out:+ ($(echo "$out" | tail -1))}" 'echo "$out" | grep -q "installed on device"'
check "ssh install: the device's / keeps mode 0755" '[ "$(stat -c %a "$dev")" = 755 ]'
check "ssh install: /etc and /usr keep their modes" '[ "$(stat -c %a "$dev/etc")" = 755 ] && [ "$(stat -c %a "$dev/usr")" = 755 ]'
check "ssh install: the device's config survives" 'grep -q "the owner" "$dev/etc/nvr-edge/config.toml"'
check "ssh install: the new default is left beside it" 'cmp -s "$here/deploy/config.toml" "$dev/etc/nvr-edge/config.toml.new"'
check "ssh install: config 0640, group nvr-edge" '[ "$(stat -c %a "$dev/etc/nvr-edge/config.toml")" = 640 ] && [ "$(stat -c %g "$dev/etc/nvr-edge/config.toml")" = "$(awk -F: "\$1 == \"nvr-edge\" { print \$3 }" "$dev/etc/group")" ]'
check "ssh install: user nvr-edge in video and dialout" 'grep -q "^nvr-edge:" "$dev/etc/passwd" && grep -q "^video:.*nvr-edge" "$dev/etc/group" && grep -q "^dialout:.*nvr-edge" "$dev/etc/group"'
check "ssh install: both units enabled" '[ -L "$dev/etc/systemd/system/multi-user.target.wants/nvr-edge.service" ] && [ -L "$dev/etc/systemd/system/multi-user.target.wants/nvr-edge-selftest.service" ]'
check "install.sh refuses to run without a target" '! "$here/deploy/install.sh" --binary "$bin" 2>/dev/null'

if command -v systemd-analyze >/dev/null 2>&1; then
  # verify resolves ExecStart= against the host, so point it at the staged binary.
  units=$(mktemp -d)
  for u in nvr-edge.service nvr-edge-selftest.service; do
    sed "s|/usr/bin/nvr-edge|$root/usr/bin/nvr-edge|g" "$here/deploy/$u" > "$units/$u"
  done
  out=$(systemd-analyze verify "$units"/*.service 2>&1 | grep -v -E "Cannot add dependency job|Failed to load configuration|systemd-udev-settle" || true)
  check "systemd-analyze verify finds nothing wrong${out:+: $out}" '[ -z "$out" ]'
  # Hardening: systemd's own exposure score (0 best, 10 worst); the recorder was 7.7.
  for u in nvr-edge.service nvr-edge-selftest.service; do
    score=$(systemd-analyze security --offline=true "$units/$u" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    check "systemd-analyze security: $u exposure ${score:-?} <= 2.0" '[ -n "$score" ] && awk "BEGIN { exit !($score <= 2.0) }"'
  done
  rm -rf "$units"
else
  echo "skip systemd-analyze (systemd not installed)"
fi
[ "$fail" -eq 0 ] && echo "deploy: all checks passed" || { echo "deploy: $fail failed"; exit 1; }
