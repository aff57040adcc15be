#!/usr/bin/env bash
# Boot Debian's x86_64 kernel under qemu (TCG) with two vivid V4L2 cameras and the static
# nvr-edge binary; run the boot self-test and a vanishing-camera run; assert on the JSON.
# The CPU is Haswell (AVX2+FMA, no AVX-512), the class of the x86 boxes nvr-edge ships to
# (Intel N100 and the like), so the AVX2 paths are the ones checked.
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
limit=${NVR_VM_TIMEOUT:-900}
t0=$(date +%s)
timeout "$limit" qemu-system-x86_64 -accel tcg -cpu Haswell-noTSX-IBRS -smp 2 -m 1536 -display none -no-reboot -nic none \
  -serial mon:stdio -serial "unix:$work/ttyS1.sock,server=on,wait=off" \
  -kernel "$image" -initrd "$work/initrd.gz" -append "console=ttyS0 panic=-1 quiet" > "$log" 2>&1 < /dev/null && qrc=0 || qrc=$?
echo "x86_64 device: $(( $(date +%s) - t0 )) s"
if [ "$qrc" -eq 124 ]; then
  echo "FAIL the emulated x86_64 device did not power off in $limit s; its last steps:"
  grep -E "NVR-VM" "$log" | tail -n 5
fi
wait "$driver" && drc=0 || drc=$?
grep -E "NVR-VM|NVR-JSON-END" "$log" || true
cat "$work/driver.log"
crc=0
python3 "$here/check.py" "$log" --vanish --console --page-size 4096 --tier fma || crc=$?
[ "$drc" -eq 0 ] && [ "$crc" -eq 0 ]
