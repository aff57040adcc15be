#!/usr/bin/env bash
# Boot Debian's arm64 kernel (4 KiB pages, or the 16 KiB-page flavour) under
# qemu-system-aarch64 (TCG) with two vivid V4L2 cameras and the static aarch64 binary;
# run the boot self-test and assert on its JSON (as tests/vm/x86_64.sh does).
# usage: tests/vm/aarch64.sh path/to/aarch64-musl/nvr-edge [4k|16k]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "$1")
pages=${2:-4k}
cache=${NVR_VM_CACHE:-/var/cache/nvr-edge/vm}
# Board CPUs, not qemu's `max` (SVE2, which no target board has): a Cortex-A72 (Raspberry
# Pi 4) on 4 KiB pages; a Cortex-A76 (Raspberry Pi 5, RK3588) on the 16 KiB-page kernel,
# which needs the 16K granule the A76 has and the A72 lacks.
case "$pages" in
  4k) flavour=arm64; cpu=cortex-a72; page_bytes=4096; tier=neon ;;
  # The A76 has ARMv8.2 half-precision arithmetic: tract's fp16 rung (the Pi 5's tier).
  16k) flavour=6.12-arm64-16k; cpu=cortex-a76; page_bytes=16384; tier=fp16 ;;
  *) echo "pages: 4k or 16k" >&2; exit 2 ;;
esac
read -r image mods kver < <("$here/kernel.sh" arm64 "$flavour")
# An arm64 busybox for the guest.
bb="$cache/busybox-arm64/bin/busybox"
if [ ! -x "$bb" ]; then
  mkdir -p "$cache/busybox-arm64"
  ( cd "$cache" && apt-get download -q busybox-static:arm64 >/dev/null )
  dpkg -x "$cache"/busybox-static_*_arm64.deb "$cache/busybox-arm64"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The boot self-test and the console (the vanishing camera is covered on x86_64, where it
# is faster).
{ echo 'NVR_STEPS="selftest console"'; cat "$here/guest.sh"; } > "$work/guest.sh"
# virt has one UART (the kernel console): the nvr-edge console is a virtio console,
# /dev/hvc0 (virtio_mmio + virtio_console, modules in Debian's arm64 kernels).
NVR_VM_EXTRA_MODULES="virtio_mmio virtio_console" \
  "$here/initramfs.sh" "$work/initrd.gz" "$mods" "$kver" "$bin" "$here/device.toml" "$work/guest.sh" "$bb"
log=${NVR_VM_LOG:-$work/console.log}
python3 "$here/console_driver.py" "$work/hvc0.sock" 800 > "$work/driver.log" 2>&1 &
driver=$!
limit=${NVR_VM_TIMEOUT:-900}
t0=$(date +%s)
timeout "$limit" qemu-system-aarch64 -M virt -cpu "$cpu" -smp 2 -m 1536 -display none -no-reboot -nic none \
  -serial mon:stdio \
  -device virtio-serial-device -chardev "socket,id=hvc0,path=$work/hvc0.sock,server=on,wait=off" \
  -device virtconsole,chardev=hvc0 \
  -kernel "$image" -initrd "$work/initrd.gz" -append "console=ttyAMA0 panic=-1 quiet" > "$log" 2>&1 < /dev/null && qrc=0 || qrc=$?
echo "arm64 $pages device ($cpu): $(( $(date +%s) - t0 )) s"
if [ "$qrc" -eq 124 ]; then
  echo "FAIL the emulated arm64 $pages device did not power off in $limit s; its last steps:"
  grep -E "NVR-VM" "$log" | tail -n 5
fi
wait "$driver" && drc=0 || drc=$?
grep -E "NVR-VM|NVR-JSON-END" "$log" || true
cat "$work/driver.log"
crc=0
python3 "$here/check.py" "$log" --console --page-size "$page_bytes" --tier "$tier" || crc=$?
[ "$drc" -eq 0 ] && [ "$crc" -eq 0 ]
