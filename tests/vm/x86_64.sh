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
{ echo 'NVR_STEPS="selftest vanish console"'; cat "$here/guest.sh"; } > "$work/guest.sh"
"$here/initramfs.sh" "$work/initrd.gz" "$mods" "$kver" "$bin" "$here/device.toml" "$work/guest.sh"
log=${NVR_VM_LOG:-$work/console.log}
# ttyS0: the kernel console and our markers; ttyS1: the nvr-edge console, a unix socket
# here that console_driver.py drives while the VM runs.
python3 "$here/console_driver.py" "$work/ttyS1.sock" 500 > "$work/driver.log" 2>&1 &
driver=$!
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1536 -display none -no-reboot -nic none \
  -serial mon:stdio -serial "unix:$work/ttyS1.sock,server=on,wait=off" \
  -kernel "$image" -initrd "$work/initrd.gz" -append "console=ttyS0 panic=-1 quiet" > "$log" 2>&1 < /dev/null || true
wait "$driver" && drc=0 || drc=$?
grep -E "NVR-VM|NVR-JSON-END" "$log" || true
cat "$work/driver.log"
crc=0
python3 "$here/check.py" "$log" --vanish --console --page-size 4096 || crc=$?
[ "$drc" -eq 0 ] && [ "$crc" -eq 0 ]
