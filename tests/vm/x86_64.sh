#!/usr/bin/env bash
# Boot Debian's x86_64 kernel under qemu (TCG) with two vivid V4L2 cameras and the static
# nvr-edge binary; run the boot self-test and a vanishing-camera run; assert on the JSON.
# usage: tests/vm/x86_64.sh path/to/x86_64-musl/nvr-edge
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "$1")
read -r image mods kver < <("$here/kernel.sh" amd64)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/initramfs.sh" "$work/initrd.gz" "$mods" "$kver" "$bin" "$here/device.toml" "$here/guest.sh"
log=${NVR_VM_LOG:-$work/console.log}
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1536 -nographic -no-reboot -nic none \
  -kernel "$image" -initrd "$work/initrd.gz" -append "console=ttyS0 panic=-1 quiet" > "$log" 2>&1 || true
grep -E "NVR-VM|NVR-JSON-END" "$log" || true
python3 "$here/check.py" "$log" --vanish --page-size 4096
